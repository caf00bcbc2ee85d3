"""Live progress as server-sent events: ``GET /v1/jobs/{id}/events`` and ``GET /v1/audiobooks/{id}/events``.

How: workers have no push channel to the API, so each stream polls its record in Redis every
``POLL_S`` (0.25 s: one ``HGETALL`` for a job, one pipelined read of three hashes for a book) and writes
an event whenever the part of the record a client watches changes. Auth and ownership are GET's: no key
is 401; an unknown id and another key's id are 404 (JSON, before any stream starts).

Events (``text/event-stream``)::

    retry: 2000                                      first, once: reconnect 2 s after a drop
    id: <state id> / event: progress / data: <view>  whenever the state id changes
    id: <state id> / event: done / data: <view>      the terminal view (succeeded, failed, canceled,
                                                     expired), then the stream closes
    event: gone / data: {"error": {...}}             the record vanished (its retention ran out), then close
    : keep-alive                                     a comment after HEARTBEAT_S (15 s) without a write

``<view>`` is the same JSON as ``GET /v1/jobs/{id}`` or ``GET /v1/audiobooks/{id}`` at that moment (result
URLs presigned afresh), on one line.

The state id is what a client watches, encoded (dot-separated): for a job ``status.fraction*10^4.
segments_done.segments_total.step.total_steps.cancel_requested``; for a book ``status.planned.
segments_done.segments_total.chapters_assembled.cancel_requested.finished_ms``. A worker's heartbeat, an
ETA or a fresh presigned URL alone makes no event (they ride along in the next one).

Resuming: the stream carries states, not a log: the one event it can ever send is the current state. A
request with ``Last-Event-ID`` equal to the current state id is not sent that state again; its first
event is the next change. Ids are compared for equality, not order, so they need not be monotonic (a
retried book goes from failed back to queued, and its id changes with it). A finished record always
answers its done event and closes, whatever ``Last-Event-ID`` says: clients close their EventSource on
``done`` (an EventSource reconnects whenever a stream ends).

Lifetime: a stream ends after ``MAX_STREAM_S`` (10 minutes) without ``done``; the client reconnects with
``Last-Event-ID`` (an EventSource does so by itself) and misses nothing, as above. A client that went
away is noticed at the next write, within ``HEARTBEAT_S``, and its slot freed.

Shutdown: gunicorn's graceful stop (SIGTERM) waits for open requests; ``python -m api`` calls
``end_streams_on_signal`` so open streams end within ``POLL_S`` instead and their clients reconnect with
``Last-Event-ID`` (to a process that still runs).

Capacity: an open stream holds one gunicorn thread (gthread) for its whole life. ``python -m api`` runs
``--threads`` threads for ordinary requests plus ``--streams`` (``DEFAULT_STREAMS``, 32) more per process
for streams; a stream beyond that number answers 503 ``unavailable`` with ``Retry-After``, so streams never
starve ordinary requests. tests/service/test_api_events.py opens every slot of one process at once and
checks that each stream gets the events, that one more is 503 and that GET still answers. Measured on 2
shared cores: 32 streams got a change within 0.24 s (GET: 2 ms); ``--streams 96`` (the most with the
default ``--threads 4``: threads may not exceed the Redis pool's 100) 96 within 0.22 s at 9% of a core
(docs/api.md, "Live progress").
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

import redis
from flask import Blueprint, Flask, Response, current_app, request, stream_with_context
from flask.blueprints import BlueprintSetupState

from api import books_service, jobs_service
from api.auth import authenticate, current_owner
from api.errors import APIError
from jobs.contract import TERMINAL_STATES
from jobs.errors import ErrorCode

POLL_S = 0.25
HEARTBEAT_S = 15.0
MAX_STREAM_S = 600.0
RETRY_MS = 2000
DEFAULT_STREAMS = 32  # stream slots per API process (``python -m api --streams``)
_SLOTS = "echo_event_slots"

log = logging.getLogger(__name__)
_draining = threading.Event()  # set when this process is stopping: open streams end

bp = Blueprint("events", __name__)
bp.before_request(authenticate)


@dataclass(frozen=True)
class State:
    """A record as a stream sees it: its state id, whether it is final, and its public view (built only
    when it is sent: presigning and heartbeat look-ups are not free)."""

    id: str
    terminal: bool
    view: Callable[[], dict[str, Any]]


class StreamSlots:
    """At most ``size`` streams at once in this process (one gunicorn thread each)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = threading.BoundedSemaphore(size)

    def take(self) -> Callable[[], None]:
        """A slot, or 503 when all are taken; returns its release (safe to call more than once)."""
        if not self._free.acquire(blocking=False):
            raise APIError(
                503,
                ErrorCode.UNAVAILABLE,
                f"this API process already holds its {self.size} event streams (python -m api --streams); "
                "reconnect later or poll GET",
                {"streams": self.size},
                headers={"Retry-After": "5"},
            )
        once = threading.Lock()

        def release() -> None:
            if once.acquire(blocking=False):
                self._free.release()

        return release


