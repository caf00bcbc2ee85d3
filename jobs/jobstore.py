"""Job records in our own Redis hashes, shared by the API and the worker (torch-free, Celery-free).

Layout (``{p}`` is the key prefix, ``echo`` by default):
``{p}:job:{id}`` hash with a TTL (result retention) · ``{p}:jobs:{owner}`` sorted set of job ids by
created time · ``{p}:idem:{owner}:{key}`` → ``fingerprint job_id`` (same TTL as the job) ·
``{p}:job_counts`` hash of jobs per state, moved by the same scripts that move a job ·
``{p}:outbox`` sorted set of jobs stored whose message the API has not yet reported sent ·
``echo:heartbeat:{name}`` (``jobs.contract.heartbeat_key``) heartbeat JSON with a TTL. Voices live in
:mod:`jobs.voicestore`, a store of their own on the same Redis.

Every state change is one Lua script, so the API and any number of workers may race freely:
``queued → running → succeeded | failed | canceled`` and ``queued → canceled | expired``. A job created
with a queue timeout carries ``deadline_ts``; only a job still queued past it expires (never a running one).
"""

from __future__ import annotations

import json
import time
from base64 import urlsafe_b64decode, urlsafe_b64encode
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import redis

from jobs import webhooks
from jobs.contract import (
    BROKER_UNACKED_KEY,
    HEARTBEAT_PATTERN,
    HEARTBEAT_TTL_S,
    ErrorCode,
    JobState,
    broker_queue_keys,
    heartbeat_key,
)
from jobs.errors import ServiceError
from jobs.record_store import RecordStore
from jobs.records import RecordTimes, fingerprint, iso, loads, new_id, opt_float
from jobs.settings import DEFAULT_JOB_TTL_S

# ARGV: fraction, step, total_steps, segments_done, segments_total. Refuses to move backwards.
_PROGRESS = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
local cur = tonumber(redis.call('HGET', KEYS[1], 'progress_fraction') or '0')
local done = tonumber(redis.call('HGET', KEYS[1], 'segments_done') or '0')
if tonumber(ARGV[1]) < cur or tonumber(ARGV[4]) < done then return 0 end
redis.call('HSET', KEYS[1], 'progress_fraction', ARGV[1], 'step', ARGV[2], 'total_steps', ARGV[3],
  'segments_done', ARGV[4], 'segments_total', ARGV[5])
