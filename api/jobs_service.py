"""Synthesis jobs: validate and submit, present records, list, cancel, and serve the audio.

Views call these functions; they raise :class:`api.errors.APIError` for anything the client got wrong.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Any

import redis
from flask import redirect, request, url_for
from kombu.exceptions import OperationalError
from werkzeug.wrappers import Response

from api import voices_service, webhooks_service
from api.downloads import stream_object
from api.errors import APIError, idempotency_conflict, invalid, not_found
from api.quotas import quota_exceeded
from api.schemas import JobCreate, JobListQuery
from api.services import services
from api.uploads import Upload, form_fields, json_body, read_audio
from jobs import contract
from jobs.contract import ContractError, JobState, SynthesisRequest
from jobs.errors import ErrorCode
from jobs.jobstore import IdempotencyConflict, InvalidCursor, JobRecord
from jobs.record_store import QuotaExceeded, RecordStore
from jobs.records import fingerprint, iso, new_id
from jobs.storage import StorageError
from jobs.views import job_data, job_result

log = logging.getLogger(__name__)
UNAVAILABLE = (StorageError, OperationalError, redis.RedisError)


def parse_submission() -> tuple[JobCreate, Upload | None]:
    """The request body (JSON, or a form: multipart with an optional ``speaker_audio`` file) as a JobCreate."""
    if request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        data = form_fields(
            json_fields=("overrides", "metadata"), int_fields=("seed", "sample_rate"), files=("speaker_audio",)
        )
        upload = read_audio("speaker_audio", max_seconds=services().settings.max_reference_seconds, required=False)
        return JobCreate.model_validate(webhooks_service.form_events(data)), upload
    return JobCreate.model_validate(json_body()), None


def check_text_length(text: str, field: str) -> None:
    """413 naming ECHO_MAX_TEXT_CHARS when ``text`` (the request's ``field``) is longer than one job may be."""
    limit = services().settings.max_text_chars
    if len(text) > limit:
        raise APIError(
            413,
            ErrorCode.TEXT_TOO_LONG,
            f"{field} has {len(text)} characters; the limit is ECHO_MAX_TEXT_CHARS={limit}",
            {"limit": "ECHO_MAX_TEXT_CHARS", "max_chars": limit, "field": field},
        )


def _check_limits(owner: str, body: JobCreate, upload: Upload | None) -> str | None:
    """Refuse what breaks a limit; returns the resolved voice id."""
    settings = services().settings
    check_text_length(body.text, "text")
    size = len(json.dumps(body.metadata))
    if size > settings.max_metadata_bytes:
        raise APIError(
            413,
            ErrorCode.METADATA_TOO_LARGE,
            f"metadata is {size} bytes of JSON; the limit is ECHO_MAX_METADATA_BYTES={settings.max_metadata_bytes}",
            {"limit": "ECHO_MAX_METADATA_BYTES", "field": "metadata"},
        )
    rate_problems = contract.sample_rate_errors(body.format, body.sample_rate) if body.sample_rate is not None else []
    if rate_problems:
        raise invalid("sample_rate", rate_problems[0])
    if body.voice and upload:
        raise invalid("voice", "give either voice or speaker_audio, not both")
    record = voices_service.resolve(owner, body.voice) if body.voice else None
    return record.id if record is not None else None


def _synthesis_request(
    job_id: str, owner: str, body: JobCreate, upload: Upload | None, voice_id: str | None, *, stream: bool = False
) -> SynthesisRequest:
    speaker_key = contract.upload_key(job_id, f"reference.{upload.kind.extension}") if upload else None
    req = SynthesisRequest(
        job_id=job_id,
        text=body.text,
        seed=secrets.randbelow(2**32) if body.seed is None else body.seed,
        format=body.format,
        preset=body.preset,
        overrides=body.overrides.model_dump(exclude_unset=True),
        voice_id=voice_id,
        speaker_key=speaker_key,
        sample_rate=body.sample_rate,
        owner=owner,
        metadata=body.metadata,
        stream=stream,
    )
    try:
        req.validate()  # the contract's own check: a safety net behind the schema
    except ContractError as exc:
        raise APIError(422, ErrorCode.INVALID_REQUEST, str(exc)) from None
    return req


def submit(
    owner: str, body: JobCreate, upload: Upload | None, idempotency_key: str | None, *, stream: bool = False
) -> tuple[JobRecord, bool]:
    """Store the job, upload a one-shot reference, enqueue; ``(record, created)`` (False: idempotent replay).
    ``stream``: the worker publishes the audio piece by piece as well (a streamed speech answer)."""
    voice_id = _check_limits(owner, body, upload)
    webhook = webhooks_service.checked(body.webhook, body.webhook_events)
    s = services()
    req = _synthesis_request(new_id("job"), owner, body, upload, voice_id, stream=stream)
    fp = fingerprint({"body": body.model_dump(mode="json"), "speaker_audio": upload.sha256 if upload else None})
    try:
        record, created = s.store.create(
            owner,
            req.to_dict(),
            idempotency_key=idempotency_key,
            body_fingerprint=fp,
            job_id=req.job_id,
            queue_timeout_s=s.settings.queue_timeout_s,
            max_active=s.settings.max_queued_jobs,
            webhook=webhook,
        )
    except QuotaExceeded as exc:
        raise quota_exceeded(exc) from None
    except IdempotencyConflict as exc:
        raise idempotency_conflict(exc, "body", "job_id") from None
    if created:
        try:
            if upload and req.speaker_key:
                s.storage.put_bytes(req.speaker_key, upload.data, content_type=upload.kind.content_type)
            s.waiting.offer(req.job_id, req.to_dict())  # a worker may batch it with another job
            s.queue.send_synthesis(req, expires=record.deadline_ts)  # Celery drops it after the deadline
        except UNAVAILABLE as exc:
            log.error("could not enqueue %s: %s", req.job_id, exc)
            s.store.fail(req.job_id, ErrorCode.UNAVAILABLE, "the job could not be queued; submit it again")
            raise APIError(503, ErrorCode.UNAVAILABLE, "storage or the queue is unavailable; try again") from exc
        except Exception:
            s.store.fail(req.job_id, ErrorCode.INTERNAL_ERROR, "the job could not be queued")
            raise
        report_sent(s.store, req.job_id)
    return record, created


def report_sent(store: RecordStore, record_id: str) -> None:
    """Take a job or book out of its store's outbox: its message is on the broker. If Redis fails now, a
    worker's sweep sends the message once more later (``worker.recovery.send_unsent``), which renders
    nothing twice."""
    try:
        store.sent(record_id)
    except redis.RedisError as exc:
        log.warning("%s was queued, but the outbox kept it: %s", record_id, exc)


def wait_final(job_id: str, timeout_s: float, *, poll_max_s: float = 0.25) -> JobRecord | None:
    """Poll the record until it is terminal (every 50 ms at first, backing off to ``poll_max_s``); None
    when ``timeout_s`` passed first. A record that vanishes meanwhile is a 500."""
    store, deadline, pause = services().store, time.monotonic() + timeout_s, min(0.05, poll_max_s)
    while True:
        record = store.get(job_id)
        if record is None:
            raise APIError(500, ErrorCode.INTERNAL_ERROR, f"the record of job {job_id} vanished while waiting")
        if record.status in contract.TERMINAL_STATES:
            return record
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        time.sleep(min(pause, left))
        pause = min(pause * 1.5, poll_max_s)


def idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= 255:
        raise invalid("Idempotency-Key", "must be 1 to 255 characters")
    return key


def audio_key(record: JobRecord) -> str:
    """Where a succeeded job's audio is: the key its result names (the deterministic one when absent)."""
    recorded = (record.result or {}).get("key")
    return str(recorded) if recorded else contract.job_audio_key(record.id, record.request.get("format", "wav"))


def _local_audio_url(job_id: str) -> str:
    """Without presigned URLs (local storage) the API serves the audio itself."""
    return url_for("jobs.audio", job_id=job_id, _external=True)


def _result(record: JobRecord) -> dict[str, Any] | None:
    result = job_result(record)
    if result is None:
        return None
    filename = f"{record.id}.{contract.OUTPUT_FORMATS[result['format']].extension}"
    url = services().storage.presign(audio_key(record), filename=filename) or _local_audio_url(record.id)
    return {"url": url, **result}


def view(record: JobRecord) -> dict[str, Any]:
    """The public JSON of a job (schemas.Job): the record's own view (jobs.views) with the result URL
    presigned afresh on every call, the worker holding it and the webhook state."""
    self_url = url_for("jobs.get_job", job_id=record.id)
    return job_data(record) | {
        "result": _result(record),
        "worker": _worker(record),
        "webhook": record.webhook,
        "links": {"self": self_url, "audio": f"{self_url}/audio"},
    }


def _worker(record: JobRecord) -> dict[str, Any] | None:
    """Who holds a running job, and when it last beat (null last beat: it is gone and the job is being
    re-queued by the other workers' sweep)."""
    if record.status is not JobState.RUNNING or not record.worker:
        return None
    beat = services().store.heartbeat_of(record.worker)
    return {"name": record.worker, "last_heartbeat_at": iso(beat.get("ts")) if beat else None}


def get_owned(owner: str, job_id: str) -> JobRecord:
    """The owner's job; one still queued past its deadline reads as ``expired`` (it is moved there)."""
    store = services().store
    record = store.get(job_id, owner=owner)
    if record is None:
        raise not_found("job", job_id)
    record = store.expire_if_due(record)
    webhooks_service.completed("job", record)  # e.g. it expired just now: nobody else tells the webhook
    return record


def list_owned(owner: str) -> dict[str, Any]:
    raw: dict[str, Any] = {"limit": request.args.get("limit", "20"), "cursor": request.args.get("cursor")}
    if request.args.get("status"):
        raw["status"] = [s for s in request.args.get("status", "").split(",") if s]
    query = JobListQuery.model_validate({k: v for k, v in raw.items() if v is not None})
    try:
        records, cursor = services().store.list_jobs(
            owner, status=[JobState(s) for s in query.status or []] or None, limit=query.limit, cursor=query.cursor
        )
    except InvalidCursor as exc:
        raise invalid("cursor", str(exc)) from None
    for record in records:
        webhooks_service.completed("job", record)
    return {"jobs": [view(r) for r in records], "next_cursor": cursor}


def cancel(owner: str, job_id: str) -> JobRecord:
    """Queued → canceled (and the message revoked); running → cancel requested; finished (expired
    included) → unchanged."""
    s = services()
    before = get_owned(owner, job_id)
    after = s.store.request_cancel(job_id) or before
    if before.status is JobState.QUEUED and after.status is JobState.CANCELED:
        try:
            s.queue.revoke(job_id)
        except UNAVAILABLE as exc:  # the worker also checks the record before it starts: still canceled
            log.warning("could not revoke %s: %s", job_id, exc)
    webhooks_service.completed("job", after)
    return after


def audio_response(owner: str, job_id: str) -> Response:
    """302 to a presigned URL, or the file itself with local storage."""
    record = get_owned(owner, job_id)
    result = _result(record)
    if result is None:
        raise APIError(
            409,
            ErrorCode.NOT_READY,
            f"job {job_id} is {record.status.value}; audio exists once it succeeded",
            {"status": record.status.value},
        )
    if result["url"] != _local_audio_url(record.id):
        return redirect(result["url"], code=302)
    name = f"{record.id}.{contract.OUTPUT_FORMATS[result['format']].extension}"
    return stream_object(
        audio_key(record),
        result["content_type"],
        disposition=f'attachment; filename="{name}"',
        gone=f"the audio of job {job_id} is no longer in storage",
    )
