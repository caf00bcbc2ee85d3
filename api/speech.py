"""``POST /v1/audio/speech``: OpenAI-compatible synchronous speech on top of the job queue.

The request becomes an ordinary job (``jobs_service.submit``: same limits, idempotency, ownership and
interactive queue); this module then polls the job record until it is terminal or
``ECHO_SPEECH_TIMEOUT_S`` passes, and answers with the audio bytes read from storage. A timeout
answers 504 with the job id: the job keeps running and ``GET /v1/jobs/{id}`` reaches it.

Each wait holds one gunicorn thread, so ``--workers × --threads`` bounds the concurrent waits
(and a thread waiting here serves nothing else meanwhile).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from flask import Response, send_file, stream_with_context
from pydantic import Field, field_validator

from api import jobs_service
from api.errors import APIError
from api.schemas import JobCreate, Overrides, _Strict
from api.services import services
from worker import contract
from worker.contract import JobState
from worker.jobstore import JobRecord
from worker.storage import LocalStorage, S3Storage

if TYPE_CHECKING:
    Preset: TypeAlias = str
else:
    Preset = Literal[contract.PRESET_NAMES]

PCM_DEFAULT_RATE = 24_000  # OpenAI's pcm is 24 kHz 16-bit LE mono; clients that play it assume so
_POLL_FIRST_S, _POLL_MAX_S = 0.05, 0.25
_CHUNK = 1 << 16
# Failed job error code -> HTTP status of the synchronous answer (the envelope carries the code itself).
_FAILED_STATUS = {
    contract.ErrorCode.INVALID_INPUT: 422, contract.ErrorCode.TEXT_TOO_LONG: 422,
    contract.ErrorCode.INVALID_AUDIO: 422, contract.ErrorCode.UNSUPPORTED_FORMAT: 422,
    contract.ErrorCode.VOICE_NOT_READY: 422, contract.ErrorCode.VOICE_NOT_FOUND: 404,
    contract.ErrorCode.STORAGE_UNAVAILABLE: 503, "unavailable": 503,
    contract.ErrorCode.EXPIRED: 504, contract.ErrorCode.TIME_LIMIT: 504,
}


class SpeechCreate(_Strict):
    """POST /v1/audio/speech: OpenAI's request body, plus the extensions ``seed``, ``preset``,
    ``overrides`` and ``sample_rate`` (the same as for POST /v1/jobs)."""

    model: str = Field("echo-tts", min_length=1, max_length=64,
                       description="Accepted and recorded (job metadata.model); any name, e.g. echo-tts or tts-1")
    input: str = Field(min_length=1, description="Text to speak (limit: ECHO_MAX_TEXT_CHARS); long text is split "
                                                  "at sentence boundaries and stitched, never truncated")
    voice: str = Field(min_length=1, max_length=128, description="A stored voice id of the caller, or an operator "
                                                                 "voice's id or file name (GET /v1/voices); "
                                                                 "{\"id\": ...} is accepted too")
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = Field(
        "mp3", description="aac is AAC in MP4 (.m4a); pcm is raw 16-bit LE mono at 24000 Hz unless sample_rate")
    speed: float = Field(1.0, description="Only 1.0: Echo-TTS has no speaking-rate control and the service does "
                                          "not time-stretch")
    stream_format: Literal["audio"] = Field("audio", description="Only audio (the whole file); sse is not offered")
    seed: int | None = Field(None, ge=0, lt=2**63, description="Extension: recorded; random when absent "
                                                               "(answered in X-Seed)")
    preset: Preset = Field(contract.DEFAULT_PRESET, description="Extension: an upstream sampler preset")
    overrides: Overrides = Field(default_factory=Overrides, description="Extension: bounded sampler overrides")
    sample_rate: int | None = Field(None, ge=contract.MIN_OUTPUT_SAMPLE_RATE, le=contract.MAX_OUTPUT_SAMPLE_RATE,
                                    description="Extension: output rate (Hz), as for POST /v1/jobs")

    @field_validator("voice", mode="before")
    @classmethod
    def _voice_object(cls, value: Any) -> Any:
        return value.get("id") if isinstance(value, dict) else value  # OpenAI's {"id": "voice_..."} form

    @field_validator("input")
    @classmethod
    def _not_blank(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("input must not be blank")
        return text

    @field_validator("speed")
    @classmethod
    def _unit_speed(cls, speed: float) -> float:
        if speed != 1.0:
            raise ValueError("only 1.0 is supported: Echo-TTS has no speaking-rate control and the service "
                             "does not time-stretch audio")
        return speed


def _voice_id(owner: str, voice: str) -> str:
    """The caller's voice or an operator voice (by id, or by file name); anything else is 404."""
    store = services().store.voices
    record = store.get(voice, owner=owner) or (store.get(Path(voice).stem, owner=owner) if "." in voice else None)
    if record is None:
        raise APIError(404, "not_found", f"no voice {voice!r}; GET /v1/voices lists the voices this key can use",
                       {"id": voice, "field": "voice"})
    return record.id


