"""What the tasks do, without Celery: run one synthesis job or encode one voice.

Re-delivery is safe: the audio key is deterministic (``jobs/{id}/audio.{ext}``) and its
result description (``jobs/{id}/result.json``) is written before it. A task that finds the
audio never renders or uploads again; if the record does not say succeeded yet, it finishes
the record from the stored description. Rendered bytes are also spooled on local disk until
uploaded (``worker/job_output.py``), so a storage retry on the same machine uploads without
rendering again.

A short job may take waiting jobs into its sampler call (``worker/job_batch.py``). The own message of a job
claimed that way, arriving while its claimer is alive and holds the claim, is dropped: if the claimer dies
the dead-worker sweep re-sends the job (``worker/recovery.py``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from echo_tts.audio import encode_stream_chunk, output_sample_rate
from jobs.audio_stream import AudioStream
from jobs.contract import (
    MAX_DELIVERIES,
    TERMINAL_STATES,
    ContractError,
    ErrorCode,
    JobState,
    SynthesisRequest,
    job_audio_key,
    job_result_key,
)
from jobs.storage import ObjectNotFound

from . import webhook_tasks
from .engine import Engine
from .job_batch import gather_company, run_together
from .job_output import Described, ProgressWriter, outcome, settle, spool, spooled
from .job_pieces import JobPieces
from .recovery import holds_claim
from .render import RenderControl, render
from .voices import resolve_speaker

log = logging.getLogger(__name__)


class ChunkPublisher:
    """Encodes each rendered piece's share of the track in the job's format and appends it to the
    job's audio stream (``jobs/audio_stream.py``), where the API answering the request reads it."""

    def __init__(self, stream: AudioStream, request: SynthesisRequest) -> None:
        self.stream, self.request = stream, request
        self.count, self.rate = 0, 0

    def __call__(self, index: int, samples: np.ndarray, sample_rate: int) -> None:
        self.rate = output_sample_rate(self.request.format, sample_rate, self.request.sample_rate)
        data = encode_stream_chunk(samples, sample_rate, self.request.format, out_sample_rate=self.request.sample_rate)
        self.stream.publish(self.request.job_id, index, data, self.rate)
        self.count = index + 1

    def finish(self) -> None:
        self.stream.finish(self.request.job_id, self.count, self.rate)


def _finish_from_storage(engine: Engine, request: SynthesisRequest) -> bool:
    """True when the audio is already stored; the record is then finished from result.json."""
    if not engine.storage.exists(job_audio_key(request.job_id, request.format)):
        return False
    try:
        result = json.loads(engine.storage.get_bytes(job_result_key(request.job_id)))
    except ObjectNotFound:
        return False  # audio without its description cannot happen in our write order: render again
    engine.jobs.mark_running(request.job_id, worker=engine.worker_name)
    engine.jobs.succeed(request.job_id, result["result"], result.get("timings"))
    log.info("job %s: result already stored, record finished without rendering", request.job_id)
    return True


def _render_to_spool(engine: Engine, request: SynthesisRequest) -> Described:
    """Render and encode into the spool; returns the result description (also spooled)."""
    earlier = spooled(request.job_id)
    if earlier is not None:
        return earlier
    started = time.monotonic()
    speaker = resolve_speaker(engine, request)
    control = RenderControl(
        cancel_requested=lambda: engine.jobs.is_cancel_requested(request.job_id),
        on_progress=ProgressWriter(engine, request.job_id),
        deadline=started + engine.settings.soft_time_limit_s,
    )
    publisher = ChunkPublisher(AudioStream(engine.jobs.r), request) if request.stream else None
    rendered = render(
        engine.pipeline,
        request,
        speaker,
        batch_size=engine.settings.batch_size,
        max_piece_bytes=engine.settings.max_piece_bytes,
        pause_s=engine.settings.segment_pause_s,
        control=control,
        on_chunk=publisher,
        kept=JobPieces(engine.storage, request, engine.model_revision),
    )
    if publisher is not None:
        publisher.finish()
    return spool(request, rendered, {"model_s": round(time.monotonic() - started, 4)})


