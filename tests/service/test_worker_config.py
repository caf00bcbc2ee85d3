"""Worker settings, Celery configuration, the heartbeat and the latents cache (no model, no worker)."""

from __future__ import annotations

import json

import pytest
import redis

from jobs import contract
from jobs.jobstore import JobStore
from worker.celery_app import celery_config
from worker.engine import EngineNotReady, LatentsCache, get_engine
from worker.heartbeat import Heartbeat
from worker.settings import SettingsError, WorkerSettings

BASE = {"ECHO_REDIS_URL": "redis://127.0.0.1:6379/0"}


def test_defaults_need_only_the_redis_url() -> None:
    # Given only ECHO_REDIS_URL
    settings = WorkerSettings.from_env(BASE)
    # Then the rest has working defaults: local storage, both rendering queues and webhook deliveries,
    # limits in the right order
    assert settings.storage.backend == "local" and settings.queues == (*contract.QUEUES, contract.QUEUE_WEBHOOKS)
    assert settings.soft_time_limit_s < settings.time_limit_s < settings.visibility_timeout_s
    # And long text is split into ~20 s pieces, well under the one-generation byte limit
    assert settings.max_piece_bytes == 300


def test_the_piece_ceiling_is_the_one_generation_byte_limit_of_echo_tts() -> None:
    from echo_tts.text import DEFAULT_SPLIT_BYTES
    from worker.settings import MAX_PIECE_BYTES

    assert MAX_PIECE_BYTES == DEFAULT_SPLIT_BYTES


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "ECHO_REDIS_URL"),
        ({"ECHO_REDIS_URL": "localhost:6379"}, "ECHO_REDIS_URL"),
        ({"ECHO_DTYPE": "float8"}, "ECHO_DTYPE"),
        ({"ECHO_DEVICE": "tpu"}, "ECHO_DEVICE"),
        ({"ECHO_TASK_SOFT_TIME_LIMIT_S": "100", "ECHO_TASK_TIME_LIMIT_S": "50"}, "ECHO_TASK_TIME_LIMIT_S"),
        ({"ECHO_TASK_TIME_LIMIT_S": "700", "ECHO_VISIBILITY_TIMEOUT_S": "600"}, "ECHO_VISIBILITY_TIMEOUT_S"),
        ({"ECHO_WARMUP": "maybe"}, "ECHO_WARMUP"),
        ({"ECHO_WORKER_QUEUES": " , "}, "ECHO_WORKER_QUEUES"),
        ({"ECHO_LATENTS_CACHE_SIZE": "0"}, "ECHO_LATENTS_CACHE_SIZE"),
        ({"ECHO_MAX_PIECE_BYTES": "763"}, "ECHO_MAX_PIECE_BYTES"),
        ({"ECHO_MAX_PIECE_BYTES": "8"}, "ECHO_MAX_PIECE_BYTES"),
        ({"ECHO_MAX_LATENTS": "641"}, "ECHO_MAX_LATENTS"),
        ({"ECHO_MAX_LATENTS": "32"}, "ECHO_MAX_LATENTS"),
        ({"ECHO_OUTBOX_GRACE_S": "0"}, "ECHO_OUTBOX_GRACE_S"),
        ({"ECHO_BATCH_WINDOW_MS": "2001"}, "ECHO_BATCH_WINDOW_MS"),
    ],
)
def test_a_missing_or_malformed_setting_is_refused_naming_it(env: dict[str, str], named: str) -> None:
    # Given a bad setting, When settings are read, Then the error names the variable
    with pytest.raises(SettingsError, match=named):
        WorkerSettings.from_env(({} if named == "ECHO_REDIS_URL" else BASE) | env)


