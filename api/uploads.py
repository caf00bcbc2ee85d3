"""Request bodies: JSON or multipart form fields, and audio uploads checked without decoding."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from flask import request
from werkzeug.datastructures import FileStorage

from api.errors import APIError, invalid
from api.sniff import HEAD_BYTES, AudioKind, sniff_audio
from jobs.errors import ErrorCode

KNOWN_AUDIO = "WAV, FLAC, Ogg (Opus/Vorbis), MP3, AAC, MP4/M4A, AIFF or WebM"


@dataclass(frozen=True)
class Upload:
    field: str
    data: bytes
    kind: AudioKind

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def read_audio(field: str, *, max_seconds: float, required: bool) -> Upload | None:
    """The audio file in multipart field ``field``: refuses missing (when required), empty, non-audio
    and (for WAV/FLAC, whose headers say) longer than ``max_seconds`` uploads."""
    file: FileStorage | None = request.files.get(field)
    if file is None:
        if required:
            raise invalid(field, "a file is required (multipart/form-data)")
        return None
    data = file.read()
    if not data:
        raise invalid(field, "the file is empty")
    kind = sniff_audio(data[:HEAD_BYTES])
    if kind is None:
        raise APIError(
            422,
            ErrorCode.INVALID_AUDIO,
            f"{field}: not an audio file (expected {KNOWN_AUDIO})",
            {"errors": [{"field": field, "message": "not an audio file"}]},
        )
    if kind.duration_s is not None and kind.duration_s > max_seconds:
        raise APIError(
            413,
            ErrorCode.REFERENCE_TOO_LONG,
            f"{field}: {kind.duration_s:.1f} s is longer than ECHO_MAX_REFERENCE_SECONDS={max_seconds:g}",
            {
                "limit": "ECHO_MAX_REFERENCE_SECONDS",
                "max_seconds": max_seconds,
                "duration_s": round(kind.duration_s, 3),
                "field": field,
            },
        )
    return Upload(field, data, kind)


def form_fields(
    *, json_fields: tuple[str, ...] = (), int_fields: tuple[str, ...] = (), files: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The multipart form as a dict the pydantic models take: JSON-decoded and integer fields converted.
    Unknown file fields are refused by name."""
    for name in request.files:
        if name not in files:
            raise invalid(name, f"unexpected file field (expected {', '.join(files) or 'none'})")
    data: dict[str, Any] = {}
    for name, value in request.form.items():
        if name in json_fields:
            try:
                data[name] = json.loads(value) if value.strip() else None
            except json.JSONDecodeError:
                raise invalid(name, "must be JSON in a multipart form field") from None
        elif name in int_fields and value.strip().lstrip("-").isdigit():
            data[name] = int(value)
        else:
            data[name] = value
    return {k: v for k, v in data.items() if v is not None}


def json_body() -> dict[str, Any]:
    """The JSON object body, or a 400/415 envelope."""
    if not request.is_json:
        raise APIError(
            415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, "send application/json (or multipart/form-data where allowed)"
        )
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise APIError(400, ErrorCode.INVALID_JSON, "the body is not a JSON object")
    return data
