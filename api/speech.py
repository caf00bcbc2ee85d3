"""``POST /v1/audio/speech``: OpenAI-compatible synchronous speech on top of the job queue.

The request becomes an ordinary job (``jobs_service.submit``: same limits, idempotency, ownership and
interactive queue); this module then polls the job record until it is terminal or
``ECHO_SPEECH_TIMEOUT_S`` passes, and answers with the audio bytes read from storage. A timeout
answers 504 with the job id: the job keeps running and ``GET /v1/jobs/{id}`` reaches it.

Each wait holds one gunicorn thread, so ``--workers × --threads`` bounds the concurrent waits
(and a thread waiting here serves nothing else meanwhile).
"""

from __future__ import annotations

from typing import Any

from flask import Response

from api import jobs_service, speech_stream, voices_service
from api.downloads import stream_object
from api.errors import APIError
from api.schemas import JobCreate, SpeechCreate
from api.services import services
from jobs import contract
from jobs.contract import JobState
from jobs.errors import ErrorCode
from jobs.jobstore import JobRecord

PCM_DEFAULT_RATE = 24_000  # OpenAI's pcm is 24 kHz 16-bit LE mono; clients that play it assume so
# Failed job error code -> HTTP status of the synchronous answer (the envelope carries the code itself).
_FAILED_STATUS = {
    contract.ErrorCode.INVALID_INPUT: 422,
    contract.ErrorCode.TEXT_TOO_LONG: 422,
    contract.ErrorCode.INVALID_AUDIO: 422,
    contract.ErrorCode.UNSUPPORTED_FORMAT: 422,
    contract.ErrorCode.VOICE_NOT_READY: 422,
    contract.ErrorCode.VOICE_NOT_FOUND: 404,
    contract.ErrorCode.STORAGE_UNAVAILABLE: 503,
    contract.ErrorCode.OUT_OF_MEMORY: 503,  # the worker's memory, not the request's form: shorter text may pass
    contract.ErrorCode.UNAVAILABLE: 503,
    contract.ErrorCode.EXPIRED: 504,
    contract.ErrorCode.TIME_LIMIT: 504,
}


def _voice_id(owner: str, voice: str) -> str | None:
    """The voice by id, name, file name, alias or ``none`` (voices_service.lookup); anything else is 404
    listing the names this key can use."""
    try:
        record = voices_service.lookup(owner, voice)
    except voices_service.VoiceNotFound as exc:
        raise APIError(
            404,
            ErrorCode.NOT_FOUND,
            f"{exc.message}; GET /v1/voices lists them",
            {"id": voice, "field": "voice", "usable": exc.usable},
        ) from None
    return record.id if record is not None else None


def streamed(body: SpeechCreate) -> bool:
    """Whether the answer is sent as it is rendered: SSE always; raw audio when the format can be cut."""
    return body.stream_format == "sse" or body.response_format in contract.STREAM_FORMATS


def submit(owner: str, body: SpeechCreate, idempotency_key: str | None) -> JobRecord:
    """The speech request as an ordinary job on the interactive queue (model recorded in metadata)."""
    rate = body.sample_rate or (PCM_DEFAULT_RATE if body.response_format == "pcm" else None)
    job = JobCreate(
        text=body.input,
        voice=_voice_id(owner, body.voice),
        preset=body.preset,
        overrides=body.overrides,
        seed=body.seed,
        format=body.response_format,
        sample_rate=rate,
        metadata={"endpoint": "/v1/audio/speech", "model": body.model}
        | ({"instructions": body.instructions} if body.instructions else {}),
    )
    record, _ = jobs_service.submit(owner, job, None, idempotency_key, stream=streamed(body))
    return record


def _job_headers(record: JobRecord) -> dict[str, str]:
    return {"X-Job-Id": record.id, "Location": f"/v1/jobs/{record.id}"}


def refusal(record: JobRecord | None, job_id: str, timeout_s: float) -> APIError:
    """The envelope for a job that did not succeed (or did not finish in time)."""
    details: dict[str, Any] = {"job_id": job_id, "links": {"job": f"/v1/jobs/{job_id}"}}
    headers = {"X-Job-Id": job_id, "Location": f"/v1/jobs/{job_id}"}
    if record is None:
        return APIError(
            504,
            ErrorCode.TIMEOUT,
            f"job {job_id} did not finish within ECHO_SPEECH_TIMEOUT_S={timeout_s:g} s; "
            f"it keeps running: poll GET /v1/jobs/{job_id}",
            {**details, "limit": "ECHO_SPEECH_TIMEOUT_S", "timeout_s": timeout_s},
            headers=headers,
        )
    details["status"] = record.status.value
    if record.status is JobState.CANCELED:
        return APIError(
            409, ErrorCode.CANCELED, f"job {job_id} was canceled before it finished", details, headers=headers
        )
    error = record.error or {"code": record.status.value, "message": f"job {job_id} is {record.status.value}"}
    code = _error_code(error.get("code"))
    return APIError(_FAILED_STATUS.get(code, 500), code, str(error.get("message") or code), details, headers=headers)


def _error_code(recorded: object) -> ErrorCode:
    """The recorded job error as a member (a record written by an older build may hold another string)."""
    try:
        return ErrorCode(str(recorded))
    except ValueError:
        return ErrorCode.RENDER_FAILED


def audio(record: JobRecord) -> Response:
    """The succeeded job's audio as the response body (streamed from storage), with its content type."""
    fmt = str(record.request.get("format") or contract.DEFAULT_FORMAT)
    spec = contract.OUTPUT_FORMATS[fmt]
    result = record.result or {}
    key = jobs_service.audio_key(record)
    rate = result.get("sample_rate")
    content_type = f"{spec.content_type}; rate={rate}; channels=1" if fmt == "pcm" and rate else spec.content_type
    headers = {
        **_job_headers(record),
        "X-Seed": str(record.request.get("seed")),
        "Content-Disposition": f'inline; filename="speech.{spec.extension}"',
    }
    if rate:
        headers["X-Audio-Sample-Rate"] = str(rate)
    if result.get("duration_s") is not None:
        headers["X-Audio-Duration"] = str(result["duration_s"])
    response = stream_object(key, content_type, gone=f"the audio of job {record.id} is no longer in storage")
    response.headers.update(headers)
    return response


def speak(owner: str, body: SpeechCreate) -> Response:
    """Submit, wait, answer: the audio (streamed as it is rendered where it can be), or the envelope
    saying why not."""
    settings = services().settings
    timeout_s = settings.speech_timeout_s
    jobs_service.check_text_length(body.input, "input")
    record = submit(owner, body, jobs_service.idempotency_key())
    if streamed(body):
        return _streamed(record, body, timeout_s)
    done = jobs_service.wait_final(record.id, timeout_s)
    if done is None or done.status is not JobState.SUCCEEDED:
        raise refusal(done, record.id, timeout_s)
    return audio(done)


def _streamed(record: JobRecord, body: SpeechCreate, timeout_s: float) -> Response:
    """The answer starts with the first rendered piece; until then failures answer as above."""
    sse, input_bytes = body.stream_format == "sse", len(body.input.encode())
    reader = speech_stream.reader(record, timeout_s)
    first = reader.next_chunks()
    if first is None:  # the job ended (or stalled) before any audio was published
        done = reader.record
        if done is None or done.status is not JobState.SUCCEEDED:
            raise refusal(done, record.id, timeout_s)
        return speech_stream.whole_file_events(done, input_bytes) if sse else audio(done)
    return speech_stream.response(reader, first, record, sse=sse, input_bytes=input_bytes)
