"""Streamed speech: the answer to ``POST /v1/audio/speech`` starts with the first rendered piece.

The job is submitted with ``stream`` set; its worker appends each piece's share of the track to the job's
audio stream (``jobs/audio_stream.py``) as soon as the piece is rendered (the first piece kept short so
it comes fast). This module reads that stream and writes it to the client:

- ``stream_format: "audio"`` (OpenAI's default) with ``pcm``, ``wav`` or ``mp3``: the audio bytes, chunked
  (``wav`` behind a header whose sizes say "unknown length").
- ``stream_format: "sse"``: server-sent events as OpenAI defines them for speech,
  ``speech.audio.delta`` (``{"type", "audio": base64}``) per chunk, then ``speech.audio.done`` with
  ``usage`` (Echo-TTS reads UTF-8 bytes as its tokens: ``input_tokens`` counts them; audio is not
  counted in tokens, so ``output_tokens`` is 0). A job that fails after audio was sent ends with an
  ``error`` event carrying the usual ``{"code", "message"}``.

Nothing is sent before the first chunk: until then a failure is an ordinary status with the error
envelope, as without streaming (``api.speech.refusal``). After it, a failed or stalled job can only end
the body early (raw) or with an ``error`` event (SSE). After the last chunk the answer waits for the job
to store its file and succeed (a fraction of a second), so when it ends ``GET /v1/jobs/{id}`` has the
result, as with the whole-file answer; a job that fails then ends SSE with ``error`` instead of ``done``.
A job finished from storage without a new render (its result was stored by an earlier delivery) is
answered from the stored file in one piece. Each stream holds one gunicorn thread while it runs, as a
waiting synchronous answer does.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from flask import Response, stream_with_context

from api import jobs_service
from api.errors import APIError
from api.services import services
from jobs import contract
from jobs.audio_stream import AudioChunk, AudioStream, streaming_wav_header
from jobs.contract import JobState
from jobs.errors import ErrorCode
from jobs.jobstore import JobRecord, JobStore
from jobs.storage import ObjectNotFound, StorageError

log = logging.getLogger(__name__)

READ_BLOCK_MS = 250  # how long one read waits for the next chunk before the record is looked at
FINAL_POLL_S = 0.05  # after the last chunk, how often the record is read until the job is final


@dataclass
class _Reader:
    """Walks a job's audio stream in ``seq`` order, skipping chunks a re-delivered render sent again."""

    stream: AudioStream
    store: JobStore
    job_id: str
    stall_s: float  # give up when no chunk came for this long
    after: str = "0-0"
    next_seq: int = 0
    complete: bool = False
    record: JobRecord | None = None  # the terminal record, when the job ended without completing the stream

    def next_chunks(self) -> list[AudioChunk] | None:
        """The next chunks in order ([] after the end); None when the job ended, failed or stalled first."""
        waited_since = time.monotonic()
        while not self.complete:
            fresh = self._in_order(self.stream.read(self.job_id, self.after, block_ms=READ_BLOCK_MS))
            if fresh or self.complete:
                return fresh
            record = self.store.get(self.job_id)
            if record is None or record.status in contract.TERMINAL_STATES:
                # a last look: the worker appends the end before it stores the result
                fresh = self._in_order(self.stream.read(self.job_id, self.after, block_ms=0))
                if fresh or self.complete:
                    return fresh
                self.record = record
                return None
            if time.monotonic() - waited_since > self.stall_s:
                return None
        return []

    def wait_final(self) -> JobRecord | None:
        """After the last chunk: the job's record once it is final (it stores the file, then succeeds),
        so the answer ends when the job has; None when that takes longer than ``stall_s``."""
        try:
            self.record = jobs_service.wait_final(self.job_id, self.stall_s, poll_max_s=FINAL_POLL_S)
        except APIError:  # the record vanished (its retention ran out): nothing to wait for
            self.record = None
        return self.record

    def _in_order(self, chunks: list[AudioChunk]) -> list[AudioChunk]:
        fresh: list[AudioChunk] = []
        for chunk in chunks:
            self.after = chunk.entry_id
            if chunk.end and chunk.seq <= self.next_seq:
                self.complete = True
                break
            if chunk.seq == self.next_seq and not chunk.end:
                fresh.append(chunk)
                self.next_seq += 1
            # seq below next_seq: sent again by a re-delivered render, already written
        return fresh