def run_synthesis(engine: Engine, payload: dict[str, Any], *, retries: int = 0) -> dict[str, Any]:
    """Run one synthesis job to a terminal record. Raises TransientStorageError (and Redis
    connection errors) for the caller to retry; everything else ends in the record."""
    job_id = str(payload.get("job_id") or "")
    try:
        request = SynthesisRequest.from_dict(payload)
    except ContractError as exc:
        if job_id:
            engine.jobs.fail(job_id, ErrorCode.INVALID_INPUT, str(exc))
        return outcome(job_id, JobState.FAILED, error=str(exc))
    record = engine.jobs.get(job_id)
    if record is None:
        return outcome(job_id, "unknown")
    record = engine.jobs.expire_if_due(record)  # still queued past its deadline (e.g. no worker was up)
    if record.status is JobState.EXPIRED:
        log.info("job %s: queue deadline passed before it started; expired, not rendered", job_id)
    if record.status in TERMINAL_STATES:
        return outcome(job_id, record.status, skipped=True)
    if _claimed_elsewhere(engine, record.status, record.claimed_by, job_id):
        log.info("job %s: in live worker %s's batch; this message is dropped", job_id, record.claimed_by)
        return outcome(job_id, record.status, skipped=True, held_by=record.claimed_by)
    if record.claimed_by:  # its claimer died (or handed it back): this message renders it
        engine.waiting.release(job_id, record.claimed_by)
    if _finish_from_storage(engine, request):
        return outcome(job_id, JobState.SUCCEEDED, skipped=True)
    if not engine.jobs.mark_running(job_id, worker=engine.worker_name):
        if engine.jobs.is_cancel_requested(job_id):
            engine.jobs.mark_canceled(job_id)
        current = engine.jobs.get(job_id)
        return outcome(job_id, current.status if current else "unknown")
    engine.waiting.withdraw(job_id, request.to_dict())
    attempts = engine.jobs.get(job_id).attempts  # type: ignore[union-attr]
    if attempts > MAX_DELIVERIES + retries:
        engine.jobs.fail(job_id, ErrorCode.WORKER_LOST, f"the worker was lost {attempts - 1} times on this job")
        return outcome(job_id, JobState.FAILED)
    webhook_tasks.notify(engine, "job", job_id)  # started (completed is fired by the task when it ends)
    engine.busy_job = job_id
    try:
        company = gather_company(engine, request)
        if company:
            return run_together(engine, request, company, alone=lambda job: _render_to_spool(engine, job))
        return settle(engine, request, lambda: _render_to_spool(engine, request))
    finally:
        engine.busy_job = None


def _claimed_elsewhere(engine: Engine, status: JobState, claimer: str | None, job_id: str) -> bool:
    """Claimed into another live worker's batch, which answers for it (its claim entry): rendering it
    here too would only repeat that work. A claimer of this worker's own name is a dead predecessor or
    this process handing the job back (a worker renders one job at a time), so the job renders here."""
    if status is not JobState.RUNNING or not claimer or claimer == engine.worker_name:
        return False
    return holds_claim(engine.jobs.r, claimer, job_id)


def expire_delivery(engine: Engine, job_id: str, requeue: Callable[[dict[str, Any]], None]) -> str:
    """Celery dropped a synthesis message because its ``expires`` passed; returns the job's state after.

    A queued job becomes ``expired``. A running one is a job whose worker died and whose message came
    back (visibility timeout) after the deadline: its queue wait was within the deadline, so it is sent
    again without one (``requeue(record.request)``) and still finishes; the delivery count in the record
    keeps it from looping. Terminal or unknown jobs are left alone.
    """
    record = engine.jobs.get(job_id)
    if record is None:
        return "unknown"
    if record.status is JobState.QUEUED and engine.jobs.mark_expired(job_id):
        log.info("job %s: dropped by Celery past its queue deadline; expired", job_id)
        return JobState.EXPIRED
    if record.status is JobState.RUNNING:
        try:
            SynthesisRequest.from_dict(record.request)
        except ContractError as exc:
            engine.jobs.fail(job_id, ErrorCode.WORKER_LOST, f"the worker was lost and the job cannot be re-sent: {exc}")
            return JobState.FAILED
        log.warning("job %s: re-delivered after its queue deadline while running; sent again", job_id)
        requeue(record.request)
        return JobState.RUNNING
    current = engine.jobs.get(job_id)
    return current.status if current else "unknown"
