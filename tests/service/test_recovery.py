"""The dead-worker sweep against a real Redis: what is re-queued, and what is left alone."""

from __future__ import annotations

import redis

from jobs.contract import heartbeat_key, inflight_key
from worker.recovery import InFlight, sweep

pytest_plugins = ["api_fixtures"]


def test_only_the_messages_of_workers_without_a_heartbeat_are_requeued(redis_client: redis.Redis) -> None:
    # Given a live worker and a dead one (no heartbeat), each with a message in flight, and this sweeper
    redis_client.set(heartbeat_key("live@h"), "{}", ex=30)
    InFlight(redis_client, "live@h").started("tag-live", "echo.synthesize", "t1", {"job_id": "job_a"})
    InFlight(redis_client, "dead@h").started("tag-dead", "echo.book.render_group", "t2", {"book_id": "book_b"})
    InFlight(redis_client, "me@h").started("tag-me", "echo.synthesize", "t3", {"job_id": "job_c"})
    restored: list[str] = []
    # When a sweep runs (twice: a second sweep finds nothing left to do)
    first = sweep(redis_client, restored.append, me="me@h")
    second = sweep(redis_client, restored.append, me="me@h")
    # Then only the dead worker's message was handed to the restore, once, with its ids
    assert restored == ["tag-dead"] and second == []
    assert [(r["worker"], r["task"], r["book_id"]) for r in first] == [("dead@h", "echo.book.render_group", "book_b")]
    # And the dead worker's record is gone while the others' stay
    assert not redis_client.exists(inflight_key("dead@h"))
    assert redis_client.hkeys(inflight_key("live@h")) == ["tag-live"]
    assert redis_client.hkeys(inflight_key("me@h")) == ["tag-me"]


def test_a_finished_message_leaves_the_in_flight_record(redis_client: redis.Redis) -> None:
    # Given a message in flight
    inflight = InFlight(redis_client, "w@h")
    inflight.started("7", "echo.synthesize", "t", {"job_id": "j"})
    # When it finishes, Then nothing is left to re-queue should the worker die later
    inflight.finished("7")
    assert sweep(redis_client, lambda tag: None) == []
