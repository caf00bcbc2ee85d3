"""The public JSON of job and book records as built from the record alone: what ``GET /v1/jobs/{id}`` and
``GET /v1/audiobooks/{id}`` answer, less what only the API can add (presigned download URLs, the worker's
heartbeat, the webhook state, a book's ETA). The API adds those on top; webhook payloads are these.
"""

from __future__ import annotations

from typing import Any

from jobs.bookstore import BookRecord
from jobs.contract import DEFAULT_FORMAT, OUTPUT_FORMATS, JobState
from jobs.jobstore import JobRecord


def job_result(record: JobRecord) -> dict[str, Any] | None:
    """A succeeded job's result: the format asked for (and its content type), the audio's figures."""
    if record.status is not JobState.SUCCEEDED or record.result is None:
        return None
    fmt = record.request.get("format", DEFAULT_FORMAT)
    figures = {k: record.result.get(k) for k in ("duration_s", "sample_rate", "bytes")}
    return {"format": fmt, "content_type": OUTPUT_FORMATS[fmt].content_type, **figures}


def job_data(record: JobRecord) -> dict[str, Any]:
    """GET /v1/jobs/{id} as built from the record alone: no download URL (``links.audio`` gives one),
    no worker heartbeat, no webhook state."""
    req = record.request
    return {
        "id": record.id,
        "status": record.status.value,
        "created_at": record.created_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "created_ts": record.created_ts,
        "started_ts": record.started_ts,
        "finished_ts": record.finished_ts,
        "progress": vars(record.progress).copy(),
        "cancel_requested": record.cancel_requested,
        "request": {
            "text": req.get("text", ""),
            "voice": req.get("voice_id"),
            "speaker_audio": bool(req.get("speaker_key")),
            **{k: req.get(k) for k in ("preset", "overrides", "seed", "format", "sample_rate", "metadata")},
        },
        "result": job_result(record),
        "error": record.error,
        "timings": record.timings,
        "links": {"self": f"/v1/jobs/{record.id}", "audio": f"/v1/jobs/{record.id}/audio"},
    }


def book_data(record: BookRecord) -> dict[str, Any]:
    """GET /v1/audiobooks/{id} as built from the record alone: no file URLs (``links`` give them)."""
    result = None
    if record.status is JobState.SUCCEEDED and record.result:
        result = {k: record.result.get(k) for k in ("duration_s", "bytes", "chapters")}
    chapters = [
        {
            "index": c.index,
            "title": c.title,
            "status": c.status,
            "segments_total": c.segments_total,
            "segments_done": c.segments_done,
            "duration_s": c.file["duration_s"] if c.file else None,
        }
        for c in record.chapters
    ]
    self_url = f"/v1/audiobooks/{record.id}"
    return {
        "id": record.id,
        "status": record.status.value,
        "title": record.title,
        "author": record.author,
        "created_at": record.created_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "progress": round(record.progress, 4),
        "segments_total": record.segments_total,
        "segments_done": record.segments_done,
        "segments_rendered": record.segments_rendered,
        "segments_cached": record.segments_cached,
        "audio_s": record.audio_s,
        "chapters": chapters,
        "result": result,
        "error": record.error,
        "request": {k: v for k, v in record.request.items() if k not in ("book_id", "owner")},
        "links": {"self": self_url, "audio": f"{self_url}/audio"},
    }
