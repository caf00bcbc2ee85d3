"""Request bodies: JSON or multipart form fields, and audio uploads checked without decoding."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from flask import request
from werkzeug.datastructures import FileStorage

from api.errors import APIError, invalid
from api.sniff import HEAD_BYTES, AudioKind, sniff_audio
from jobs.contract import MAX_METADATA_DEPTH
from jobs.errors import ErrorCode

KNOWN_AUDIO = "WAV, FLAC, Ogg (Opus/Vorbis), MP3, AAC, MP4/M4A, AIFF or WebM"
# Integers in request bodies: no field takes more than 19 digits (seeds are below 2**63), so a form
# value of ASCII digits up to this length becomes an int and its range is checked by name; anything
# else ("²", 5,000 digits) stays a string that the strict integer fields refuse by name.
MAX_INT_DIGITS = 64
_FORM_INT = re.compile(rf"-?[0-9]{{1,{MAX_INT_DIGITS}}}")


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
            data[name] = _form_json(name, value)
        elif name in int_fields and _FORM_INT.fullmatch(value.strip()):
            data[name] = int(value.strip())
        else:
            data[name] = value
    return {k: v for k, v in data.items() if v is not None}


class _IntegerTooLong(ValueError):
    def __init__(self, digits: int) -> None:
        super().__init__(f"an integer of {digits} digits")
        self.digits = digits


def _bounded_int(text: str) -> int:
    """``json.loads``' parse_int: refuses integers longer than MAX_INT_DIGITS before converting them."""
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise _IntegerTooLong(digits)
    return int(text)


def _too_long(field: str, exc: _IntegerTooLong) -> APIError:
    return APIError(
        422,
        ErrorCode.INVALID_REQUEST,
        f"{field}: holds an integer of {exc.digits} digits; integers are limited to {MAX_INT_DIGITS} digits",
        {"errors": [{"field": field, "message": f"integer longer than {MAX_INT_DIGITS} digits"}]},
    )


def _too_deep(field: str) -> APIError:
    return APIError(
        422,
        ErrorCode.INVALID_REQUEST,
        f"{field}: JSON nested too deeply to parse (metadata takes at most {MAX_METADATA_DEPTH} levels)",
        {"errors": [{"field": field, "message": "nested too deeply"}], "max_depth": MAX_METADATA_DEPTH},
    )


def _form_json(name: str, value: str) -> Any:
    """A JSON-valued form field (None when blank); 422 naming it when it is not JSON."""
    try:
        return json.loads(value, parse_int=_bounded_int) if value.strip() else None
    except _IntegerTooLong as exc:
        raise _too_long(name, exc) from None
    except RecursionError:
        raise _too_deep(name) from None
    except ValueError:
        raise invalid(name, "must be JSON in a multipart form field") from None


def json_body() -> dict[str, Any]:
    """The JSON object body, or a 400/415/422 envelope (422 for integers or nesting no field can take)."""
    if not request.is_json:
        raise APIError(
            415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, "send application/json (or multipart/form-data where allowed)"
        )
    try:
        data = json.loads(request.get_data(cache=True), parse_int=_bounded_int)
    except _IntegerTooLong as exc:
        raise _too_long("body", exc) from None
    except RecursionError:
        raise _too_deep("body") from None
    except ValueError:  # not JSON, or not UTF-8
        data = None
    if not isinstance(data, dict):
        raise APIError(400, ErrorCode.INVALID_JSON, "the body is not a JSON object")
    return data
