"""Liveness and readiness: is this process up, and can it do its work (Redis, storage, a live worker)?"""

from __future__ import annotations

from typing import Any

import redis

from api.services import Services
from jobs.storage import StorageError


def readiness(s: Services) -> tuple[list[str], dict[str, Any]]:
    """``(failing, checks)``: the names of the failing checks (empty when ready), and every check's
    outcome (``"ok"`` or what failed; ``workers`` counts live heartbeats)."""
    checks: dict[str, Any] = {}
    try:
        s.store.ping()
        checks["redis"] = "ok"
    except redis.RedisError as exc:
        checks["redis"] = f"unreachable: {exc}"
    try:
        s.storage.ping()
        checks["storage"] = "ok"
    except StorageError as exc:
        checks["storage"] = f"unreachable: {exc}"
    workers = s.store.live_workers() if checks["redis"] == "ok" else []
    checks["workers"] = len(workers)
    if not workers:
        checks["workers_detail"] = "no live worker heartbeat"
    failing = [name for name in ("redis", "storage") if checks[name] != "ok"] + ([] if workers else ["workers"])
    return failing, checks