def reader(record: JobRecord, timeout_s: float) -> _Reader:
    """A reader of the job's audio stream; it gives up after ``timeout_s`` without a chunk."""
    s = services()
    return _Reader(AudioStream(s.store.r), s.store, record.id, stall_s=timeout_s)


def response(reader: _Reader, first: list[AudioChunk], record: JobRecord, *, sse: bool, input_bytes: int) -> Response:
    """The streamed answer, starting with ``first`` (the reader's first chunks)."""
    fmt = str(record.request.get("format"))
    rate = first[0].rate if first else 0
    headers = {
        "X-Job-Id": record.id,
        "Location": f"/v1/jobs/{record.id}",
        "X-Seed": str(record.request.get("seed")),
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",  # a proxy in front must pass chunks on, not collect the body
    }
    if rate:
        headers["X-Audio-Sample-Rate"] = str(rate)
    body = _events(reader, first, fmt, input_bytes) if sse else _raw(reader, first, fmt)
    mimetype = "text/event-stream" if sse else _content_type(fmt, rate)
    return Response(stream_with_context(body), mimetype=mimetype, headers=headers)


def _content_type(fmt: str, rate: int) -> str:
    spec = contract.OUTPUT_FORMATS[fmt]
    return f"{spec.content_type}; rate={rate}; channels=1" if fmt == "pcm" and rate else spec.content_type


def _raw(reader: _Reader, first: list[AudioChunk], fmt: str) -> Iterator[bytes]:
    if fmt == "wav" and first:
        yield streaming_wav_header(first[0].rate)
    chunks: list[AudioChunk] | None = first
    while chunks:
        for chunk in chunks:
            yield chunk.data
        chunks = reader.next_chunks()
    final = reader.wait_final() if reader.complete else None
    if final is None or final.status is not JobState.SUCCEEDED:
        log.warning("job %s: streamed speech ended without success (%s)", reader.job_id, _why(reader))


def _events(reader: _Reader, first: list[AudioChunk], fmt: str, input_bytes: int) -> Iterator[str]:
    header = streaming_wav_header(first[0].rate) if fmt == "wav" and first else b""
    chunks: list[AudioChunk] | None = first
    while chunks:
        for chunk in chunks:
            yield _event("speech.audio.delta", {"audio": base64.b64encode(header + chunk.data).decode("ascii")})
            header = b""
        chunks = reader.next_chunks()
    final = reader.wait_final() if reader.complete else None
    if final is not None and final.status is JobState.SUCCEEDED:
        yield _event("speech.audio.done", {"usage": _usage(input_bytes)})
    else:
        yield _event("error", {"error": _why(reader)})


def _why(reader: _Reader) -> dict[str, Any]:
    record = reader.record
    if record is None and reader.complete:
        message = f"job {reader.job_id} did not store its audio within {reader.stall_s:g} s of the last chunk"
        return {"code": "timeout", "message": message}
    if record is None:
        return {"code": "timeout", "message": f"no audio from job {reader.job_id} for {reader.stall_s:g} s"}
    error = record.error or {"code": record.status.value, "message": f"job {reader.job_id} is {record.status.value}"}
    return {"code": str(error.get("code")), "message": str(error.get("message"))}


def _usage(input_bytes: int) -> dict[str, int]:
    return {"input_tokens": input_bytes, "output_tokens": 0, "total_tokens": input_bytes}


def _event(kind: str, payload: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **payload}, separators=(',', ':'))}\n\n"


def whole_file_events(record: JobRecord, input_bytes: int) -> Response:
    """The stored file as one delta (a job whose result an earlier delivery stored; nothing was streamed)."""
    try:
        data = services().storage.get_bytes(jobs_service.audio_key(record))
    except ObjectNotFound:
        raise APIError(410, ErrorCode.AUDIO_GONE, f"the audio of job {record.id} is no longer in storage") from None
    except StorageError as exc:
        raise APIError(503, ErrorCode.STORAGE_UNAVAILABLE, f"the audio of job {record.id}: {exc}") from None
    body = _event("speech.audio.delta", {"audio": base64.b64encode(data).decode("ascii")}) + _event(
        "speech.audio.done", {"usage": _usage(input_bytes)}
    )
    return Response(body, mimetype="text/event-stream", headers={"X-Job-Id": record.id})
