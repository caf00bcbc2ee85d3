"""Stored voices: upload a reference once, a worker encodes its speaker latents once.

Operator voices (audio files in ``ECHO_VOICES_DIR``) are registered when the app starts: read-only,
visible to every key, their id being the file's stem (``narrator.wav`` → ``narrator``).
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any

from flask import request

from api.errors import APIError, invalid, not_found
from api.schemas import VoiceCreate
from api.services import Services, services
from api.sniff import sniff_audio
from api.uploads import form_fields, read_audio
from jobs import contract
from jobs.errors import ErrorCode, ServiceError
from jobs.records import new_id
from jobs.voicestore import VoiceRecord

log = logging.getLogger(__name__)
_OPERATOR_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def view(record: VoiceRecord) -> dict[str, Any]:
    """The public JSON of a voice (schemas.Voice)."""
    return {
        "id": record.id,
        "name": record.name,
        "status": record.status.value,
        "operator": record.operator,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "error": record.error,
        "info": record.info,
    }


def get_owned(owner: str, voice_id: str) -> VoiceRecord:
    """The caller's voice or an operator voice; anything else is 404."""
    record = services().voices.get(voice_id, owner=owner)
    if record is None:
        raise not_found("voice", voice_id)
    return record


# OpenAI's speech voices: clients that speak its API send these. An operator alias maps any of them
# (ECHO_VOICE_ALIASES), and unknown ones fall back to ECHO_DEFAULT_VOICE when that is set.
OPENAI_VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse"}
)
UNCONDITIONED = "none"  # the model's own voice, no reference


class VoiceNotFound(ServiceError):
    """Raised when a request names no voice this key can use; ``usable`` lists the names that work."""

    code = ErrorCode.VOICE_NOT_FOUND

    def __init__(self, voice: str, usable: list[str]) -> None:
        shown = ", ".join(usable[:50]) + (" ..." if len(usable) > 50 else "")
        super().__init__(f"no voice {voice!r}; usable: {shown}")
        self.voice, self.usable = voice, usable


def usable_names(owner: str) -> list[str]:
    """What a request may name: 'none', the aliases, and the caller's and the operator's voices."""
    s = services()
    names = [UNCONDITIONED, *sorted(s.settings.voice_aliases)]
    return names + [v.name or v.id for v in s.voices.list_voices(owner)]


def lookup(owner: str, voice: str, *, fallback: bool = True) -> VoiceRecord | None:
    """The voice a request names: an alias (ECHO_VOICE_ALIASES) is followed first; ``none`` is the
    unconditioned voice (None); then the caller's voice or an operator voice by id, by name, or by file
    name; an OpenAI voice name nothing else matched falls back to ECHO_DEFAULT_VOICE when set.
    Raises VoiceNotFound listing the usable names."""
    s = services()
    name = s.settings.voice_aliases.get(voice.casefold(), voice)
    if name.casefold() == UNCONDITIONED:
        return None
    record = s.voices.find(name, owner=owner) or s.voices.find_by_name(name, owner=owner)
    if record is None and fallback and voice.casefold() in OPENAI_VOICES and s.settings.default_voice:
        return lookup(owner, s.settings.default_voice, fallback=False)
    if record is None:
        raise VoiceNotFound(voice, usable_names(owner))
    return record


def resolve(owner: str, voice: str) -> VoiceRecord | None:
    """The voice a job or book names (see :func:`lookup`), refused by field name (422)."""
    try:
        record = lookup(owner, voice)
    except VoiceNotFound as exc:
        raise invalid("voice", exc.message, usable=exc.usable) from None
    if record is not None and record.status is contract.VoiceState.FAILED:
        raise invalid("voice", f"voice {voice!r} failed to encode; upload it again")
    return record


def create(owner: str) -> VoiceRecord:
    """Multipart ``file`` (+ optional ``name``): store the reference, enqueue the encode task."""
    if request.mimetype != "multipart/form-data":
        raise APIError(415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, "send multipart/form-data with a file field 'file'")
    body = VoiceCreate.model_validate(form_fields(files=("file",)))
    s = services()
    upload = read_audio("file", max_seconds=s.settings.max_reference_seconds, required=True)
    assert upload is not None  # required=True raises instead
    voice_id = new_id("voice")
    key = contract.voice_reference_key(voice_id, upload.kind.extension)
    name = body.name or Path(request.files["file"].filename or voice_id).name
    s.storage.put_bytes(key, upload.data, content_type=upload.kind.content_type)
    record = s.voices.create(owner, name, key, voice_id=voice_id, sha256=upload.sha256)
    s.queue.send_encode_voice(voice_id, key)
    return record


def delete(owner: str, voice_id: str) -> None:
    record = get_owned(owner, voice_id)
    if record.operator:
        raise APIError(
            403,
            ErrorCode.READ_ONLY_VOICE,
            f"voice {voice_id!r} is an operator voice (ECHO_VOICES_DIR); it cannot be deleted through the API",
        )
    s = services()
    s.voices.delete(voice_id)
    s.storage.delete_prefix(contract.voice_prefix(voice_id))


def register_operator_voices(s: Services, directory: Path) -> list[str]:
    """Register every audio file in ``directory``; unchanged voices are left as they are. Returns the ids."""
    ids = []
    for path in sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")):
        data = path.read_bytes()
        kind = sniff_audio(data[:65536])
        if kind is None or not _OPERATOR_ID.match(path.stem):
            log.warning("ECHO_VOICES_DIR: skipping %s (not audio, or not a usable voice name)", path.name)
            continue
        sha = hashlib.sha256(data).hexdigest()
        current = s.voices.get(path.stem)
        known = current is not None and current.sha256 == sha and current.status is not contract.VoiceState.FAILED
        if known and s.storage.exists(current.reference_key):  # type: ignore[union-attr]
            ids.append(path.stem)
            continue
        key = contract.voice_reference_key(path.stem, kind.extension)
        s.storage.put_bytes(key, data, content_type=kind.content_type)
        _, changed = s.voices.register_operator(path.stem, path.name, key, sha)
        if changed or known:  # known but its stored files are gone (e.g. a new bucket): encode again
            s.queue.send_encode_voice(path.stem, key)
        ids.append(path.stem)
    log.info("operator voices: %s", ", ".join(ids) or "none")
    return ids
