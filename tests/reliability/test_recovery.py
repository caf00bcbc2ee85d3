"""The dead-worker sweep against a real Redis: what is re-queued, and what is left alone."""

from __future__ import annotations

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from jobs.bookstore import BookStore
from jobs.company import WaitingRoom, claim_tag, claimed_job
from jobs.contract import JobState, heartbeat_key, inflight_key
from jobs.jobstore import JobStore
from worker.recovery import InFlight, send_unsent, sweep


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


def test_a_worker_restarted_under_its_own_name_requeues_what_its_previous_life_left(
    redis_client: redis.Redis,
) -> None:
    # Fault: a worker SIGKILLed mid-task and restarted under the same name (a container restart keeps
    # echo-PID@HOST): its heartbeat is live again at once, so no other worker's sweep would touch it.
    InFlight(redis_client, "w@h", life="previous").started("tag-old", "echo.synthesize", "t1", {"job_id": "job_a"})
    redis_client.set(heartbeat_key("w@h"), "{}", ex=30)
    # And the new life has a message of its own in flight
    InFlight(redis_client, "w@h", life="current").started("tag-new", "echo.synthesize", "t2", {"job_id": "job_b"})
    restored: list[str] = []
    # When the new life sweeps
    requeued = sweep(redis_client, restored.append, me="w@h", life="current")
    # Then only the previous life's message is re-queued; the new life's own message stays in flight
    assert restored == ["tag-old"] and [r["job_id"] for r in requeued] == ["job_a"]
    assert redis_client.hkeys(inflight_key("w@h")) == ["tag-new"]
    # Survives: the dead life's message, without waiting for the visibility timeout
    assert sweep(redis_client, restored.append, me="w@h", life="current") == []


def test_an_entry_of_this_life_whose_task_ended_while_redis_was_down_is_requeued_at_the_next_sweep(
    redis_client: redis.Redis,
) -> None:
    # Fault: Redis unreachable when a task ends, so neither its ack nor its entry's removal lands
    active: set[str] = set()
    inflight = InFlight(redis_client, "w@h", life="this", active=active)
    inflight.started("tag-done", "echo.synthesize", "t1", {"job_id": "job_a"})
    inflight.started("tag-running", "echo.synthesize", "t2", {"job_id": "job_b"})
    unreachable = redis.Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    broken = InFlight(unreachable, "w@h", life="this", active=active)
    with pytest.raises(redis.ConnectionError):
        broken.finished("tag-done")
    restored: list[str] = []
    # When this life sweeps once Redis answers again
    requeued = sweep(redis_client, restored.append, me="w@h", life="this", active=active)
    # Then the ended task's message is re-queued now, not after the visibility timeout; the running one stays
    assert restored == ["tag-done"] and [r["job_id"] for r in requeued] == ["job_a"]
    assert redis_client.hkeys(inflight_key("w@h")) == ["tag-running"]


def test_jobs_a_dead_worker_claimed_into_its_batch_are_handed_to_the_restore_by_their_claim_tags(
    redis_client: redis.Redis,
) -> None:
    # Fault: a worker dies while rendering a batch; two waiting jobs had been claimed into it
    store = JobStore(redis_client)
    room = WaitingRoom(store)
    request = {"text": "Short.", "preset": "default", "overrides": {}}
    lead, first, second = (store.create("alice", request)[0].id for _ in range(3))
    for job_id in (first, second):
        room.offer(job_id, request)
    assert room.claim(lead, request, limit=2, max_text_bytes=300, worker="dead@h", life="x") == [first, second]
    # And a live worker that claimed one too, which is rendering it now (its tag marked active)
    other = store.create("alice", request)[0].id
    room.offer(other, request)
    redis_client.set(heartbeat_key("live@h"), "{}", ex=30)
    assert room.claim(lead, request, limit=1, max_text_bytes=300, worker="live@h", life="y") == [other]
    restored: list[str] = []
    # When a sweep runs
    sweep(redis_client, restored.append, me="me@h")
    # Then the dead worker's claimed jobs go to the restore by their claim tags (the Celery app re-sends
    # their messages: worker/celery_app.py), and the live worker's claim stays
    assert sorted(restored) == sorted(claim_tag(job_id) for job_id in (first, second))
    assert [claimed_job(tag) for tag in redis_client.hkeys(inflight_key("live@h"))] == [other]
    # And the jobs are running under the dead worker's claim until a delivery releases it
    record = store.get(first)
    assert record is not None and record.status is JobState.RUNNING and record.claimed_by == "dead@h"


def test_a_job_stored_but_never_sent_is_sent_once_after_the_grace_and_nothing_else_is(
    redis_client: redis.Redis,
) -> None:
    # Fault: an API process killed between storing a job and sending its message (or reporting it sent)
    clock = [1000.0]
    store = JobStore(redis_client, clock=lambda: clock[0])
    orphan, sent, canceled = (store.create("alice", {"text": "Hi."})[0].id for _ in range(3))
    store.sent(sent)  # this one's API reported its message sent
    store.request_cancel(canceled)
    clock[0] += 200.0
    young = store.create("alice", {"text": "Hi."})[0].id  # stored 100 s before the sweep: maybe still sending
    clock[0] += 100.0
    messages: list[str] = []
    # When a worker's sweep runs (twice: the second finds nothing left)
    first = send_unsent(store, lambda record: messages.append(record.id), grace_s=300.0)
    second = send_unsent(store, lambda record: messages.append(record.id), grace_s=300.0)
    # Then only the queued job past the grace was sent, once; the canceled one left the outbox unsent
    assert first == messages == [orphan] and second == []
    assert store.unsent(older_than_s=0) == [young]
    # And a book stored and never sent is sent the same way, from its own outbox
    books = BookStore(redis_client, clock=lambda: clock[0])
    book = books.create("alice", {"book_id": "b", "seed": 1}, title="T", author=None)[0].id
    clock[0] += 301.0
    assert send_unsent(books, lambda record: messages.append(record.id), grace_s=300.0) == [book]
    assert messages[-1] == book and books.unsent(older_than_s=0) == []
