"""What every record store shares: a record is a Redis hash with a ``status`` field and a TTL (its
retention after the last change), created with idempotency and an owner index, and moved between
states by one Lua script that also keeps the per-state counts, so the API and any number of workers
may race freely.

Per-owner quotas (``max_active`` of :meth:`RecordStore._create_record`): the owner's active set
``{p}:active_{kind}:{owner}`` (sorted set of ids) is kept by the create script only, and only while a
quota is on. Before adding a record the script walks that set, drops ids whose record is no longer
queued or running (finished, canceled, expired, gone, or queued past its ``deadline_ts``) and refuses
when the rest reach the quota, all in one atomic step (no race between API processes; idempotent
replays are answered before the check). The transitions need not know about it; the set stays at most
the quota plus the records that left it since the owner's last submission. It reads record keys it
was not given (``{p}:{kind}:{id}``): fine on the single Redis the service uses, not on Redis Cluster.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import redis

from jobs import webhooks
from jobs.contract import JobState
from jobs.errors import ErrorCode, ServiceError

# KEYS: idem key or "", record key, owner index, state counts, owner's active set or "" (no quota), outbox or
# "" (records whose message is not yet known to be sent: jobs.jobstore.JobStore.unsent).
# ARGV: fingerprint, job id, ttl, score (now), quota, record key prefix, then field/value pairs.
# Returns {outcome, id}; {'quota', active count} when the owner has ``quota`` records queued or running.
CREATE_RECORD = """
if KEYS[1] ~= '' then
  local prior = redis.call('GET', KEYS[1])
  if prior then
    local sep = string.find(prior, ' ', 1, true)
    local fp, id = string.sub(prior, 1, sep - 1), string.sub(prior, sep + 1)
    if fp ~= ARGV[1] then return {'conflict', id} end
    return {'existing', id}
  end
end
if KEYS[5] ~= '' then
  local active, now = 0, tonumber(ARGV[4])
  for _, id in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do
    local h = redis.call('HMGET', ARGV[6] .. id, 'status', 'deadline_ts')
    local overdue = h[1] == 'queued' and h[2] and h[2] ~= '' and tonumber(h[2]) < now
    if (h[1] == 'queued' or h[1] == 'running') and not overdue then
      active = active + 1
    else
      redis.call('ZREM', KEYS[5], id)
    end
  end
  if active >= tonumber(ARGV[5]) then return {'quota', tostring(active)} end
  redis.call('ZADD', KEYS[5], ARGV[4], ARGV[2])
  redis.call('EXPIRE', KEYS[5], ARGV[3])
end
if KEYS[1] ~= '' then redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'EX', ARGV[3]) end
redis.call('HSET', KEYS[2], unpack(ARGV, 7))
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('HINCRBY', KEYS[4], 'queued', 1)
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
if KEYS[6] ~= '' then
  redis.call('ZADD', KEYS[6], ARGV[4], ARGV[2])
  redis.call('EXPIRE', KEYS[6], ARGV[3])
end
-- the owner index outlives its records (which expire ttl after their last change) and sheds old ids
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', tonumber(ARGV[4]) - 2 * tonumber(ARGV[3]))
redis.call('EXPIRE', KEYS[3], 2 * tonumber(ARGV[3]))
return {'created', ARGV[2]}
"""
# KEYS: record key, state counts, then keys that live and die with the record (their TTL is renewed).
# ARGV: comma-separated allowed states, flags ("c": refuse when cancel was requested, "b": refuse when
# another job's batch claimed the record, jobs/company.py), ttl, new state, pairs.
# The counts move with the state, in the same atomic step.
TRANSITION_RECORD = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
if not string.find(',' .. ARGV[1] .. ',', ',' .. status .. ',', 1, true) then return 0 end
if string.find(ARGV[2], 'c', 1, true) and redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then return 0 end
if string.find(ARGV[2], 'b', 1, true) and (redis.call('HGET', KEYS[1], 'claimed_by') or '') ~= '' then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[4], unpack(ARGV, 5))
redis.call('EXPIRE', KEYS[1], ARGV[3])
for i = 3, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[3]) end
if status ~= ARGV[4] then
  redis.call('HINCRBY', KEYS[2], status, -1)
  redis.call('HINCRBY', KEYS[2], ARGV[4], 1)
end
return 1
"""


S = TypeVar("S", bound="RecordStore")


class QuotaExceeded(ServiceError):
    """Raised by a create when the owner already has ``limit`` records of ``kind`` queued or running."""

    code = ErrorCode.QUOTA_EXCEEDED

    def __init__(self, kind: str, active: int, limit: int) -> None:
        super().__init__(f"{active} {kind}s of this key are queued or running; the quota is {limit}")
        self.kind, self.active, self.limit = kind, active, limit


