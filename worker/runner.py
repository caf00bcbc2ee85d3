"""What the tasks do, without Celery: run one synthesis job or encode one voice.

Re-delivery is safe: the audio key is deterministic (``jobs/{id}/audio.{ext}``) and its
result description (``jobs/{id}/result.json``) is written before it. A task that finds the
audio never renders or uploads again; if the record does not say succeeded yet, it finishes
the record from the stored description. Rendered bytes are also spooled on local disk until
uploaded, so a storage retry on the same machine uploads without rendering again.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from echo_tts.audio import encode_stream_chunk, output_sample_rate
from echo_tts.errors import InvalidAudio, InvalidInput, TextTooLong, UnsupportedFormat
from jobs.audio_stream import AudioStream
from jobs.contract import (
    MAX_DELIVERIES,
    OUTPUT_FORMATS,
    TERMINAL_STATES,
    ContractError,
    ErrorCode,
    JobState,
    SynthesisRequest,
    job_audio_key,
    job_result_key,
)
from jobs.render_stats import RenderStats
from jobs.storage import ObjectNotFound, StorageError, TransientStorageError

from . import webhook_tasks
from .engine import Engine
from .job_pieces import JobPieces, clear_pieces
from .render import ProgressReport, RenderCancelled, RenderControl, RenderTimeLimit, encode_output, render
from .voices import JobFailure, resolve_speaker

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 0.2  # progress writes per job are throttled to this interval (the last one always lands)


def _outcome(job_id: str, status: str, **extra: Any) -> dict[str, Any]:
    return {"job_id": job_id, "status": status, **extra}


def _error_code(exc: InvalidInput) -> ErrorCode:
    if isinstance(exc, TextTooLong):
        return ErrorCode.TEXT_TOO_LONG
    if isinstance(exc, InvalidAudio):
        return ErrorCode.INVALID_AUDIO
    if isinstance(exc, UnsupportedFormat):
        return ErrorCode.UNSUPPORTED_FORMAT
    return ErrorCode.INVALID_INPUT


class ProgressWriter:
    """Writes render progress to the job record, at most every PROGRESS_EVERY_S (the job store
    refuses updates that would move backwards)."""

    def __init__(self, engine: Engine, job_id: str) -> None:
        self.engine, self.job_id, self.last = engine, job_id, 0.0

    def __call__(self, report: ProgressReport) -> None:
        now = time.monotonic()
        final = report.segments_done == report.segments_total
        if not final and now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        self.engine.jobs.update_progress(
            self.job_id,
            fraction=report.fraction,
            step=report.step,
            total_steps=report.total_steps,
            segments_done=report.segments_done,
            segments_total=report.segments_total,
        )
        webhook_tasks.progress(self.engine, "job", self.job_id)  # throttled: ECHO_WEBHOOK_PROGRESS_INTERVAL_S


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


def _spool_dir(job_id: str) -> Path:
    return Path(tempfile.gettempdir()) / "echo-tts-spool" / job_id


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


def _render_to_spool(engine: Engine, request: SynthesisRequest) -> dict[str, Any]:
    """Render and encode into the spool; returns the result description (also spooled)."""
    spool = _spool_dir(request.job_id)
    described = spool / "result.json"
    if described.exists() and (spool / "audio").exists():
        return dict(json.loads(described.read_text()))
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
    model_done = time.monotonic()
    data = encode_output(rendered, request.format, request.sample_rate)
    fmt = OUTPUT_FORMATS[request.format]
    result = {
        "key": job_audio_key(request.job_id, request.format),
        "format": request.format,
        "content_type": fmt.content_type,
        "duration_s": round(rendered.duration_s, 4),
        "sample_rate": 48000 if request.format == "opus" else (request.sample_rate or rendered.sample_rate),
        "bytes": len(data),
        "seed": request.seed,
        "pieces": rendered.pieces,
        "model_revision": rendered.model_revision,
    }
    timings = {"model_s": round(model_done - started, 4), "encode_s": round(time.monotonic() - model_done, 4)}
    spool.mkdir(parents=True, exist_ok=True)
    _write_atomic(spool / "audio", data)  # audio first: result.json marks a complete spool
    _write_atomic(described, json.dumps({"result": result, "timings": timings}).encode())
    return {"result": result, "timings": timings}


def _write_atomic(path: Path, data: bytes) -> None:
    """A worker killed mid-write leaves a temporary file, never a truncated one under ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _upload(engine: Engine, request: SynthesisRequest, described: dict[str, Any]) -> None:
    """result.json first, then the audio (the audio's presence means both are there)."""
    spool = _spool_dir(request.job_id)
    began = time.monotonic()
    engine.storage.put_bytes(
        job_result_key(request.job_id), json.dumps(described).encode(), content_type="application/json"
    )
    ext = OUTPUT_FORMATS[request.format].extension
    with (spool / "audio").open("rb") as audio:
        engine.storage.put_file(
            job_audio_key(request.job_id, request.format),
            audio,
            content_type=described["result"]["content_type"],
            filename=f"{request.job_id}.{ext}",
        )
    described["timings"]["upload_s"] = round(time.monotonic() - began, 4)


def _clear_spool(engine: Engine, job_id: str) -> None:
    """The local spool and the kept pieces: the job is final, nothing will render it again."""
    clear_pieces(engine.storage, job_id)
    _clear_local_spool(job_id)


