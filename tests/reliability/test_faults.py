"""Fault injection against real processes: the API (``python -m api``), a ``python -m worker`` on
the tiny checkpoint, a real ``redis-server`` and moto's S3 server on loopback.

Fault model (what survives which fault):
- **Redis killed and restarted** (append-only file on, ``appendfsync always``): every write Redis
  acknowledged is on disk before the reply, so SIGKILL (a crash, harsher than SIGTERM, which would
  also rewrite the file cleanly) loses nothing acknowledged: job records, queued messages and the
  un-acked message of the running job come back with the restarted server. The worker and the API
  reconnect by themselves; every accepted job ends ``succeeded`` exactly once (one audio object).
- **S3 unreachable** (a loopback TCP proxy in front of moto stops listening and drops its
  connections): a job whose render ends during the outage keeps its audio spooled on disk, retries
  the upload with exponential backoff (Celery autoretry) and succeeds once S3 is back, without a
  second render. An outage longer than the retry budget (``ECHO_STORAGE_RETRIES``) ends the job
  ``failed`` with ``storage_unavailable``; nothing is left ``running`` and the worker serves the next.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

import pytest
import redis
import requests
from fault_helpers import RedisServer, finish_job, get_job, submit_job
from service_helpers import ApiProcess, free_port, wait_for

from jobs.settings import StorageSettings
from jobs.storage import S3Storage

pytestmark = pytest.mark.slow


def stored_keys(env: dict[str, str], job_id: str) -> list[str]:
    return sorted(S3Storage(StorageSettings.from_env(env)).list_keys(f"jobs/{job_id}/"))


# --- Redis with an append-only file, killed and restarted on the same port and directory ---------


def test_redis_killed_and_restarted_with_append_only_file_loses_no_job(
    service_env: dict[str, str], start_worker: Any, start_api: Any, aof_redis: RedisServer
) -> None:
    # Fault: SIGKILL of redis-server (AOF, appendfsync always) with one job rendering and two queued;
    # restarted on the same port and directory 3 s later.
    # Survives: every accepted job (succeeded, exactly one audio object each); worker and API reconnect.
    # (the broker's visibility timeout left at its default hour: a message left un-acked by the fault
    # must not wait for it)
    shortened = ("ECHO_VISIBILITY_TIMEOUT_S", "ECHO_UNACKED_RESTORE_INTERVAL_S")
    # (cross-job batching off: the two waiting jobs must stay messages in the broker's list, not be claimed)
    env = {k: v for k, v in service_env.items() if k not in shortened} | {"ECHO_REDIS_URL": aof_redis.url}
    api = start_api(env)
    start_worker(env | {"ECHO_JOB_BATCHING": "false"})
    jobs = [submit_job(api.url, seed=seed, overrides={"num_steps": 30}) for seed in (1, 2, 3)]
    wait_for(lambda: get_job(api.url, jobs[0]["id"])["progress"]["step"] >= 1, timeout=120, what="the first step")
    assert [get_job(api.url, job["id"])["status"] for job in jobs[1:]] == ["queued", "queued"]
    # When Redis dies and comes back
    aof_redis.kill()
    killed_at = time.monotonic()
    time.sleep(3)
    aof_redis.start()
    # Then the API answers again and still accepts work
    wait_for(
        lambda: requests.get(f"{api.url}/v1/jobs/{jobs[0]['id']}", timeout=5).status_code == 200,
        timeout=30,
        what="the API after the restart",
    )
    jobs.append(submit_job(api.url, seed=4))
    # And every job succeeds exactly once: one audio object and its description
    for job in jobs:
        done = finish_job(api.url, job["id"], timeout=90)
        assert done["status"] == "succeeded", done
        assert len(stored_keys(env, job["id"])) == 2, stored_keys(env, job["id"])
    recovered_s = time.monotonic() - killed_at
    print(f"all {len(jobs)} jobs succeeded {recovered_s:.1f} s after the Redis kill")
    # (and no message is left un-acked, to be re-delivered after the visibility timeout: the last job's
    # ack lands just after its record says succeeded, so give it a few seconds, far below the hour)
    client = redis.Redis.from_url(aof_redis.url)
    wait_for(lambda: client.hlen("unacked") == 0, timeout=15, what="every message acked")


# --- S3 unreachable: a loopback TCP proxy in front of moto that can stop listening ---------------


class FlakyProxy:
    """Forwards 127.0.0.1:port to the target; ``down()`` stops listening and drops every connection
    (clients get ECONNREFUSED or a reset), ``up()`` listens again on the same port."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.port = free_port()
        self.lock = threading.Lock()
        self.conns: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self.listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def down(self) -> None:
        with self.lock:
            listener, self.listener = self.listener, None
            conns, self.conns = self.conns, []
        for sock in [s for s in [listener] if s is not None] + conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                if self.listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def s3_proxy(s3_endpoint: str) -> Any:
    proxy = FlakyProxy(s3_endpoint)
    yield proxy
    proxy.down()


