"""Find a weights file in a local directory or in the Hugging Face hub cache.

The hub client honours its own environment (``HF_HUB_OFFLINE``, ``HF_HOME``, ``HF_HUB_CACHE``,
``HF_TOKEN``); this module reads no environment variable itself. Nothing here downloads at
import: a download happens only when :func:`resolve_file` is called with a repo id whose file
is not cached yet.
"""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError

from .errors import WeightsNotFound


def _looks_like_path(repo_or_dir: str | os.PathLike[str]) -> bool:
    """True for path objects and strings that can only be a filesystem path (a repo id is ``org/name``)."""
    if not isinstance(repo_or_dir, str):
        return True
    return os.path.isabs(repo_or_dir) or repo_or_dir.startswith((".", "~")) or repo_or_dir.count("/") > 1


def resolve_file(
    repo_or_dir: str | os.PathLike[str],
    filename: str,
    *,
    token: str | bool | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Local path of ``filename`` from a directory that exists, else from the hub repo ``repo_or_dir``.

    A ``Path`` (or a string that cannot be a repo id: absolute, ``./``, ``~``) is always a directory.

    Raises :class:`WeightsNotFound` naming the repo (or directory) and the file when it cannot be
    provided: missing file, unknown repo or revision, offline without a cached copy, network error.
    """
    text = os.fspath(repo_or_dir)
    local = Path(text).expanduser()
    if local.is_dir():
        path = local / filename
        if not path.is_file():
            raise WeightsNotFound(f"weights file {filename!r} not found in directory {str(local)!r}")
        return path
    if _looks_like_path(repo_or_dir):
        raise WeightsNotFound(f"weights directory {text!r} does not exist (looking for {filename!r})")
    try:
        downloaded = hf_hub_download(
            repo_id=text,
            filename=filename,
            revision=revision,
            token=token,
            cache_dir=os.fspath(cache_dir) if cache_dir is not None else None,
        )
    except (OSError, ValueError, EntryNotFoundError) as exc:
        where = f"{text}@{revision}" if revision else text
        raise WeightsNotFound(
            f"weights file {filename!r} of Hugging Face repo {where!r} is unavailable: {type(exc).__name__}: {exc}"
        ) from exc
    return Path(downloaded)
