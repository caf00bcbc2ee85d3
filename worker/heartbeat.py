"""A daemon thread that announces a live worker in Redis (``contract.heartbeat_key``) for /readyz."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

import redis

from jobs.contract import HEARTBEAT_INTERVAL_S, HEARTBEAT_TTL_S, heartbeat_key
from jobs.jobstore import JobStore

log = logging.getLogger(__name__)


class Heartbeat:
    """Writes ``{name, ts, pid, host, …info()}`` with a TTL every ``interval_s``; removes it on stop."""

    def __init__(
        self,
        jobs: JobStore,
        name: str,
        info: Callable[[], dict[str, Any]],
        *,
        interval_s: float = HEARTBEAT_INTERVAL_S,
        ttl_s: int = HEARTBEAT_TTL_S,
    ) -> None:
        self.jobs, self.name, self.info = jobs, name, info
        self.interval_s, self.ttl_s = interval_s, ttl_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        body = {"pid": os.getpid(), "host": socket.gethostname(), **self.info()}
        self.jobs.heartbeat(self.name, body, ttl_s=self.ttl_s)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.beat()
            except redis.RedisError as exc:  # Redis blips must not kill the thread; the TTL tells the truth
                log.warning("heartbeat not written: %s", exc)

    def start(self) -> None:
        self.beat()
        self._thread = threading.Thread(target=self._run, name="echo-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.jobs.r.delete(heartbeat_key(self.name))
        except redis.RedisError as exc:
            log.warning("heartbeat not removed: %s", exc)
