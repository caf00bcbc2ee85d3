"""API request counts shared by every API process and replica, in three Redis hashes.

Layout (``{p}`` is the key prefix): ``{p}:metrics:api_requests`` field ``method|route|status`` → count ·
``{p}:metrics:api_seconds`` field ``method|route|bucket`` → count (bucket: index into the histogram's
bounds, or ``inf``) · ``{p}:metrics:api_seconds_sum`` field ``method|route`` → seconds.
Each process adds its own counts now and then; a reader sums over all of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class RequestCounts:
    """The shared request counters; ``client`` must use ``decode_responses=True``."""

    def __init__(self, client: Any, *, prefix: str = "echo") -> None:
        self.r = client
        self.keys = (
            f"{prefix}:metrics:api_requests",
            f"{prefix}:metrics:api_seconds",
            f"{prefix}:metrics:api_seconds_sum",
        )

    def add(self, counts: Mapping[str, int], buckets: Mapping[str, int], sums: Mapping[str, float]) -> None:
        """Add one process's counts (raises ``redis.RedisError``: the caller keeps them for a retry)."""
        pipe = self.r.pipeline(transaction=False)
        for field, n in counts.items():
            pipe.hincrby(self.keys[0], field, n)
        for field, n in buckets.items():
            pipe.hincrby(self.keys[1], field, n)
        for field, total in sums.items():
            pipe.hincrbyfloat(self.keys[2], field, total)
        pipe.execute()

    def read(self) -> tuple[dict[str, int], dict[str, int], dict[str, float]]:
        """``(counts, buckets, sums)`` over all processes."""
        pipe = self.r.pipeline(transaction=False)
        for key in self.keys:
            pipe.hgetall(key)
        counts, buckets, sums = pipe.execute()
        return (
            {k: int(v) for k, v in counts.items()},
            {k: int(v) for k, v in buckets.items()},
            {k: float(v) for k, v in sums.items()},
        )