def submit(owner: str, body: SpeechCreate, idempotency_key: str | None) -> JobRecord:
    """The speech request as an ordinary job on the interactive queue (model recorded in metadata)."""
    rate = body.sample_rate or (PCM_DEFAULT_RATE if body.response_format == "pcm" else None)
    job = JobCreate(text=body.input, voice=_voice_id(owner, body.voice), preset=body.preset,
                    overrides=body.overrides, seed=body.seed, format=body.response_format, sample_rate=rate,
                    metadata={"endpoint": "/v1/audio/speech", "model": body.model})
    record, _ = jobs_service.submit(owner, job, None, idempotency_key)
    return record


def wait(job_id: str, timeout_s: float) -> JobRecord | None:
    """Poll the record until it is terminal; None when ``timeout_s`` passed first."""
    store, deadline, pause = services().store, time.monotonic() + timeout_s, _POLL_FIRST_S
    while True:
        record = store.get(job_id)
        if record is None:
            raise APIError(500, "internal_error", f"the record of job {job_id} vanished while waiting")
        if record.status in contract.TERMINAL_STATES:
            return record
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        time.sleep(min(pause, left))
        pause = min(pause * 1.5, _POLL_MAX_S)


def _job_headers(record: JobRecord) -> dict[str, str]:
    return {"X-Job-Id": record.id, "Location": f"/v1/jobs/{record.id}"}


def refusal(record: JobRecord | None, job_id: str, timeout_s: float) -> APIError:
    """The envelope for a job that did not succeed (or did not finish in time)."""
    details: dict[str, Any] = {"job_id": job_id, "links": {"job": f"/v1/jobs/{job_id}"}}
    headers = {"X-Job-Id": job_id, "Location": f"/v1/jobs/{job_id}"}
    if record is None:
        return APIError(504, "timeout", f"job {job_id} did not finish within ECHO_SPEECH_TIMEOUT_S={timeout_s:g} s; "
                        f"it keeps running: poll GET /v1/jobs/{job_id}",
                        {**details, "limit": "ECHO_SPEECH_TIMEOUT_S", "timeout_s": timeout_s}, headers=headers)
    details["status"] = record.status.value
    if record.status is JobState.CANCELED:
        return APIError(409, "canceled", f"job {job_id} was canceled before it finished", details, headers=headers)
    error = record.error or {"code": record.status.value, "message": f"job {job_id} is {record.status.value}"}
    code = str(error.get("code") or "render_failed")
    return APIError(_FAILED_STATUS.get(code, 500), code, str(error.get("message") or code), details, headers=headers)


def audio(record: JobRecord) -> Response:
    """The succeeded job's audio as the response body (streamed from storage), with its content type."""
    fmt = str(record.request.get("format") or contract.DEFAULT_FORMAT)
    spec = contract.OUTPUT_FORMATS[fmt]
    result = record.result or {}
    key = result.get("key") or result.get("storage_key") or contract.job_audio_key(record.id, fmt)
    rate = result.get("sample_rate")
    content_type = f"{spec.content_type}; rate={rate}; channels=1" if fmt == "pcm" and rate else spec.content_type
    headers = {**_job_headers(record), "X-Seed": str(record.request.get("seed")),
               "Content-Disposition": f'inline; filename="speech.{spec.extension}"'}
    if rate:
        headers["X-Audio-Sample-Rate"] = str(rate)
    if result.get("duration_s") is not None:
        headers["X-Audio-Duration"] = str(result["duration_s"])
    storage = services().storage
    if isinstance(storage, LocalStorage):
        if not storage.exists(key):
            raise APIError(410, "audio_gone", f"the audio of job {record.id} is no longer in storage")
        response = send_file(storage.path(key), mimetype=content_type, conditional=False)
    elif isinstance(storage, S3Storage):
        obj = _s3_object(storage, key)
        response = Response(stream_with_context(obj["Body"].iter_chunks(_CHUNK)), mimetype=content_type)
        response.content_length = int(obj["ContentLength"])
    else:  # another Storage implementation: whole bytes
        response = Response(storage.get_bytes(key), mimetype=content_type)
    response.headers["Content-Type"] = content_type  # send_file/mimetype may append a charset otherwise
    response.headers.update(headers)
    return response


def _s3_object(storage: S3Storage, key: str) -> dict[str, Any]:
    """GET the object (its body unread): a missing one is 410, other failures the storage errors."""
    from worker.storage import ObjectNotFound, _translated

    try:
        with _translated(key):
            return dict(storage.client.get_object(Bucket=storage.bucket, Key=key))
    except ObjectNotFound:
        raise APIError(410, "audio_gone", f"the audio of {key!r} is no longer in storage") from None


def speak(owner: str, body: SpeechCreate) -> Response:
    """Submit, wait, answer: the audio, or the envelope saying why not."""
    settings = services().settings
    timeout_s = settings.speech_timeout_s
    if len(body.input) > settings.max_text_chars:
        raise APIError(413, "text_too_long", f"input has {len(body.input)} characters; the limit is "
                       f"ECHO_MAX_TEXT_CHARS={settings.max_text_chars}",
                       {"limit": "ECHO_MAX_TEXT_CHARS", "max_chars": settings.max_text_chars, "field": "input"})
    record = submit(owner, body, jobs_service.idempotency_key())
    done = wait(record.id, timeout_s)
    if done is None or done.status is not JobState.SUCCEEDED:
        raise refusal(done, record.id, timeout_s)
    return audio(done)