def _clear_local_spool(job_id: str) -> None:
    spool = _spool_dir(job_id)
    for path in spool.glob("*"):
        path.unlink(missing_ok=True)
    if spool.exists():
        spool.rmdir()


def run_synthesis(engine: Engine, payload: dict[str, Any], *, retries: int = 0) -> dict[str, Any]:
    """Run one synthesis job to a terminal record. Raises TransientStorageError (and Redis
    connection errors) for the caller to retry; everything else ends in the record."""
    job_id = str(payload.get("job_id") or "")
    try:
        request = SynthesisRequest.from_dict(payload)
    except ContractError as exc:
        if job_id:
            engine.jobs.fail(job_id, ErrorCode.INVALID_INPUT, str(exc))
        return _outcome(job_id, JobState.FAILED, error=str(exc))
    record = engine.jobs.get(job_id)
    if record is None:
        return _outcome(job_id, "unknown")
    record = engine.jobs.expire_if_due(record)  # still queued past its deadline (e.g. no worker was up)
    if record.status is JobState.EXPIRED:
        log.info("job %s: queue deadline passed before it started; expired, not rendered", job_id)
    if record.status in TERMINAL_STATES:
        return _outcome(job_id, record.status, skipped=True)
    if _finish_from_storage(engine, request):
        return _outcome(job_id, JobState.SUCCEEDED, skipped=True)
    if not engine.jobs.mark_running(job_id, worker=engine.worker_name):
        if engine.jobs.is_cancel_requested(job_id):
            engine.jobs.mark_canceled(job_id)
        current = engine.jobs.get(job_id)
        return _outcome(job_id, current.status if current else "unknown")
    attempts = engine.jobs.get(job_id).attempts  # type: ignore[union-attr]
    if attempts > MAX_DELIVERIES + retries:
        engine.jobs.fail(job_id, ErrorCode.WORKER_LOST, f"the worker was lost {attempts - 1} times on this job")
        return _outcome(job_id, JobState.FAILED)
    webhook_tasks.notify(engine, "job", job_id)  # started (completed is fired by the task when it ends)
    engine.busy_job = job_id
    try:
        return _render_and_store(engine, request)
    finally:
        engine.busy_job = None


def _render_and_store(engine: Engine, request: SynthesisRequest) -> dict[str, Any]:
    job_id = request.job_id
    try:
        described = _render_to_spool(engine, request)
        if engine.jobs.is_cancel_requested(job_id):
            raise RenderCancelled("canceled before upload")
        _upload(engine, request, described)
    except RenderCancelled:
        engine.jobs.mark_canceled(job_id)
        _clear_spool(engine, job_id)
        return _outcome(job_id, JobState.CANCELED)
    except RenderTimeLimit as exc:
        return _fail(engine, job_id, ErrorCode.TIME_LIMIT, f"{exc} ({engine.settings.soft_time_limit_s:g} s)")
    except JobFailure as exc:
        return _fail(engine, job_id, exc.code, exc.message)
    except InvalidInput as exc:
        return _fail(engine, job_id, _error_code(exc), str(exc))
    except TransientStorageError:
        raise
    except StorageError as exc:
        return _fail(engine, job_id, ErrorCode.STORAGE_UNAVAILABLE, str(exc))
    except Exception as exc:  # out of memory fails this job only; anything else is render_failed (tasks.py)
        if not _is_out_of_memory(exc):
            raise
        return _out_of_memory(engine, job_id, exc)
    engine.jobs.succeed(job_id, described["result"], described["timings"])
    RenderStats(engine.jobs.r, prefix=engine.jobs.prefix).job_rendered(described["result"], described["timings"])
    _clear_spool(engine, job_id)
    return _outcome(job_id, JobState.SUCCEEDED, key=described["result"]["key"])


def _is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's (``torch.OutOfMemoryError``), Python's, or torch's CPU allocator refusing (a RuntimeError)."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)


def _out_of_memory(engine: Engine, job_id: str, exc: BaseException) -> dict[str, Any]:
    """Fail the job with ``out_of_memory`` after freeing what the failed render held, so the worker
    serves the next job: the traceback's frames (and their tensors) are cleared, then CUDA's cache."""
    detail = f"{type(exc).__name__}: {str(exc)[:300]}"
    if exc.__traceback__ is not None:
        traceback.clear_frames(exc.__traceback__)
        exc.__traceback__ = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    log.warning("job %s ran out of memory: %s", job_id, detail)
    message = (
        f"out of memory while rendering ({detail}); send a shorter text, or lower the worker's "
        f"ECHO_BATCH_SIZE (now {engine.settings.batch_size}) so fewer pieces render at once"
    )
    return _fail(engine, job_id, ErrorCode.OUT_OF_MEMORY, message)


def _fail(engine: Engine, job_id: str, code: str, message: str) -> dict[str, Any]:
    engine.jobs.fail(job_id, code, message)
    _clear_spool(engine, job_id)
    return _outcome(job_id, JobState.FAILED, error={"code": code, "message": message})


def fail_unexpected(engine: Engine, job_id: str, exc: BaseException) -> None:
    """Record an unexpected error (a bug or the model failing) as render_failed."""
    engine.jobs.fail(job_id, ErrorCode.RENDER_FAILED, f"{type(exc).__name__}: {exc}")
    _clear_spool(engine, job_id)


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