def _render_then_cut_s3(api: ApiProcess, proxy: FlakyProxy) -> tuple[dict[str, Any], float]:
    """Submit a job of a few seconds' render, cut S3 once it is mid-render; returns the job and when."""
    job = submit_job(api.url, overrides={"num_steps": 30})
    wait_for(lambda: get_job(api.url, job["id"])["progress"]["step"] >= 1, timeout=120, what="the first step")
    proxy.down()
    return job, time.monotonic()


def test_s3_unreachable_for_20_s_during_upload_retries_with_backoff_then_succeeds(
    service_env: dict[str, str], start_worker: Any, start_api: Any, s3_proxy: FlakyProxy
) -> None:
    # Fault: the worker's S3 endpoint refuses connections for 20 s while a job renders and uploads.
    # Survives: the job (upload retried with backoff, succeeds once S3 is back, rendered once).
    env = service_env | {"ECHO_STORAGE_RETRIES": "8"}  # 2, 4, 8, ... s with jitter: outlasts 20 s
    api = start_api(env)
    worker = start_worker(env | {"ECHO_S3_ENDPOINT_URL": s3_proxy.url})
    job, cut_at = _render_then_cut_s3(api, s3_proxy)
    wait_for(lambda: "Retry in" in worker.output(), timeout=60, what="the first upload retry")
    assert get_job(api.url, job["id"])["status"] == "running"
    time.sleep(max(0.0, 20 - (time.monotonic() - cut_at)))
    s3_proxy.up()
    back_at = time.monotonic()
    done = finish_job(api.url, job["id"], timeout=150)
    assert done["status"] == "succeeded", done
    assert len(stored_keys(env, job["id"])) == 2
    assert time.monotonic() - back_at < 70  # the longest backoff step is 60 s (retry_backoff_max)
    print(
        f"retries: {worker.output().count('Retry in')}; succeeded {time.monotonic() - back_at:.1f} s after S3 came back"
    )


def test_s3_unreachable_past_the_retry_budget_fails_the_job_with_storage_unavailable(
    service_env: dict[str, str], start_worker: Any, start_api: Any, s3_proxy: FlakyProxy
) -> None:
    # Fault: the worker's S3 endpoint refuses connections for longer than ECHO_STORAGE_RETRIES=1 lasts.
    # Survives: the job's record (failed, storage_unavailable, not left running) and the worker.
    env = service_env | {"ECHO_STORAGE_RETRIES": "1"}
    api = start_api(env)
    start_worker(env | {"ECHO_S3_ENDPOINT_URL": s3_proxy.url})
    job, _ = _render_then_cut_s3(api, s3_proxy)
    done = finish_job(api.url, job["id"], timeout=120)
    assert done["status"] == "failed" and done["error"]["code"] == "storage_unavailable", done
    assert stored_keys(env, job["id"]) == []
    # And once S3 is back the same worker serves the next job
    s3_proxy.up()
    assert finish_job(api.url, submit_job(api.url)["id"])["status"] == "succeeded"
    assert get_job(api.url, job["id"])["status"] == "failed"