def set_stream_slots(app: Flask, size: int) -> None:
    """How many streams ``app`` holds at once (``python -m api`` sets it from ``--streams``)."""
    app.extensions[_SLOTS] = StreamSlots(max(int(size), 1))


def end_streams_on_signal(signum: int = signal.SIGTERM) -> None:
    """End open streams when this process gets ``signum``, then run the handler that was there (gunicorn's
    graceful stop). Call it from the main thread of the serving process."""
    previous = signal.getsignal(signum)

    def handler(sig: int, frame: FrameType | None) -> None:
        _draining.set()
        if callable(previous):
            previous(sig, frame)

    signal.signal(signum, handler)


@bp.record_once
def _default_slots(state: BlueprintSetupState) -> None:
    state.app.extensions.setdefault(_SLOTS, StreamSlots(DEFAULT_STREAMS))


def _job_state(owner: str, job_id: str) -> State:
    record = jobs_service.get_owned(owner, job_id)
    p = record.progress
    parts = (round(p.fraction * 10_000), p.segments_done, p.segments_total, p.step, p.total_steps)
    sid = ".".join([record.status.value, *map(str, parts), str(int(record.cancel_requested))])
    return State(sid, record.status in TERMINAL_STATES, lambda: jobs_service.view(record))


def _book_state(owner: str, book_id: str) -> State:
    record = books_service.get_owned(owner, book_id)
    assembled = sum(1 for c in record.chapters if c.file is not None)
    finished_ms = round((record.finished_ts or 0) * 1000)
    parts = (
        int(record.planned),
        record.segments_done,
        record.segments_total,
        assembled,
        int(record.cancel_requested),
        finished_ms,
    )
    sid = ".".join([record.status.value, *map(str, parts)])
    return State(sid, record.status in TERMINAL_STATES, lambda: books_service.view(record))


def event(name: str, data: dict[str, Any], event_id: str | None = None) -> str:
    """One SSE event; ``data`` as one line of JSON."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def events(
    read: Callable[[], State],
    last_id: str | None,
    *,
    poll_s: float = POLL_S,
    heartbeat_s: float = HEARTBEAT_S,
    max_s: float = MAX_STREAM_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[str]:
    """The stream's text: poll ``read`` until the record is final, gone, or ``max_s`` has passed."""
    started = last_write = clock()
    yield f"retry: {RETRY_MS}\n\n"
    sent = last_id
    while True:
        try:
            state = read()
        except APIError as exc:  # the record expired or was removed while watched
            yield event("gone", {"error": {"code": exc.code, "message": exc.message, "details": exc.details}})
            return
        except redis.RedisError as exc:  # end it: the client reconnects with Last-Event-ID
            log.warning("event stream ended: Redis is unavailable: %s", exc)
            return
        if state.terminal:
            yield event("done", state.view(), state.id)
            return
        now = clock()
        if state.id != sent:
            yield event("progress", state.view(), state.id)
            sent, last_write = state.id, now
        elif now - last_write >= heartbeat_s:
            yield ": keep-alive\n\n"
            last_write = now
        if now - started >= max_s or _draining.is_set():
            return
        sleep(poll_s)


def _stream(read: Callable[[], State]) -> Response:
    read()  # 404 (unknown, or another key's) before any stream starts
    release = current_app.extensions[_SLOTS].take()
    try:
        last_id = request.headers.get("Last-Event-ID") or None
        response = Response(stream_with_context(events(read, last_id)), mimetype="text/event-stream")
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Accel-Buffering"] = "no"
        response.call_on_close(release)
    except BaseException:
        release()
        raise
    return response


@bp.get("/v1/jobs/<job_id>/events")
def job_events(job_id: str) -> Response:
    owner = current_owner()
    return _stream(lambda: _job_state(owner, job_id))


@bp.get("/v1/audiobooks/<book_id>/events")
def book_events(book_id: str) -> Response:
    owner = current_owner()
    return _stream(lambda: _book_state(owner, book_id))
