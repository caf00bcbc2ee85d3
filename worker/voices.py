"""Speakers for a job: stored voices (latents encoded once, cached in memory) and one-shot uploads.

``encode_voice`` is what the encode-voice task runs: load ``voices/{id}/reference.*``, encode
once with ``pipeline.encode_speaker``, store ``voices/{id}/latents.safetensors``, mark the voice
ready. A job with a ready voice only loads those latents; it never re-encodes the reference.
"""

from __future__ import annotations

import logging
from typing import Any

from echo_tts.config import AE_DOWNSAMPLE_FACTOR, SAMPLE_RATE
from echo_tts.errors import InvalidInput
from echo_tts.speaker import SpeakerLatents
from jobs.contract import SynthesisRequest, VoiceState, voice_latents_key, voice_reference_prefix
from jobs.errors import ErrorCode, ServiceError
from jobs.storage import ObjectNotFound

from .engine import Engine

log = logging.getLogger(__name__)


class JobFailure(ServiceError):
    """Raised when a job must fail with a specific error code (bad voice, missing upload)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message, code=code)


def _reference_key(engine: Engine, voice_id: str, recorded: str | None) -> str:
    if recorded:
        return recorded
    keys = engine.storage.list_keys(voice_reference_prefix(voice_id))
    if not keys:
        raise ObjectNotFound(f"no reference audio for voice {voice_id}")
    return keys[0]


def encode_voice(engine: Engine, voice_id: str, reference_key: str | None = None) -> dict[str, Any]:
    """Encode a voice's reference once and store its latents; idempotent when already ready."""
    record = engine.voices.get(voice_id)
    if record is None:
        return {"voice_id": voice_id, "status": "unknown"}
    key = voice_latents_key(voice_id)
    if record.status == VoiceState.READY and engine.storage.exists(record.latents_key or key):
        return {"voice_id": voice_id, "status": VoiceState.READY, "skipped": True}
    try:
        reference = engine.storage.get_bytes(_reference_key(engine, voice_id, reference_key or record.reference_key))
        latents = engine.pipeline.encode_speaker(reference)
    except ObjectNotFound as exc:
        engine.voices.mark_failed(voice_id, ErrorCode.INVALID_AUDIO, str(exc))
        return {"voice_id": voice_id, "status": VoiceState.FAILED}
    except InvalidInput as exc:
        engine.voices.mark_failed(voice_id, ErrorCode.INVALID_AUDIO, str(exc))
        return {"voice_id": voice_id, "status": VoiceState.FAILED}
    engine.storage.put_bytes(key, latents.to_bytes(), content_type="application/octet-stream")
    info = {
        "num_latents": latents.length,
        "valid_frames": latents.valid_frames,
        "duration_s": round(latents.valid_frames * AE_DOWNSAMPLE_FACTOR / SAMPLE_RATE, 3),
    }
    engine.voices.mark_ready(voice_id, key, info)
    engine.latents.put(key, latents)
    log.info("voice %s encoded: %s", voice_id, info)
    return {"voice_id": voice_id, "status": VoiceState.READY, **info}


def voice_latents(engine: Engine, voice_id: str, owner: str | None) -> SpeakerLatents:
    """The stored voice's latents: from memory, else storage; a still-pending voice is encoded now."""
    record = engine.voices.get(voice_id, owner=owner)
    if record is None:
        raise JobFailure(ErrorCode.VOICE_NOT_FOUND, f"voice {voice_id} does not exist")
    if record.status == VoiceState.PENDING:
        encode_voice(engine, voice_id)
        record = engine.voices.get(voice_id, owner=owner)
    if record is None or record.status != VoiceState.READY:
        reason = (record.error or {}).get("message", "its reference could not be encoded") if record else "deleted"
        raise JobFailure(ErrorCode.VOICE_NOT_READY, f"voice {voice_id} is not usable: {reason}")
    key = record.latents_key or voice_latents_key(voice_id)
    cached = engine.latents.get(key)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    try:
        latents = SpeakerLatents.from_bytes(engine.storage.get_bytes(key))
    except ObjectNotFound:
        raise JobFailure(ErrorCode.VOICE_NOT_READY, f"voice {voice_id} has no stored latents") from None
    engine.latents.put(key, latents)
    return latents


def resolve_speaker(engine: Engine, request: SynthesisRequest) -> SpeakerLatents | None:
    """The speaker for a job: a stored voice, a one-shot upload encoded for this job, or None."""
    if request.voice_id:
        return voice_latents(engine, request.voice_id, request.owner)
    if request.speaker_key:
        try:
            reference = engine.storage.get_bytes(request.speaker_key)
        except ObjectNotFound:
            raise JobFailure(ErrorCode.INVALID_INPUT, f"reference upload {request.speaker_key} is missing") from None
        return engine.pipeline.encode_speaker(reference)  # type: ignore[no-any-return]
    return None
