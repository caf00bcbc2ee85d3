"""What goes over the wire besides JSON: book options as form fields, derived Idempotency-Keys, and
downloads written to a temporary file then renamed into place."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["book_form_fields", "book_idempotency_key", "form_value", "save_atomically"]

KEY_PREFIX = "echo-book-"  # + 64 hex digits: well inside the API's 255-character limit
_FILE_MODE = 0o644  # mkstemp creates 0600; a downloaded file is an ordinary file


def form_value(value: Any) -> str:
    """A form field's text: strings as they are, anything else (numbers, dicts, lists) as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def book_form_fields(options: Mapping[str, Any]) -> dict[str, str]:
    """Book options (``voice``, ``preset``, ``overrides``, ``seed``, ``format``, ``chapters``, ...) as form fields.

    ``None`` values are left out (the server's default applies); ``overrides`` goes as JSON; ``chapters``
    (or ``select_chapters``) may be a list of indices or the API's own ``"0,2"`` string.
    """
    fields: dict[str, str] = {}
    for name, value in options.items():
        if value is None:
            continue
        if name in ("chapters", "select_chapters"):
            indices = value if isinstance(value, str) else ",".join(str(int(i)) for i in value)
            fields["chapters"] = indices.replace(" ", "")
        else:
            fields[name] = form_value(value)
    return fields


def book_idempotency_key(data: bytes, filename: str, options: Mapping[str, Any]) -> str:
    """The Idempotency-Key that finds the same book again: from the file's bytes, its name and the options.

    The same file with the same options (after :func:`book_form_fields`) gives the same key, so a run
    started again finds the book the first run submitted; any other option or file gives another key.
    """
    identity = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "name": os.path.basename(filename),
        "options": book_form_fields(options),
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return KEY_PREFIX + digest


def save_atomically(chunks: Iterable[bytes], path: str | os.PathLike[str]) -> int:
    """Write ``chunks`` to a temporary file beside ``path``, then rename it over ``path``; the byte count.

    If the chunks fail part-way the temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    written = 0
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
                written += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, _FILE_MODE)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return written