def test_celery_is_configured_for_long_gpu_tasks() -> None:
    # Given settings with a 50 s hard limit and a 60 s visibility timeout
    settings = WorkerSettings.from_env(
        BASE | {"ECHO_TASK_SOFT_TIME_LIMIT_S": "40", "ECHO_TASK_TIME_LIMIT_S": "50", "ECHO_VISIBILITY_TIMEOUT_S": "60"}
    )
    # When the Celery configuration is built
    conf = celery_config(settings)
    # Then late acks, one prefetched task, JSON only, and the limits are in place
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"] and conf["worker_prefetch_multiplier"] == 1
    assert conf["accept_content"] == ["json"] and conf["task_serializer"] == "json"
    assert conf["broker_transport_options"]["visibility_timeout"] == 60 > conf["task_time_limit"] == 50
    assert conf["worker_proc_alive_timeout"] >= 600
    # And each queue has its own exchange and routing key, so bulk work never lands on "tts"
    queues = {q.name: (q.exchange.name, q.routing_key) for q in conf["task_queues"]}
    assert queues == {
        contract.QUEUE_INTERACTIVE: ("tts", "tts"),
        contract.QUEUE_BULK: ("tts-bulk", "tts-bulk"),
        contract.QUEUE_ASSEMBLY: ("tts-assembly", "tts-assembly"),
        contract.QUEUE_WEBHOOKS: ("tts-webhooks", "tts-webhooks"),
    }


def test_the_heartbeat_announces_the_worker_with_a_ttl_and_removes_it_on_stop(redis_url: str) -> None:
    # Given a heartbeat for a worker
    store = JobStore.from_url(redis_url)
    beat = Heartbeat(store, "w1@host", lambda: {"device": "cpu", "busy_job": None}, interval_s=0.05, ttl_s=5)
    # When it starts
    beat.start()
    raw = redis.Redis.from_url(redis_url).get(contract.heartbeat_key("w1@host"))
    ttl = redis.Redis.from_url(redis_url).ttl(contract.heartbeat_key("w1@host"))
    # Then the API sees a live worker whose key expires on its own
    assert raw is not None and json.loads(raw)["device"] == "cpu" and 0 < ttl <= 5
    assert [w["name"] for w in store.live_workers()] == ["w1@host"]
    # And after stop it is gone at once
    beat.stop()
    assert store.live_workers() == []


def test_the_latents_cache_keeps_the_most_recently_used() -> None:
    # Given a cache of two
    cache = LatentsCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    # When "a" is used and a third arrives
    assert cache.get("a") == 1
    cache.put("c", 3)
    # Then "b", the least recently used, was evicted
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3 and len(cache) == 2


def test_tasks_outside_a_loaded_worker_get_a_named_error() -> None:
    # Given a process where worker_process_init never ran, Then the accessor says so
    with pytest.raises(EngineNotReady):
        get_engine()


def test_the_assemble_role_serves_the_cpu_queue_and_a_flag_wins_over_the_setting() -> None:
    # Given the environment of a worker
    env = {"ECHO_REDIS_URL": "redis://localhost:6379/0"}
    # When it is read with no role, with ECHO_WORKER_ROLE=assemble, and with --role render over it
    default = WorkerSettings.from_env(env)
    assembler = WorkerSettings.from_env(env | {"ECHO_WORKER_ROLE": "assemble"})
    flagged = WorkerSettings.from_env(env | {"ECHO_WORKER_ROLE": "assemble"}, role="render")
    # Then the render role takes the GPU queues, the assemble role the CPU queue, and the flag wins
    assert (default.role, default.queues) == ("render", ("tts", "tts-bulk", "tts-webhooks"))
    assert (assembler.role, assembler.queues) == ("assemble", ("tts-assembly", "tts-webhooks"))
    assert flagged.role == "render"
    # And a role that does not exist is refused by name
    with pytest.raises(SettingsError, match="ECHO_WORKER_ROLE='gpu' must be one of render, assemble"):
        WorkerSettings.from_env(env | {"ECHO_WORKER_ROLE": "gpu"})
    # And an assembler (no model) told to consume a rendering queue is stopped, naming the setting
    with pytest.raises(SettingsError, match="ECHO_WORKER_QUEUES=tts,tts-bulk includes a rendering queue"):
        WorkerSettings.from_env(env | {"ECHO_WORKER_QUEUES": "tts,tts-bulk"}, role="assemble")