class RecordStore:
    """The base of the job and book stores; ``client`` must use ``decode_responses=True``."""

    kind = ""  # "job" or "book" (set by each store): a record's hash is {prefix}:{kind}:{id}

    def __init__(self, client: redis.Redis, *, prefix: str, ttl_s: int, clock: Callable[[], float] = time.time) -> None:
        self.r: Any = client  # redis-py's stubs ignore decode_responses: values are str here
        self.prefix, self.ttl, self.clock = prefix, int(ttl_s), clock
        self._create = client.register_script(CREATE_RECORD)
        self._transition = client.register_script(TRANSITION_RECORD)

    @classmethod
    def from_url(cls: type[S], url: str, **kwargs: Any) -> S:
        return cls(redis.Redis.from_url(url, decode_responses=True), **kwargs)

    def _create_record(
        self,
        keys: Sequence[str],
        fingerprint: str,
        record_id: str,
        now: float,
        fields: dict[str, str],
        *,
        owner: str,
        max_active: int = 0,
    ) -> tuple[str, str]:
        """``(outcome, id)``: ``created``, ``existing`` (same idempotency key and fingerprint: the earlier
        id) or ``conflict``. ``keys``: idempotency key or "", record, owner index, state counts; the
        record key is ``{prefix}:{kind}:{id}``. With ``max_active`` > 0, raises :class:`QuotaExceeded`
        when ``owner`` already has that many records of this kind queued or running. The new id enters the
        outbox (by time) in the same step, until its message is reported sent (:meth:`sent`)."""
        pairs = [x for kv in fields.items() for x in kv]
        active_key = f"{self.prefix}:active_{self.kind}:{owner}" if max_active > 0 else ""
        args: list[str | int] = [fingerprint, record_id, self.ttl, repr(now), max_active, self._record_key("")]
        args += pairs
        outcome, found = self._create(keys=[*keys, active_key, self._outbox_key], args=args)
        if outcome == "quota":
            raise QuotaExceeded(self.kind, int(found), max_active)
        return str(outcome), str(found)

    def _move_record(
        self,
        keys: Sequence[str],
        allowed: Iterable[JobState],
        new: JobState,
        fields: dict[str, Any],
        *,
        refuse_if_cancel: bool = False,
        refuse_if_claimed: bool = False,
    ) -> bool:
        """Move the record ``keys[0]`` to ``new`` if its state is in ``allowed``; ``keys[1]`` is the counts
        hash, the rest live and die with the record."""
        pairs = [x for k, v in fields.items() for x in (k, v)]
        allowed_csv = ",".join(s.value for s in allowed)
        flags = ("c" if refuse_if_cancel else "") + ("b" if refuse_if_claimed else "") or "-"
        return bool(self._transition(keys=list(keys), args=[allowed_csv, flags, self.ttl, new.value, *pairs]))

    def _record_key(self, record_id: str) -> str:
        return f"{self.prefix}:{self.kind}:{record_id}"

    # -- webhook delivery state (jobs.webhooks), in the record's own hash ---------------------------
    def webhook_begin(self, record_id: str, event: str, message_id: str, *, once: bool) -> bool:
        return webhooks.begin(self.r, self._record_key(record_id), event, message_id, once=once)

    def webhook_attempt(
        self, record_id: str, event: str, message_id: str, attempts: int, state: dict[str, Any]
    ) -> bool:
        return webhooks.record_attempt(self.r, self._record_key(record_id), event, message_id, attempts, state)

    def webhook_throttle(self, record_id: str, interval_s: float) -> bool:
        return webhooks.throttle(self.r, f"{self.prefix}:wh_throttle:{self.kind}:{record_id}", interval_s)

    # -- the outbox: records stored whose first message is not yet known to be sent --------------
    @property
    def _outbox_key(self) -> str:
        raise NotImplementedError

    def sent(self, record_id: str) -> None:
        """The record's first message is on the broker (``create`` put the record in the outbox)."""
        self.r.zrem(self._outbox_key, record_id)

    @contextlib.contextmanager
    def outbox_sweep(self) -> Iterator[bool]:
        """Whether this caller is the one outbox sweeper of this store now (a lock of at most 60 s)."""
        lock = f"{self._outbox_key}:sweep"
        mine = bool(self.r.set(lock, "1", nx=True, ex=60))
        try:
            yield mine
        finally:
            if mine:
                self.r.delete(lock)

    def unsent(self, *, older_than_s: float, limit: int = 100) -> list[str]:
        """Records stored more than ``older_than_s`` ago whose message nobody reported sent: the API
        that stored them died (or lost Redis) before sending, or before saying so. Oldest first."""
        newest = self.clock() - older_than_s
        return [str(i) for i in self.r.zrangebyscore(self._outbox_key, "-inf", newest, start=0, num=limit)]

    def _counts(self, key: str) -> dict[JobState, int]:
        raw = self.r.hgetall(key)
        return {state: max(int(raw.get(state.value, 0)), 0) for state in JobState}
