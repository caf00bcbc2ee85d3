"""Redis down for more than a minute while a job renders (``make reliability`` only: the outage alone lasts
70 s; the sweep logic it relies on is checked in ``test_recovery.py`` within ``make test``).

Fault: SIGKILL of redis-server (append-only file, ``appendfsync always``, as in compose) mid-render,
restarted on the same port and directory 70 s later. The job's task fails on Redis and can neither
reject nor ack its message, and the worker's in-flight entry stays. The broker's visibility timeout
stays at its default hour.

What must survive: the job, which succeeds once (one audio object) within a minute of Redis coming
back, not after the hour; nothing is left un-acked. Two paths bring the message back: kombu's channel
close restores it when the consumer notices the lost connection after Redis is back (what this run
shows, on this machine); when that restore fails (Redis still down), the worker's next sweep re-queues
its own in-flight entries whose task ended (``worker/recovery.py``, ``test_recovery.py``).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
import requests
from fault_helpers import RELIABILITY, RedisServer, finish_job, get_job, submit_job
from service_helpers import wait_for

from jobs.settings import StorageSettings
from jobs.storage import S3Storage

pytestmark = [pytest.mark.slow, pytest.mark.reliability]
OUTAGE_S = 70


def test_a_redis_outage_over_a_minute_mid_render_costs_a_job_one_sweep_not_the_visibility_timeout(
    service_env: dict[str, str], start_worker: Any, start_api: Any, aof_redis: RedisServer
) -> None:
    if not RELIABILITY:
        pytest.skip("a 70 s outage: part of `make reliability` (ECHO_RELIABILITY=1)")
    # Given the default visibility timeout, restore interval and time limits; the API, a worker rendering a long job
    shortened = (
        "ECHO_VISIBILITY_TIMEOUT_S",
        "ECHO_UNACKED_RESTORE_INTERVAL_S",
        "ECHO_TASK_SOFT_TIME_LIMIT_S",  # (the defaults: a render that outlives the outage is not cut short)
        "ECHO_TASK_TIME_LIMIT_S",
    )
    env = {k: v for k, v in service_env.items() if k not in shortened} | {"ECHO_REDIS_URL": aof_redis.url}
    api = start_api(env)
    worker = start_worker(env)
    job = submit_job(api.url, overrides={"num_steps": 60})
    wait_for(lambda: get_job(api.url, job["id"])["progress"]["step"] >= 1, timeout=120, what="the first step")
    # When Redis is killed mid-render and comes back 70 s later
    aof_redis.kill()
    time.sleep(OUTAGE_S)
    aof_redis.start()
    back_at = time.monotonic()
    wait_for(
        lambda: requests.get(f"{api.url}/v1/jobs/{job['id']}", timeout=5).status_code == 200,
        timeout=60,
        what="the API after the outage",
    )
    # Then the job succeeds within a minute of Redis coming back (not after the hour), exactly once
    done = finish_job(api.url, job["id"], timeout=120)
    recovered_s = time.monotonic() - back_at
    assert done["status"] == "succeeded", (done, worker.output()[-4000:])
    assert recovered_s < 60, recovered_s
    assert len(S3Storage(StorageSettings.from_env(env)).list_keys(f"jobs/{job['id']}/")) == 2
    # And nothing is left un-acked, to come back after the visibility timeout
    client = redis.Redis.from_url(aof_redis.url)
    wait_for(lambda: client.hlen("unacked") == 0, timeout=30, what="every message acked")
    print(f"Redis down {OUTAGE_S} s mid-render: the job succeeded {recovered_s:.1f} s after Redis came back")
