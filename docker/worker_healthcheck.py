"""Worker container healthcheck: healthy while this host's worker keeps its Redis heartbeat fresh.

The worker refreshes ``echo:heartbeat:{name}`` (``jobs.contract``) from a background thread, so
a long render on the solo pool does not make it look dead (``celery inspect ping`` would: the solo
pool answers control messages only between tasks). Exit 0 when a live heartbeat names this host.

    python docker/worker_healthcheck.py
"""

from __future__ import annotations

import json
import socket
import sys

import redis

from jobs.contract import HEARTBEAT_PATTERN
from worker.settings import SettingsError, WorkerSettings


def mine(heartbeat: dict, hostname: str) -> bool:
    """Whether a heartbeat was written by a worker on this host (container hostnames are unique)."""
    fields = (str(heartbeat.get(k, "")) for k in ("name", "host", "hostname", "node"))
    return any(hostname == f or f.endswith("@" + hostname) for f in fields)


def main() -> int:
    try:
        settings = WorkerSettings.from_env()
    except SettingsError as exc:
        print(f"unhealthy: {exc}")
        return 1
    hostname = socket.gethostname()
    try:
        client = redis.Redis.from_url(settings.redis_url, decode_responses=True, socket_timeout=5)
        keys = list(client.scan_iter(match=HEARTBEAT_PATTERN, count=200))
        beats = [json.loads(v) for v in (client.mget(keys) if keys else []) if v]
    except redis.RedisError as exc:
        print(f"unhealthy: redis: {exc}")
        return 1
    if any(mine(b, hostname) for b in beats):
        print(f"healthy: {hostname} has a live heartbeat")
        return 0
    print(f"unhealthy: no live heartbeat from {hostname} (live: {[b.get('name') for b in beats]})")
    return 1


if __name__ == "__main__":
    sys.exit(main())
