"""Audiobook records in Redis, shared by the API, the CPU planner/assembler and the GPU workers.

Layout (``{p}`` is the key prefix): ``{p}:book:{id}`` hash (status, request, counters, chapters) ·
``{p}:book:{id}:segments`` hash segment index → ``rendered|cached {digest}`` (where its audio is) ·
``{p}:book:{id}:chapter_done`` hash chapter → segments done · ``{p}:book:{id}:chapter_files`` hash
chapter → JSON of its assembled file · ``{p}:books:{owner}`` sorted set by created time ·
``{p}:book_idem:{owner}:{key}`` idempotency · ``{p}:book_counts`` books per state. All of a book's
keys share its TTL (renewed on every change).

Completion is counted here, atomically, instead of with Celery chords: a segment counts once however
often its group is delivered (``HSETNX``), and the caller learns how many of the chapter's segments
are done, so whoever completes a chapter (or, after a crash, whoever looks again) queues its assembly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import redis

from jobs import webhooks
from jobs.contract import JobState
from jobs.errors import ErrorCode
from jobs.jobstore import IdempotencyConflict, JobStoreError
from jobs.record_store import RecordStore
from jobs.records import RecordTimes, fingerprint, loads, new_id, opt_float
from jobs.settings import DEFAULT_BOOK_TTL_S

# KEYS: book, segments, chapter_done. ARGV: segment index, chapter, how (rendered|cached), cache digest,
# render seconds, ttl. Returns {1 if newly counted else 0, segments of the chapter done}.
_SEGMENT_DONE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, -1} end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[3] .. ' ' .. ARGV[4]) == 0 then
  return {0, tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '0')}
end
redis.call('HINCRBY', KEYS[1], 'segments_done', 1)
redis.call('HINCRBY', KEYS[1], 'segments_' .. ARGV[3], 1)
redis.call('HINCRBYFLOAT', KEYS[1], 'render_s', ARGV[5])
local done = redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[6]) end
return {1, done}
"""
# KEYS: book, segments, chapter_done. ARGV: segment index, chapter. Un-counts a done segment (its audio
# is gone), so that planning again renders it. Returns 1 when it was counted.
_SEGMENT_LOST = """
local done = redis.call('HGET', KEYS[2], ARGV[1])
if not done then return 0 end
local how = string.sub(done, 1, string.find(done, ' ', 1, true) - 1)
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'segments_done', -1)
redis.call('HINCRBY', KEYS[1], 'segments_' .. how, -1)
redis.call('HINCRBY', KEYS[3], ARGV[2], -1)
return 1
"""
# KEYS: book, chapter_files. ARGV: chapter, file JSON. Returns chapters assembled (-1: unknown book).
_CHAPTER_ASSEMBLED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return redis.call('HLEN', KEYS[2])
"""


@dataclass(frozen=True)
class ChapterProgress:
    """One chapter of a book: planned segments, segments done, and its file once assembled."""

    index: int
    title: str
    segments_total: int
    segments_done: int = 0
    file: dict[str, Any] | None = None  # {"key", "master_key", "duration_s", "samples", "bytes", "loudness"}

    @property
    def status(self) -> str:
        if self.file is not None:
            return "assembled"
        if self.segments_total and self.segments_done >= self.segments_total:
            return "assembling"
        return "rendering" if self.segments_done else "waiting"


@dataclass(frozen=True)
class BookRecord(RecordTimes):
    id: str
    owner: str
    status: JobState
    request: dict[str, Any]
    created_ts: float
    title: str = ""
    author: str | None = None
    started_ts: float | None = None
    finished_ts: float | None = None
    planned: bool = False
    segments_total: int = 0
    segments_done: int = 0
    segments_rendered: int = 0
    segments_cached: int = 0
    render_s: float = 0.0
    chapters: tuple[ChapterProgress, ...] = ()
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    cancel_requested: bool = False
    info: dict[str, Any] = field(default_factory=dict)  # source format, cover media type, characters
    webhook: dict[str, Any] | None = None  # {url, events, deliveries} (jobs.webhooks.parse_state)

    @property
    def audio_s(self) -> float:
        """Seconds of audio in the chapters assembled so far (exact: from their sample counts)."""
        return round(sum(float(c.file.get("duration_s", 0)) for c in self.chapters if c.file), 3)

    @property
    def progress(self) -> float:
        """Segments done over segments planned (0 before planning); 1.0 once succeeded."""
        if self.status is JobState.SUCCEEDED:
            return 1.0
        return self.segments_done / self.segments_total if self.segments_total else 0.0

    def eta_s(self, now: float) -> float | None:
        """Seconds left at the pace of this book's own rendering so far (None until it has one)."""
        left = self.segments_total - self.segments_done
        if self.status is not JobState.RUNNING or self.started_ts is None or not self.segments_rendered or left <= 0:
            return None
        pace = (now - self.started_ts) / max(self.segments_done, 1)
        return round(left * pace, 1)

    @classmethod
    def from_hashes(cls, h: dict[str, str], done: dict[str, str], files: dict[str, str]) -> BookRecord:
        chapters = tuple(
            ChapterProgress(
                index=int(c["index"]),
                title=str(c["title"]),
                segments_total=int(c["segments_total"]),
                segments_done=int(done.get(str(c["index"]), 0)),
                file=loads(files.get(str(c["index"]))),
            )
            for c in loads(h.get("chapters")) or []
        )
        return cls(
            id=h["id"],
            owner=h["owner"],
            status=JobState(h["status"]),
            request=loads(h.get("request")) or {},
            created_ts=float(h["created_ts"]),
            title=h.get("title", ""),
            author=h.get("author") or None,
            started_ts=opt_float(h.get("started_ts")),
            finished_ts=opt_float(h.get("finished_ts")),
            planned=h.get("planned") == "1",
            segments_total=int(h.get("segments_total") or 0),
            segments_done=int(h.get("segments_done") or 0),
            segments_rendered=int(h.get("segments_rendered") or 0),
            segments_cached=int(h.get("segments_cached") or 0),
            render_s=float(h.get("render_s") or 0),
            chapters=chapters,
            result=loads(h.get("result")),
            error=loads(h.get("error")),
            cancel_requested=h.get("cancel_requested") == "1",
            info=loads(h.get("info")) or {},
            webhook=webhooks.parse_state(h),
        )


