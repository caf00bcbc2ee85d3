"""Per-key quotas, answered ``429`` with ``Retry-After`` and a message naming the setting.

Three settings, each ``0`` (off) by default, so a stack that sets none behaves as before:

- ``ECHO_RATE_LIMIT_PER_MIN``: requests per API key per minute, on every authenticated route (``/v1/...``).
  ``/healthz``, ``/readyz``, ``/metrics`` and ``/v1/openapi.json`` do not authenticate and are never
  limited; a request refused with ``401`` counts against nobody. A fixed window per key that starts
  at the key's first request: one Lua step (``INCR``, ``PEXPIRE`` on the first) on
  ``{p}:ratelimit:{owner}``, shared by every API process and replica on the Redis. Refused requests
  count too (the window still ends on time). ``Retry-After`` is the rest of the window.
- ``ECHO_MAX_QUEUED_JOBS`` / ``ECHO_MAX_QUEUED_BOOKS``: jobs (speech requests included: they are
  jobs) / audiobooks a key may have queued or running at once. The check and the insert are one
  atomic step in the stores' create script (:mod:`jobs.record_store`), so concurrent submissions
  through several API processes cannot overshoot; an idempotent replay is answered before it. A
  ``POST /v1/audiobooks/{id}/retry`` is not counted (the book was admitted once). ``Retry-After``
  is a fixed guess (:data:`QUEUE_RETRY_AFTER_S`): the wait depends on the workers.

Why not flask-limiter: it would cover the per-minute limit only (counts of queued work are ours
anyway), brings its ``limits`` storage layer and its own 429 page to fit into the error envelope, and
this is 10 lines of Lua on the Redis the service already uses. Redis being down answers ``503`` as
any other request needing Redis does.
"""

from __future__ import annotations

import math
from typing import Any

import redis

from api.errors import APIError
from jobs.errors import ErrorCode
from jobs.record_store import QuotaExceeded

QUEUE_RETRY_AFTER_S = 30  # what a 429 for queued work says to wait: about one short job's render

# KEYS: the key's counter. ARGV: window in ms. Returns {requests in this window, ms left in it}.
_HIT = """
local n = redis.call('INCR', KEYS[1])
local left = redis.call('PTTL', KEYS[1])
if n == 1 or left < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  left = tonumber(ARGV[1])
end
return {n, left}
"""


class RateLimiter:
    """Requests per key and window, counted in Redis (``client`` with ``decode_responses=True``)."""

    def __init__(self, client: redis.Redis, *, prefix: str = "echo", window_s: int = 60) -> None:
        self.prefix, self.window_ms = prefix, window_s * 1000
        self._hit: Any = client.register_script(_HIT)

    def hit(self, owner: str) -> tuple[int, float]:
        """Count one request of ``owner``: ``(requests in the current window, seconds left in it)``."""
        n, left_ms = self._hit(keys=[f"{self.prefix}:ratelimit:{owner}"], args=[self.window_ms])
        return int(n), int(left_ms) / 1000


def check_rate(limiter: RateLimiter, owner: str, per_min: int) -> None:
    """429 ``rate_limited`` when ``owner`` made more than ``per_min`` requests in its window (0: off)."""
    if per_min <= 0:
        return
    n, left_s = limiter.hit(owner)
    if n <= per_min:
        return
    retry_after = max(1, math.ceil(left_s))
    raise APIError(
        429,
        ErrorCode.RATE_LIMITED,
        f"more than {per_min} requests in a minute with this API key; the limit is "
        f"ECHO_RATE_LIMIT_PER_MIN={per_min}; retry after {retry_after} s",
        {"limit": "ECHO_RATE_LIMIT_PER_MIN", "max_requests": per_min, "retry_after_s": retry_after},
        headers={"Retry-After": str(retry_after)},
    )


def quota_exceeded(exc: QuotaExceeded) -> APIError:
    """429 ``quota_exceeded`` for a job or book refused by the store's create script."""
    setting = "ECHO_MAX_QUEUED_BOOKS" if exc.kind == "book" else "ECHO_MAX_QUEUED_JOBS"
    what = "audiobooks" if exc.kind == "book" else "jobs"
    return APIError(
        429,
        ErrorCode.QUOTA_EXCEEDED,
        f"this API key has {exc.active} {what} queued or running; the limit is {setting}={exc.limit} "
        f"(cancel one or wait for one to finish)",
        {"limit": setting, f"max_{what}": exc.limit, "active": exc.active, "retry_after_s": QUEUE_RETRY_AFTER_S},
        headers={"Retry-After": str(QUEUE_RETRY_AFTER_S)},
    )
