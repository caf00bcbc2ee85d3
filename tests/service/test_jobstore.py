"""jobs.jobstore against a real redis-server."""

from __future__ import annotations

import threading

import pytest
import redis

from jobs.contract import JobState
from jobs.jobstore import IdempotencyConflict, InvalidCursor, JobStore

pytest_plugins = ["api_fixtures"]

REQUEST = {"text": "Hello there.", "seed": 7, "format": "wav"}


class Clock:
    def __init__(self, start: float = 1_760_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def store(redis_client: redis.Redis) -> JobStore:
    return JobStore(redis_client, job_ttl_s=600, clock=Clock())


def test_a_created_job_is_queued_with_its_request_and_timestamps(store: JobStore) -> None:
    # Given / When a job is created
    record, created = store.create("alice", REQUEST)
    # Then it reads back queued, owned, with the request echo and both time forms
    again = store.get(record.id)
    assert created and again == record
    assert record.status is JobState.QUEUED and record.owner == "alice" and record.request == REQUEST
    assert record.id.startswith("job_") and len(record.id) == 36
    assert record.created_at.endswith("Z") and record.created_ts == 1_760_000_001.0
    assert record.started_at is None and record.result is None


def test_a_job_record_has_a_ttl_and_the_owner_index_outlives_it(store: JobStore, redis_client: redis.Redis) -> None:
    # Given / When a job is created with a 600 s retention
    record, _ = store.create("alice", REQUEST)
    # Then its hash expires, and the owner's index lasts longer
    assert 0 < redis_client.ttl(f"echo:job:{record.id}") <= 600
    assert 600 < redis_client.ttl("echo:jobs:alice") <= 1200


def test_the_owner_index_sheds_ids_older_than_twice_the_retention(redis_client: redis.Redis) -> None:
    # Given a job created long ago (by the store's clock)
    clock = Clock()
    store = JobStore(redis_client, job_ttl_s=600, clock=clock)
    old, _ = store.create("alice", REQUEST)
    # When a new job is created more than twice the retention later
    clock.now += 1300
    new, _ = store.create("alice", REQUEST)
    # Then only the new id remains in the index
    assert redis_client.zrange("echo:jobs:alice", 0, -1) == [new.id] and old.id != new.id


def test_another_owner_does_not_see_the_job(store: JobStore) -> None:
    # Given a job of alice
    record, _ = store.create("alice", REQUEST)
    # When bob asks for it, Then it does not exist for him
    assert store.get(record.id, owner="bob") is None
    assert store.get(record.id, owner="alice") is not None
    assert store.get("job_unknown") is None


def test_the_same_idempotency_key_and_body_return_the_same_job(store: JobStore) -> None:
    # Given a job created with an idempotency key
    first, created = store.create("alice", REQUEST, idempotency_key="k1")
    # When the same owner sends the same key and body again
    second, created_again = store.create("alice", dict(REQUEST), idempotency_key="k1")
    # Then the earlier job comes back and nothing new is created
    assert created and not created_again and second.id == first.id
    assert store.list_jobs("alice")[0] == [first]


def test_the_same_idempotency_key_with_another_body_conflicts(store: JobStore) -> None:
    # Given a job created with an idempotency key
    first, _ = store.create("alice", REQUEST, idempotency_key="k1")
    # When the key is reused with another body, Then it conflicts and names the first job
    with pytest.raises(IdempotencyConflict) as info:
        store.create("alice", {**REQUEST, "text": "Other."}, idempotency_key="k1")
    assert info.value.job_id == first.id
    # And another owner may use the same key freely
    assert store.create("bob", {**REQUEST, "text": "Other."}, idempotency_key="k1")[1]


def test_concurrent_creates_with_one_key_make_one_job(api_redis_url: str) -> None:
    # Given eight threads racing with the same key and body
    stores = [JobStore.from_url(api_redis_url) for _ in range(8)]
    stores[0].r.flushdb()
    ids: list[str] = []
    threads = [
        threading.Thread(target=lambda s=s: ids.append(s.create("a", REQUEST, idempotency_key="k")[0].id))
        for s in stores
    ]
    # When they all create
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then exactly one job exists
    assert len(set(ids)) == 1 and len(stores[0].list_jobs("a")[0]) == 1


def test_listing_is_newest_first_with_a_cursor_and_a_status_filter(store: JobStore) -> None:
    # Given five jobs, two of them running
    jobs = [store.create("alice", {**REQUEST, "n": i})[0] for i in range(5)]
    store.create("bob", REQUEST)
    for job in jobs[1:3]:
        assert store.mark_running(job.id)
    # When alice pages two at a time
    page1, cursor1 = store.list_jobs("alice", limit=2)
    page2, cursor2 = store.list_jobs("alice", limit=2, cursor=cursor1)
    page3, cursor3 = store.list_jobs("alice", limit=2, cursor=cursor2)
    # Then she sees her five jobs newest first, each once, and the last page has no cursor
    assert [j.id for j in page1 + page2 + page3] == [j.id for j in reversed(jobs)]
    assert cursor1 and cursor2 and cursor3 is None
    # And a status filter keeps only the running ones
    running, _ = store.list_jobs("alice", status=[JobState.RUNNING])
    assert {j.id for j in running} == {jobs[1].id, jobs[2].id}


def test_listing_skips_expired_records(store: JobStore, redis_client: redis.Redis) -> None:
    # Given two jobs, one of which expired
    kept, gone = store.create("alice", REQUEST)[0], store.create("alice", REQUEST)[0]
    redis_client.delete(f"echo:job:{gone.id}")
    # When listing, Then only the live one is there
    assert [j.id for j in store.list_jobs("alice")[0]] == [kept.id]


def test_a_foreign_cursor_is_refused(store: JobStore) -> None:
    # Given / When a made-up cursor is used, Then it is refused by name
    with pytest.raises(InvalidCursor):
        store.list_jobs("alice", cursor="not-a-cursor")


def test_a_job_runs_reports_progress_and_succeeds_with_timings(store: JobStore) -> None:
    # Given a queued job
    job, _ = store.create("alice", REQUEST)
    # When a worker runs it, reports progress and succeeds
    assert store.mark_running(job.id)
    assert store.update_progress(job.id, fraction=0.5, step=4, total_steps=8, segments_done=0, segments_total=1)
    assert store.succeed(job.id, {"key": "jobs/x/audio.wav", "duration_s": 2.0}, {"load_s": 0.1})
    # Then the record carries the result, times and timings
    done = store.get(job.id)
    assert done is not None and done.status is JobState.SUCCEEDED
    assert done.result == {"key": "jobs/x/audio.wav", "duration_s": 2.0}
    assert done.started_ts == job.created_ts + 1 and done.finished_ts is not None
    assert done.timings == {"queue_s": 1.0, "render_s": 1.0, "rtf": 0.5, "load_s": 0.1}
    assert done.progress.fraction == 1.0 and done.attempts == 1


def test_progress_never_moves_backwards(store: JobStore) -> None:
    # Given a running job at 60 %
    job, _ = store.create("alice", REQUEST)
    store.mark_running(job.id)
    store.update_progress(job.id, fraction=0.6, step=6, total_steps=10, segments_done=1, segments_total=2)
    # When an older update arrives late
    moved = store.update_progress(job.id, fraction=0.4, step=4, total_steps=10, segments_done=1, segments_total=2)
    # Then it is ignored
    record = store.get(job.id)
    assert not moved and record is not None and record.progress.fraction == 0.6 and record.progress.step == 6


def test_progress_is_only_written_while_running(store: JobStore) -> None:
    # Given a queued job, When progress arrives, Then it is ignored
    job, _ = store.create("alice", REQUEST)
    assert not store.update_progress(job.id, fraction=0.5)


def test_a_job_fails_with_a_code_and_message(store: JobStore) -> None:
    # Given a running job
    job, _ = store.create("alice", REQUEST)
    store.mark_running(job.id)
    # When it fails
    assert store.fail(job.id, "invalid_audio", "not audio")
    # Then the error is recorded and a late success cannot overwrite it
    assert not store.succeed(job.id, {"key": "k"})
    record = store.get(job.id)
    assert record is not None and record.status is JobState.FAILED
    assert record.error == {"code": "invalid_audio", "message": "not audio"}


def test_cancel_while_queued_cancels_at_once_and_the_worker_skips_it(store: JobStore) -> None:
    # Given a queued job
    job, _ = store.create("alice", REQUEST)
    # When it is canceled (twice: cancel is idempotent)
    first, second = store.request_cancel(job.id), store.request_cancel(job.id)
    # Then it is canceled, and a worker picking it up must not run it
    assert first is not None and first.status is JobState.CANCELED and first.finished_ts is not None
    assert second == first
    assert store.is_cancel_requested(job.id) and not store.mark_running(job.id)


def test_cancel_while_running_sets_the_flag_and_the_worker_finishes(store: JobStore) -> None:
    # Given a running job
    job, _ = store.create("alice", REQUEST)
    store.mark_running(job.id)
    # When cancel is requested
    record = store.request_cancel(job.id)
    # Then it stays running with the flag, until the worker marks it canceled
    assert record is not None and record.status is JobState.RUNNING and record.cancel_requested
    assert store.is_cancel_requested(job.id) and not store.mark_running(job.id)
    assert store.mark_canceled(job.id)
    final = store.get(job.id)
    assert final is not None and final.status is JobState.CANCELED


def test_cancel_of_a_finished_job_changes_nothing(store: JobStore) -> None:
    # Given a succeeded job
    job, _ = store.create("alice", REQUEST)
    store.mark_running(job.id)
    store.succeed(job.id, {"key": "k"})
    # When cancel is requested, Then it is still succeeded
    record = store.request_cancel(job.id)
    assert record is not None and record.status is JobState.SUCCEEDED and not record.cancel_requested
    assert store.request_cancel("job_unknown") is None


def test_a_redelivered_running_job_may_run_again_and_counts_attempts(store: JobStore) -> None:
    # Given a job that a worker started and then died on
    job, _ = store.create("alice", REQUEST)
    store.mark_running(job.id)
    started = store.get(job.id)
    # When another worker picks it up
    assert store.mark_running(job.id)
    # Then it is still running from the first start, on its second attempt
    again = store.get(job.id)
    assert started is not None and again is not None
    assert again.attempts == 2 and again.started_ts == started.started_ts


def test_a_queued_job_can_expire(store: JobStore) -> None:
    # Given a queued job, When it expires, Then it is terminal and cannot run
    job, _ = store.create("alice", REQUEST)
    assert store.mark_expired(job.id) and not store.mark_running(job.id)


def test_heartbeats_list_live_workers_and_expire(store: JobStore, redis_client: redis.Redis) -> None:
    # Given two workers, one of whose heartbeats lapsed
    store.heartbeat("w1", {"queues": ["tts"]})
    store.heartbeat("w2")
    redis_client.delete("echo:heartbeat:w2")
    # When listing, Then only the live one shows, with its info
    (live,) = store.live_workers()
    assert live["name"] == "w1" and live["queues"] == ["tts"]
    assert 0 < redis_client.ttl("echo:heartbeat:w1") <= 30


def test_counts_by_state_follow_every_transition_without_a_scan(store: JobStore) -> None:
    # Given three jobs: one stays queued, one succeeds, one is canceled while queued
    waiting, _ = store.create("alice", {"text": "a"})
    done, _ = store.create("alice", {"text": "b"})
    dropped, _ = store.create("bob", {"text": "c"})
    assert store.mark_running(done.id) and store.mark_running(done.id)  # a re-delivery counts once
    assert store.succeed(done.id, {"key": "jobs/x/audio.wav", "duration_s": 1.0})
    assert store.mark_canceled_if_queued(dropped.id)
    # When the counts are read
    counts = store.counts_by_state()
    # Then each job is counted once, in the state it is in now
    assert counts[JobState.QUEUED] == 1 and counts[JobState.RUNNING] == 0
    assert counts[JobState.SUCCEEDED] == 1 and counts[JobState.CANCELED] == 1
    assert counts[JobState.FAILED] == 0 and counts[JobState.EXPIRED] == 0
    # And a refused transition (the job is no longer queued) moves nothing
    assert not store.mark_canceled_if_queued(done.id)
    assert store.counts_by_state() == counts
    assert waiting.status is JobState.QUEUED
