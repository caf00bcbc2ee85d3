"""What becomes of a rendered job: its file and description spooled on local disk, uploaded, and the
record finished — or failed with the error code its exception maps to. Shared by a job rendered alone
(``worker/runner.py``) and jobs rendered together (``worker/job_batch.py``).

Rendered bytes are spooled until uploaded, so a storage retry on the same machine uploads without
rendering again; ``result.json`` is uploaded before the audio, whose presence means both are there.
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

import torch

from echo_tts.errors import InvalidAudio, InvalidInput, TextTooLong, UnsupportedFormat
from jobs.contract import OUTPUT_FORMATS, ErrorCode, JobState, SynthesisRequest, job_audio_key, job_result_key
from jobs.render_stats import RenderStats
from jobs.storage import StorageError, TransientStorageError

from . import webhook_tasks
from .engine import Engine
from .job_pieces import clear_pieces
from .render import ProgressReport, RenderCancelled, Rendered, RenderTimeLimit, encode_output
from .voices import JobFailure

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 0.2  # progress writes per job are throttled to this interval (the last one always lands)
Described = dict[str, Any]  # {"result": {...}, "timings": {...}}: what result.json holds


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


def outcome(job_id: str, status: str, **extra: Any) -> dict[str, Any]:
    """What a synthesis task returns."""
    return {"job_id": job_id, "status": status, **extra}


def spool_dir(job_id: str) -> Path:
    return Path(tempfile.gettempdir()) / "echo-tts-spool" / job_id


def spooled(job_id: str) -> Described | None:
    """The description of a job rendered and encoded by an earlier delivery on this machine."""
    spool = spool_dir(job_id)
    described = spool / "result.json"
    if described.exists() and (spool / "audio").exists():
        return dict(json.loads(described.read_text()))
    return None


def spool(request: SynthesisRequest, rendered: Rendered, timings: dict[str, Any]) -> Described:
    """Encode the track in the job's format and spool it with its description; returns the description.
    ``timings`` holds the model's share (``model_s``); the encoding's is added."""
    begun = time.monotonic()
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
    timings = {**timings, "encode_s": round(time.monotonic() - begun, 4)}
    folder = spool_dir(request.job_id)
    folder.mkdir(parents=True, exist_ok=True)
    _write_atomic(folder / "audio", data)  # audio first: result.json marks a complete spool
    _write_atomic(folder / "result.json", json.dumps({"result": result, "timings": timings}).encode())
    return {"result": result, "timings": timings}


def _write_atomic(path: Path, data: bytes) -> None:
    """A worker killed mid-write leaves a temporary file, never a truncated one under ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _upload(engine: Engine, request: SynthesisRequest, described: Described) -> None:
    """result.json first, then the audio (the audio's presence means both are there)."""
    folder = spool_dir(request.job_id)
    began = time.monotonic()
    engine.storage.put_bytes(
        job_result_key(request.job_id), json.dumps(described).encode(), content_type="application/json"
    )
    ext = OUTPUT_FORMATS[request.format].extension
    with (folder / "audio").open("rb") as audio:
        engine.storage.put_file(
            job_audio_key(request.job_id, request.format),
            audio,
            content_type=described["result"]["content_type"],
            filename=f"{request.job_id}.{ext}",
        )
    described["timings"]["upload_s"] = round(time.monotonic() - began, 4)


def clear_spool(engine: Engine, job_id: str) -> None:
    """The local spool and the kept pieces: the job is final, nothing will render it again."""
    clear_pieces(engine.storage, job_id)
    folder = spool_dir(job_id)
    for path in folder.glob("*"):
        path.unlink(missing_ok=True)
    if folder.exists():
        folder.rmdir()


def settle(engine: Engine, request: SynthesisRequest, produce: Callable[[], Described]) -> dict[str, Any]:
    """Run ``produce`` (render and spool, or hand over what was spooled), upload, and finish the record:
    succeeded, canceled, or failed with the code the exception maps to. Raises TransientStorageError
    (the task retries) and unexpected errors (``render_failed``, recorded by the task)."""
    job_id = request.job_id
    try:
        described = produce()
        if engine.jobs.is_cancel_requested(job_id):
            raise RenderCancelled("canceled before upload")
        _upload(engine, request, described)
    except RenderCancelled:
        engine.jobs.mark_canceled(job_id)
        clear_spool(engine, job_id)
        return outcome(job_id, JobState.CANCELED)
    except RenderTimeLimit as exc:
        return fail(engine, job_id, ErrorCode.TIME_LIMIT, f"{exc} ({engine.settings.soft_time_limit_s:g} s)")
    except JobFailure as exc:
        return fail(engine, job_id, exc.code, exc.message)
    except InvalidInput as exc:
        return fail(engine, job_id, _error_code(exc), str(exc))
    except TransientStorageError:
        raise
    except StorageError as exc:
        return fail(engine, job_id, ErrorCode.STORAGE_UNAVAILABLE, str(exc))
    except Exception as exc:  # out of memory fails this job only; anything else is render_failed (tasks.py)
        if not is_out_of_memory(exc):
            raise
        return fail(engine, job_id, ErrorCode.OUT_OF_MEMORY, out_of_memory_message(engine, job_id, exc))
    engine.jobs.succeed(job_id, described["result"], described["timings"])
    RenderStats(engine.jobs.r, prefix=engine.jobs.prefix).job_rendered(described["result"], described["timings"])
    clear_spool(engine, job_id)
    return outcome(job_id, JobState.SUCCEEDED, key=described["result"]["key"])


def _error_code(exc: InvalidInput) -> ErrorCode:
    if isinstance(exc, TextTooLong):
        return ErrorCode.TEXT_TOO_LONG
    if isinstance(exc, InvalidAudio):
        return ErrorCode.INVALID_AUDIO
    if isinstance(exc, UnsupportedFormat):
        return ErrorCode.UNSUPPORTED_FORMAT
    return ErrorCode.INVALID_INPUT


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's (``torch.OutOfMemoryError``), Python's, or torch's CPU allocator refusing (a RuntimeError)."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)


def free_after_out_of_memory(exc: BaseException) -> str:
    """Free what the failed render held, so the worker serves the next job: the traceback's frames (and
    their tensors) are cleared, then CUDA's cache. Returns a short description of the error."""
    detail = f"{type(exc).__name__}: {str(exc)[:300]}"
    if exc.__traceback__ is not None:
        traceback.clear_frames(exc.__traceback__)
        exc.__traceback__ = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return detail


def out_of_memory_message(engine: Engine, job_id: str, exc: BaseException) -> str:
    detail = free_after_out_of_memory(exc)
    log.warning("job %s ran out of memory: %s", job_id, detail)
    return (
        f"out of memory while rendering ({detail}); send a shorter text, or lower the worker's "
        f"ECHO_BATCH_SIZE (now {engine.settings.batch_size}) so fewer pieces render at once"
    )


def fail(engine: Engine, job_id: str, code: str, message: str) -> dict[str, Any]:
    engine.jobs.fail(job_id, code, message)
    clear_spool(engine, job_id)
    return outcome(job_id, JobState.FAILED, error={"code": code, "message": message})


def fail_unexpected(engine: Engine, job_id: str, exc: BaseException) -> None:
    """Record an unexpected error (a bug or the model failing) as render_failed."""
    engine.jobs.fail(job_id, ErrorCode.RENDER_FAILED, f"{type(exc).__name__}: {exc}")
    clear_spool(engine, job_id)