class BookStore(RecordStore):
    """Book records and their completion counters; ``client`` must use ``decode_responses=True``."""

    kind = "book"

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "echo",
        ttl_s: int = DEFAULT_BOOK_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(client, prefix=prefix, ttl_s=ttl_s, clock=clock)
        self._segment_done = client.register_script(_SEGMENT_DONE)
        self._chapter_assembled = client.register_script(_CHAPTER_ASSEMBLED)
        self._segment_lost = client.register_script(_SEGMENT_LOST)

    # -- keys --------------------------------------------------------------------------------------
    def _key(self, book_id: str, part: str = "") -> str:
        return self._record_key(book_id) + (f":{part}" if part else "")

    def _keys(self, book_id: str) -> list[str]:
        """The record, then every key that lives and dies with it."""
        return [self._key(book_id), *(self._key(book_id, p) for p in ("segments", "chapter_done", "chapter_files"))]

    def _index(self, owner: str) -> str:
        return f"{self.prefix}:books:{owner}"

    @property
    def _counts_key(self) -> str:
        return f"{self.prefix}:book_counts"

    @property
    def _outbox_key(self) -> str:
        return f"{self.prefix}:book_outbox"

    # -- create / read -----------------------------------------------------------------------------
    def create(
        self,
        owner: str,
        request: dict[str, Any],
        *,
        title: str,
        author: str | None,
        info: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        body_fingerprint: str | None = None,
        book_id: str | None = None,
        max_active: int = 0,
        webhook: tuple[str, Iterable[str]] | None = None,
    ) -> tuple[BookRecord, bool]:
        """Store a queued book; ``(record, created)``. The same owner, Idempotency-Key and fingerprint
        return the earlier book (``created`` False); another fingerprint raises IdempotencyConflict.
        With ``max_active`` > 0, raises :class:`jobs.record_store.QuotaExceeded` when the owner has that
        many books queued or running."""
        book_id = book_id or new_id("book")
        now = self.clock()
        idem = f"{self.prefix}:book_idem:{owner}:{idempotency_key}" if idempotency_key else ""
        fields = {
            "id": book_id,
            "owner": owner,
            "status": JobState.QUEUED.value,
            "created_ts": repr(now),
            "request": json.dumps(request),
            "title": title,
            "author": author or "",
            "info": json.dumps(info or {}),
            "cancel_requested": "0",
            "planned": "0",
        }
        if webhook is not None:  # (url, events), checked by the caller (jobs.webhooks)
            fields |= webhooks.config_fields(webhook[0], list(webhook[1]))
        keys = [idem, self._key(book_id), self._index(owner), self._counts_key]
        fp = body_fingerprint or fingerprint(request)
        outcome, found = self._create_record(keys, fp, book_id, now, fields, owner=owner, max_active=max_active)
        if outcome == "conflict":
            raise IdempotencyConflict(found)
        record = self.get(found)
        if record is None:
            raise JobStoreError(f"book {found} vanished")
        return record, outcome == "created"

    def get(self, book_id: str, *, owner: str | None = None) -> BookRecord | None:
        """The record, or None when unknown, expired, or not ``owner``'s."""
        pipe = self.r.pipeline(transaction=False)
        for key in (self._key(book_id), self._key(book_id, "chapter_done"), self._key(book_id, "chapter_files")):
            pipe.hgetall(key)
        h, done, files = pipe.execute()
        if not h or (owner is not None and h.get("owner") != owner):
            return None
        return BookRecord.from_hashes(h, done, files)

    def list_books(self, owner: str, *, limit: int = 20, before: float | None = None) -> list[BookRecord]:
        """The owner's books, newest first; ``before`` (a created_ts) pages back in time."""
        top = f"({before!r}" if before is not None else "+inf"
        ids = self.r.zrevrangebyscore(self._index(owner), top, "-inf", start=0, num=limit)
        records = [self.get(book_id) for book_id in ids]
        return [r for r in records if r is not None]

    def segments_done(self, book_id: str) -> dict[int, str]:
        """Segment index → the cache digest of its audio, for every segment done."""
        done = self.r.hgetall(self._key(book_id, "segments"))
        return {int(k): v.split(" ", 1)[1] for k, v in done.items()}

    def counts_by_state(self) -> dict[JobState, int]:
        return self._counts(self._counts_key)

    # -- transitions -------------------------------------------------------------------------------
    def _move(
        self,
        book_id: str,
        allowed: Iterable[JobState],
        new: JobState,
        fields: dict[str, Any],
        *,
        refuse_if_cancel: bool = False,
    ) -> bool:
        keys = [self._key(book_id), self._counts_key, *self._keys(book_id)[1:]]
        return self._move_record(keys, allowed, new, fields, refuse_if_cancel=refuse_if_cancel)

    def mark_planned(self, book_id: str, chapters: list[dict[str, Any]], segments_total: int) -> bool:
        """queued|running → running with the plan's size: ``chapters`` [{index, title, segments_total}].
        False when the book was canceled (or cancel requested) or finished meanwhile."""
        record = self.get(book_id)
        started = record.started_ts if record and record.started_ts else self.clock()
        return self._move(
            book_id,
            [JobState.QUEUED, JobState.RUNNING],
            JobState.RUNNING,
            {
                "chapters": json.dumps(chapters),
                "segments_total": segments_total,
                "planned": "1",
                "started_ts": repr(started),
            },
            refuse_if_cancel=True,
        )

    def segment_done(
        self, book_id: str, index: int, chapter: int, digest: str, *, cached: bool, render_s: float = 0.0
    ) -> tuple[bool, int]:
        """Count segment ``index`` of ``chapter`` as done, its audio at ``cache/segments/{digest}``
        (once, however often its group is delivered); ``(newly_counted, segments of the chapter done)``."""
        how = "cached" if cached else "rendered"
        counted, done = self._segment_done(
            keys=self._keys(book_id)[:3], args=[index, chapter, how, digest, repr(float(render_s)), self.ttl]
        )
        return bool(counted), int(done)

    def segment_lost(self, book_id: str, index: int, chapter: int) -> bool:
        """Un-count segment ``index`` (its cached audio is gone), so that planning the book again renders it."""
        return bool(self._segment_lost(keys=self._keys(book_id)[:3], args=[index, chapter]))

    def chapter_assembled(self, book_id: str, chapter: int, file: dict[str, Any]) -> int:
        """Record chapter ``chapter``'s assembled file; returns how many chapters are assembled now."""
        keys = [self._key(book_id), self._key(book_id, "chapter_files")]
        return int(self._chapter_assembled(keys=keys, args=[chapter, json.dumps(file)]))

    def succeed(self, book_id: str, result: dict[str, Any]) -> bool:
        """running → succeeded with the M4B's description (key, duration_s, bytes, chapters)."""
        return self._move(
            book_id,
            [JobState.RUNNING],
            JobState.SUCCEEDED,
            {"result": json.dumps(result), "finished_ts": repr(self.clock())},
        )

    def fail(self, book_id: str, code: ErrorCode, message: str) -> bool:
        """queued|running → failed with a code and a message (done segments stay in the cache)."""
        return self._move(
            book_id,
            [JobState.QUEUED, JobState.RUNNING],
            JobState.FAILED,
            {"error": json.dumps({"code": code.value, "message": message}), "finished_ts": repr(self.clock())},
        )

    def request_cancel(self, book_id: str) -> BookRecord | None:
        """queued|running → canceled at once (segment groups still queued see it and stop; done
        segments stay in the cache); finished books are left as they are. Idempotent."""
        self._move(
            book_id,
            [JobState.QUEUED, JobState.RUNNING],
            JobState.CANCELED,
            {"cancel_requested": "1", "finished_ts": repr(self.clock())},
        )
        return self.get(book_id)

    def is_stopped(self, book_id: str) -> bool:
        """True when the book's segments should not be rendered (canceled, failed, gone)."""
        status = self.r.hget(self._key(book_id), "status")
        return status not in (JobState.QUEUED.value, JobState.RUNNING.value)

    def reopen(self, book_id: str) -> bool:
        """failed|canceled → queued again for a retry: the error and the cancel flag are cleared, the
        segments already done stay counted (only failed or missing ones render again)."""
        return self._move(
            book_id,
            [JobState.FAILED, JobState.CANCELED],
            JobState.QUEUED,
            {"error": "", "cancel_requested": "0", "finished_ts": "", **webhooks.reset_fields()},
        )

    # -- webhook delivery state (jobs.webhooks), in the book's own hash ------------------------------