return 1
"""


class JobStoreError(ServiceError):
    """Raised when the job store is used wrongly (root of this module's errors)."""


class IdempotencyConflict(JobStoreError):
    """Raised when an Idempotency-Key is reused with a different request body."""

    code = ErrorCode.IDEMPOTENCY_CONFLICT

    def __init__(self, job_id: str) -> None:
        super().__init__(f"Idempotency-Key already used for job {job_id} with a different body")
        self.job_id = job_id


class InvalidCursor(JobStoreError):
    """Raised when a pagination cursor was not produced by this store."""

    code = ErrorCode.INVALID_REQUEST


@dataclass(frozen=True)
class RecordedProgress:
    fraction: float = 0.0
    step: int = 0
    total_steps: int = 0
    segments_done: int = 0
    segments_total: int = 0


@dataclass(frozen=True)
class JobRecord(RecordTimes):
    id: str
    owner: str
    status: JobState
    request: dict[str, Any]
    created_ts: float
    started_ts: float | None = None
    finished_ts: float | None = None
    progress: RecordedProgress = field(default_factory=RecordedProgress)
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    timings: dict[str, Any] | None = None
    cancel_requested: bool = False
    attempts: int = 0
    deadline_ts: float | None = None  # queued past this (epoch seconds), the job expires unrendered
    queue_timeout_s: float | None = None  # the setting's value that deadline_ts came from
    worker: str | None = None  # the worker that started it last (its heartbeat says whether it lives)
    claimed_by: str | None = None  # the worker that took it into another job's sampler call (jobs/company.py)
    webhook: dict[str, Any] | None = None  # {url, events, deliveries} (jobs.webhooks.parse_state)

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> JobRecord:
        return cls(
            id=h["id"],
            owner=h["owner"],
            status=JobState(h["status"]),
            request=loads(h.get("request")) or {},
            created_ts=float(h["created_ts"]),
            started_ts=opt_float(h.get("started_ts")),
            finished_ts=opt_float(h.get("finished_ts")),
            progress=RecordedProgress(
                float(h.get("progress_fraction") or 0),
                int(h.get("step") or 0),
                int(h.get("total_steps") or 0),
                int(h.get("segments_done") or 0),
                int(h.get("segments_total") or 0),
            ),
            result=loads(h.get("result")),
            error=loads(h.get("error")),
            timings=loads(h.get("timings")),
            cancel_requested=h.get("cancel_requested") == "1",
            attempts=int(h.get("attempts") or 0),
            deadline_ts=opt_float(h.get("deadline_ts")),
            queue_timeout_s=opt_float(h.get("queue_timeout_s")),
            worker=h.get("worker") or None,
            claimed_by=h.get("claimed_by") or None,
            webhook=webhooks.parse_state(h),
        )


class JobStore(RecordStore):
    """Job records and worker heartbeats in Redis. ``client`` must use ``decode_responses=True``."""

    kind = "job"

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "echo",
        job_ttl_s: int = DEFAULT_JOB_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(client, prefix=prefix, ttl_s=job_ttl_s, clock=clock)
        self._progress = client.register_script(_PROGRESS)

    def _job_key(self, job_id: str) -> str:
        return self._record_key(job_id)

    def _index_key(self, owner: str) -> str:
        return f"{self.prefix}:jobs:{owner}"

    @property
    def _counts_key(self) -> str:
        return f"{self.prefix}:job_counts"

    @property
    def _outbox_key(self) -> str:
        return f"{self.prefix}:outbox"

    # -- service health and metrics --------------------------------------------------------------
    def ping(self) -> None:
        """Raise ``redis.RedisError`` when Redis cannot be reached."""
        self.r.ping()

    def counts_by_state(self) -> dict[JobState, int]:
        """Jobs per state, kept by the transitions themselves (no scan). ``queued`` and ``running`` are
        the jobs in that state now; the finished states count every job that reached them since the
        counters began (records expire after the TTL; these numbers do not go down)."""
        return self._counts(self._counts_key)

    def queue_depths(self, queues: Iterable[str]) -> tuple[dict[str, int], int]:
        """``({queue: messages waiting}, messages taken and not yet acknowledged)``, read from the
        broker's lists (the broker is this Redis; its key names are in the contract)."""
        names = list(queues)
        pipe = self.r.pipeline(transaction=False)
        for queue in names:
            for key in broker_queue_keys(queue):
                pipe.llen(key)
        pipe.hlen(BROKER_UNACKED_KEY)
        *lengths, unacked = pipe.execute()
        per = len(lengths) // len(names) if names else 0
        return {q: sum(lengths[i * per : (i + 1) * per]) for i, q in enumerate(names)}, int(unacked)

    # -- create / read ---------------------------------------------------------------------------
    def create(
        self,
        owner: str,
        request: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        body_fingerprint: str | None = None,
        job_id: str | None = None,
        queue_timeout_s: float | None = None,
        max_active: int = 0,
        webhook: tuple[str, Iterable[str]] | None = None,
    ) -> tuple[JobRecord, bool]:
        """Store a queued job; returns ``(record, created)``. With an idempotency key, the same owner,
        key and fingerprint (default: hash of ``request``) return the earlier job with ``created=False``;
        another fingerprint raises :class:`IdempotencyConflict`. With ``queue_timeout_s`` the record gets
        ``deadline_ts = now + queue_timeout_s``: still queued after that, it expires. With ``max_active``
        > 0, raises :class:`jobs.record_store.QuotaExceeded` when the owner has that many jobs queued or
        running (an idempotent replay is answered first). ``webhook`` is ``(url, events)``, checked by the
        caller (jobs.webhooks)."""
        job_id = job_id or new_id("job")
        now = self.clock()
        fp = body_fingerprint or fingerprint(request)
        idem = f"{self.prefix}:idem:{owner}:{idempotency_key}" if idempotency_key else ""
        fields = {
            "id": job_id,
            "owner": owner,
            "status": JobState.QUEUED.value,
            "created_ts": repr(now),
            "request": json.dumps(request),
            "attempts": "0",
            "cancel_requested": "0",
        }
        if queue_timeout_s is not None:
            timeout = float(queue_timeout_s)
            fields |= {"deadline_ts": repr(now + timeout), "queue_timeout_s": repr(timeout)}
        if webhook is not None:
            fields |= webhooks.config_fields(webhook[0], list(webhook[1]))
        keys = [idem, self._job_key(job_id), self._index_key(owner), self._counts_key]
        outcome, found = self._create_record(keys, fp, job_id, now, fields, owner=owner, max_active=max_active)
        if outcome == "conflict":
            raise IdempotencyConflict(found)
        record = self.get(found)
        if record is None:  # the earlier job expired between the two calls: a vanishingly rare race
            raise JobStoreError(f"job {found} vanished")
        return record, outcome == "created"

    def get(self, job_id: str, *, owner: str | None = None) -> JobRecord | None:
        """The record, or None when unknown, expired, or owned by someone other than ``owner``."""
        h = self.r.hgetall(self._job_key(job_id))
        if not h or (owner is not None and h.get("owner") != owner):
            return None
        return JobRecord.from_hash(h)

    def list_jobs(
        self, owner: str, *, status: Iterable[JobState] | None = None, limit: int = 20, cursor: str | None = None
    ) -> tuple[list[JobRecord], str | None]:
        """Newest first; returns ``(records, next_cursor)``; ``next_cursor`` is None on the last page."""
        wanted = set(status) if status else None
        index = self._index_key(owner)
        max_score, after_id = _decode_cursor(cursor) if cursor else ("+inf", None)
        out: list[JobRecord] = []
        while len(out) < limit:
            batch = self.r.zrevrangebyscore(index, max_score, "-inf", start=0, num=limit * 2 + 8, withscores=True)
            if after_id is not None:
                batch = [(m, s) for m, s in batch if not (s == float(max_score) and m >= after_id)]
            if not batch:
                return out, None
            pipe = self.r.pipeline(transaction=False)
            for member, _ in batch:
                pipe.hgetall(self._job_key(member))
            for (member, score), h in zip(batch, pipe.execute(), strict=True):
                max_score, after_id = repr(score), member
                if not h:
                    self.r.zrem(index, member)  # the record expired: drop it from the index lazily
                    continue
                record = self.expire_if_due(JobRecord.from_hash(h))
                if wanted is None or record.status in wanted:
                    out.append(record)
                if len(out) == limit:
                    break
        tail = self.r.zrevrangebyscore(index, max_score, "-inf", start=0, num=limit + 8, withscores=True)
        has_more = any(not (s == float(max_score) and m >= (after_id or "")) for m, s in tail)
        return out, _encode_cursor(max_score, after_id) if has_more and after_id else None

    # -- worker side -----------------------------------------------------------------------------
    def _move(
        self,
        job_id: str,
        allowed: Iterable[JobState],
        new: JobState,
        fields: dict[str, Any],
        *,
        refuse_if_cancel: bool = False,
        refuse_if_claimed: bool = False,
    ) -> bool:
        keys = [self._job_key(job_id), self._counts_key]
        return self._move_record(
            keys, allowed, new, fields, refuse_if_cancel=refuse_if_cancel, refuse_if_claimed=refuse_if_claimed
        )

    def mark_running(self, job_id: str, *, worker: str | None = None) -> bool:
        """queued → running; a re-delivered running job stays running. False when canceled, cancel
        was requested, terminal, unknown, or claimed into another job's batch (``claimed_by``; released
        by ``jobs.company.WaitingRoom.release``): the worker must not render it. ``worker`` (the Celery
        node name) is recorded: the job's record says which worker holds it."""
        record = self.get(job_id)
        if record is None or record.status not in (JobState.QUEUED, JobState.RUNNING):
            return False
        started = record.started_ts or self.clock()
        ok = self._move(
            job_id,
            [JobState.QUEUED, JobState.RUNNING],
            JobState.RUNNING,
            {"started_ts": repr(started), "worker": worker or ""},
            refuse_if_cancel=True,
            refuse_if_claimed=True,
        )
        if ok:
            self.r.hincrby(self._job_key(job_id), "attempts", 1)
        return ok

    def update_progress(
        self,
        job_id: str,
        *,
        fraction: float,
        step: int = 0,
        total_steps: int = 0,
        segments_done: int = 0,
        segments_total: int = 0,
    ) -> bool:
        """Record progress of a running job; an update that would move it backwards is ignored (False)."""
        fraction = min(max(float(fraction), 0.0), 1.0)
        return bool(
            self._progress(
                keys=[self._job_key(job_id)], args=[repr(fraction), step, total_steps, segments_done, segments_total]
            )
        )

    def _timings(self, job_id: str, now: float, extra: dict[str, Any] | None, duration_s: float = 0.0) -> str:
        """queue_s and render_s from the record's clocks, rtf (render time / audio time), then ``extra``."""
        record = self.get(job_id)
        timings: dict[str, Any] = {}
        if record and record.started_ts is not None:
            timings = {
                "queue_s": round(record.started_ts - record.created_ts, 4),
                "render_s": round(now - record.started_ts, 4),
            }
            if duration_s > 0:
                timings["rtf"] = round(timings["render_s"] / duration_s, 4)
        timings.update(extra or {})
        return json.dumps(timings)

    def succeed(self, job_id: str, result: dict[str, Any], timings: dict[str, Any] | None = None) -> bool:
        """running → succeeded with the result (storage key, format, duration_s, sample_rate, bytes)."""
        now = self.clock()
        return self._move(
            job_id,
            [JobState.RUNNING],
            JobState.SUCCEEDED,
            {
                "result": json.dumps(result),
                "timings": self._timings(job_id, now, timings, float(result.get("duration_s") or 0)),
                "finished_ts": repr(now),
                "progress_fraction": "1.0",
            },
        )

    def fail(self, job_id: str, code: str, message: str, timings: dict[str, Any] | None = None) -> bool:
        """queued|running → failed with an error code and message."""
        now = self.clock()
        return self._move(
            job_id,
            [JobState.QUEUED, JobState.RUNNING],
            JobState.FAILED,
            {
                "error": json.dumps({"code": code, "message": message}),
                "timings": self._timings(job_id, now, timings),
                "finished_ts": repr(now),
            },
        )

    def mark_canceled(self, job_id: str) -> bool:
        """queued|running → canceled: the worker's side of a cooperative cancel."""
        return self._move(
            job_id,
            [JobState.QUEUED, JobState.RUNNING],
            JobState.CANCELED,
            {"finished_ts": repr(self.clock()), "cancel_requested": "1"},
        )

    def mark_expired(self, job_id: str) -> bool:
        """queued → expired (only from queued: a running job is never expired), with
        ``error = {code: "expired", message}`` naming the deadline. Also what Celery's verdict calls
        when it drops a message whose ``expires`` passed. False when the job was not queued."""
        record = self.get(job_id)
        if record is None or record.status is not JobState.QUEUED:
            return False
        if record.deadline_ts is not None:
            timeout = f"{record.queue_timeout_s:g} s" if record.queue_timeout_s is not None else "the queue timeout"
            message = (
                f"no worker started this job before its queue deadline {iso(record.deadline_ts)} "
                f"({timeout} after it was submitted; the limit is ECHO_QUEUE_TIMEOUT_S)"
            )
        else:
            message = "no worker started this job before its queue deadline (ECHO_QUEUE_TIMEOUT_S)"
        return self._move(
            job_id,
            [JobState.QUEUED],
            JobState.EXPIRED,
            {
                "finished_ts": repr(self.clock()),
                "error": json.dumps({"code": ErrorCode.EXPIRED.value, "message": message}),
            },
        )

    def expire_if_due(self, record: JobRecord) -> JobRecord:
        """The record as it is now: a queued one whose ``deadline_ts`` has passed becomes expired first
        (the state check is atomic, so a worker that started it a moment earlier wins)."""
        if record.status is not JobState.QUEUED or record.deadline_ts is None or self.clock() < record.deadline_ts:
            return record
        self.mark_expired(record.id)
        return self.get(record.id) or record

    def request_cancel(self, job_id: str) -> JobRecord | None:
        """Queued → canceled at once; running → cancel flag (the worker finishes); terminal → no-op.
        Idempotent. Returns the record after the change (None when unknown)."""
        if not self.mark_canceled_if_queued(job_id):
            self._flag_cancel(job_id)
        return self.get(job_id)

    def mark_canceled_if_queued(self, job_id: str) -> bool:
        return self._move(
            job_id, [JobState.QUEUED], JobState.CANCELED, {"finished_ts": repr(self.clock()), "cancel_requested": "1"}
        )

    def _flag_cancel(self, job_id: str) -> None:
        self._move(job_id, [JobState.RUNNING], JobState.RUNNING, {"cancel_requested": "1"})

    def is_cancel_requested(self, job_id: str) -> bool:
        status, flag = self.r.hmget(self._job_key(job_id), "status", "cancel_requested")
        return bool(flag == "1" or status == JobState.CANCELED.value)

    # -- heartbeats ------------------------------------------------------------------------------
    def heartbeat(self, name: str, info: dict[str, Any] | None = None, *, ttl_s: int = HEARTBEAT_TTL_S) -> None:
        """Announce a live worker for ``ttl_s`` seconds (call it more often than that)."""
        body = {"name": name, "ts": self.clock(), **(info or {})}
        self.r.set(heartbeat_key(name), json.dumps(body), ex=ttl_s)

    def heartbeat_of(self, name: str) -> dict[str, Any] | None:
        """The worker's last heartbeat, or None once it has expired (the worker is gone)."""
        raw = self.r.get(heartbeat_key(name))
        return dict(json.loads(raw)) if raw else None

    def live_workers(self) -> list[dict[str, Any]]:
        """The heartbeats that have not expired, as written (name, ts and the worker's info)."""
        keys = sorted(self.r.scan_iter(match=HEARTBEAT_PATTERN, count=200))
        values = self.r.mget(keys) if keys else []
        return [json.loads(v) for v in values if v]


def _encode_cursor(score: str, member: str) -> str:
    return urlsafe_b64encode(f"{score} {member}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        score, member = urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split(" ", 1)
        float(score)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor("cursor is not one returned by this API") from exc
    return score, member
