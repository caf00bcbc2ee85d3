"""The waiting room of cross-job batching: queued interactive jobs that a worker may take into the
sampler call of a job it is starting (torch-free, Celery-free; the worker side is ``worker/job_batch.py``).

Only jobs that can share one sampler call wait together: the key of a room is a hash of the request's
preset and overrides (the sampler settings), so texts, voices, seeds and output formats may differ.
Layout: ``{p}:waiting:{batch_key}`` sorted set of job ids by submit time. The API offers each
non-streamed job when it stores it; the worker withdraws a job it starts through its own message.
Ids of jobs that started, finished or were canceled some other way are dropped lazily by the claim.

A claim is one Lua step: up to ``limit`` jobs still queued (not canceled, not past their queue deadline,
text short enough to be one piece) move to ``running`` under the claiming worker, marked ``claimed_by``,
and each gets an entry ``claim:{job_id}`` in that worker's in-flight hash (``worker/recovery.py``) in the
same step: if the worker dies, the sweep that re-queues its messages re-sends these jobs too. A job's
own message, arriving while the claim holds, is dropped (its holder is alive and has an entry for it);
arriving after the holder died, it releases the claim and renders the job itself.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from jobs.contract import CLAIM_TAG_PREFIX, SYNTHESIZE, inflight_key
from jobs.jobstore import JobStore

# KEYS: waiting room, state counts, the claimer's in-flight hash.
# ARGV: limit, now, max text bytes, worker, life, lead job id, job key prefix, ttl, tag prefix, task name,
# min text bytes.
_CLAIM = """
local out, limit, now, maxb = {}, tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, 99)) do
  if #out >= limit then break end
  local key = ARGV[7] .. id
  local h = redis.call('HMGET', key, 'status', 'cancel_requested', 'deadline_ts', 'request')
  local overdue = h[3] and h[3] ~= '' and tonumber(h[3]) < now
  local ok, req = false, nil
  if h[1] == 'queued' and h[2] ~= '1' and not overdue and id ~= ARGV[6] then
    ok, req = pcall(cjson.decode, h[4])
  end
  if not ok or type(req) ~= 'table' or type(req['text']) ~= 'string' or req['stream'] == true then
    redis.call('ZREM', KEYS[1], id)  -- never company: started, final, overdue, or not batchable
  elseif #req['text'] <= maxb and #req['text'] >= tonumber(ARGV[11]) then  -- else: another lead's size
    redis.call('ZREM', KEYS[1], id)
    redis.call('HSET', key, 'status', 'running', 'started_ts', ARGV[2], 'worker', ARGV[4],
      'claimed_by', ARGV[4], 'batch_lead', ARGV[6])
    redis.call('HINCRBY', key, 'attempts', 1)
    redis.call('EXPIRE', key, ARGV[8])
    redis.call('HINCRBY', KEYS[2], 'queued', -1)
    redis.call('HINCRBY', KEYS[2], 'running', 1)
    local entry = cjson.encode({task = ARGV[10], task_id = id, job_id = id, since = now, life = ARGV[5],
      batch_lead = ARGV[6]})
    redis.call('HSET', KEYS[3], ARGV[9] .. id, entry)
    table.insert(out, id)
  end
end
return out
"""
# KEYS: the job. ARGV: the holder named in the claim. Clears the claim if that holder still has it.
_RELEASE = """
if redis.call('HGET', KEYS[1], 'claimed_by') ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'claimed_by')
return 1
"""


def batch_key(request: dict[str, Any]) -> str:
    """Jobs with the same key can share one sampler call: the same preset and overrides."""
    settings = {"preset": request.get("preset"), "overrides": request.get("overrides") or {}}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def claim_tag(job_id: str) -> str:
    """The in-flight entry that holds a claimed job (in place of a delivery tag)."""
    return CLAIM_TAG_PREFIX + job_id


def claimed_job(tag: str) -> str | None:
    """The job id of a claim's in-flight entry; None for a delivery tag."""
    return tag[len(CLAIM_TAG_PREFIX) :] if tag.startswith(CLAIM_TAG_PREFIX) else None


class WaitingRoom:
    """Queued jobs offered for batching, on the job store's Redis (its keys, TTL and clock)."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._claim = store.r.register_script(_CLAIM)
        self._release = store.r.register_script(_RELEASE)

    def _key(self, request: dict[str, Any]) -> str:
        return f"{self.store.prefix}:waiting:{batch_key(request)}"

    def offer(self, job_id: str, request: dict[str, Any]) -> None:
        """Let workers take this queued job into another job's sampler call (streamed jobs never wait
        here: they render their first piece alone, for latency)."""
        if request.get("stream"):
            return
        now, key = self.store.clock(), self._key(request)
        pipe = self.store.r.pipeline(transaction=False)
        pipe.zadd(key, {job_id: now})
        pipe.zremrangebyscore(key, "-inf", now - self.store.ttl)  # nothing queued lives longer than a record
        pipe.expire(key, self.store.ttl)
        pipe.execute()

    def withdraw(self, job_id: str, request: dict[str, Any]) -> None:
        """The job started through its own message: nobody should look at it here any more."""
        self.store.r.zrem(self._key(request), job_id)

    def claim(
        self,
        lead: str,
        request: dict[str, Any],
        *,
        limit: int,
        max_text_bytes: int,
        worker: str,
        life: str,
        min_text_bytes: int = 0,
    ) -> list[str]:
        """Move up to ``limit`` waiting jobs that share ``request``'s sampler settings and whose text has
        ``min_text_bytes`` to ``max_text_bytes`` UTF-8 bytes to running under ``worker``, oldest first;
        their ids. Jobs outside that range are left waiting."""
        if limit <= 0:
            return []
        keys = [self._key(request), self.store._counts_key, inflight_key(worker)]
        args = [limit, repr(self.store.clock()), max_text_bytes, worker, life, lead, self.store._record_key("")]
        args += [self.store.ttl, CLAIM_TAG_PREFIX, SYNTHESIZE, min_text_bytes]
        return [str(job_id) for job_id in self._claim(keys=keys, args=args)]

    def release(self, job_id: str, holder: str) -> bool:
        """Clear ``holder``'s claim on the job (it died, or handed the job back): the job's own message
        may then render it. False when someone else released it first."""
        return bool(self._release(keys=[self.store._job_key(job_id)], args=[holder]))
