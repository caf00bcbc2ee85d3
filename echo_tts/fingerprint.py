"""The model revision: a short, stable id of the loaded weight files, cheap even for 5.6 GB."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from .config import CONFIG_FILE, PCA_FILE, WEIGHTS_FILE
from .errors import WeightsNotFound
from .hub import resolve_file

__all__ = ["fingerprint_files", "weights_revision"]

MODEL_FILES = (CONFIG_FILE, WEIGHTS_FILE, PCA_FILE)  # fingerprinted from the DiT repo, in this order
AE_FILES = (CONFIG_FILE, WEIGHTS_FILE)  # then from the autoencoder repo
_SAMPLE_BYTES = 1 << 16  # bytes read at each of the sampled offsets of a large weights file
_SAMPLES_PER_FILE = 64


def _digest_file(hasher: hashlib._Hash, path: Path) -> None:
    """Feed name, size and content (all of it when small, 64 spread 64-KiB samples when large)."""
    size = path.stat().st_size
    hasher.update(f"{path.name}:{size}:".encode())
    with open(path, "rb") as handle:
        if size <= _SAMPLE_BYTES * _SAMPLES_PER_FILE:
            hasher.update(handle.read())
            return
        for index in range(_SAMPLES_PER_FILE):
            handle.seek((size - _SAMPLE_BYTES) * index // (_SAMPLES_PER_FILE - 1))
            hasher.update(handle.read(_SAMPLE_BYTES))


def fingerprint_files(paths: Sequence[Path]) -> str:
    """A stable 32-hex-digit id of weight files: names, sizes and (sampled) content.

    Reads at most 4 MiB per file, so it costs milliseconds even for the 5.6 GB DiT, yet two
    random checkpoints of the same shapes (different seeds) get different ids.
    """
    hasher = hashlib.sha256()
    for path in paths:
        _digest_file(hasher, path)
    return hasher.hexdigest()[:32]


def weights_revision(
    model_repo: str | os.PathLike[str], ae_repo: str | os.PathLike[str], token: str | None = None
) -> str:
    """:func:`fingerprint_files` of the DiT repo's and the AE repo's files; absent files are skipped
    (the published DiT repo has no ``config.json``)."""
    paths = []
    for repo, names in ((model_repo, MODEL_FILES), (ae_repo, AE_FILES)):
        for name in names:
            try:
                paths.append(resolve_file(repo, name, token=token))
            except WeightsNotFound:
                continue
    return fingerprint_files(paths)
