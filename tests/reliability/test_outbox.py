"""A job stored by an API that died before sending its message still renders: a worker sends it.

Fault: an API process killed after ``JobStore.create`` and before ``send_synthesis`` (or before it took the
job out of the outbox). Stood in for by storing the record exactly as the API does and sending nothing.
What survives: the job, which a worker's sweep sends once it is ``ECHO_OUTBOX_GRACE_S`` old (1 s here,
300 s by default), and which then succeeds once.
"""

from __future__ import annotations

from typing import Any

import pytest
from service_helpers import wait_for

from jobs.contract import JobState, SynthesisRequest
from jobs.jobstore import JobStore
from jobs.records import new_id

pytestmark = pytest.mark.slow


def test_a_job_whose_api_died_before_sending_it_is_sent_by_a_worker_and_succeeds_once(
    service_env: dict[str, str], start_worker: Any
) -> None:
    # Given a job stored as the API stores it, whose message was never sent
    store = JobStore.from_url(service_env["ECHO_REDIS_URL"])
    job_id = new_id("job")
    request = SynthesisRequest(job_id=job_id, text="Hello there.", seed=3, overrides={"num_steps": 2}, owner="alice")
    store.create("alice", request.to_dict(), job_id=job_id, queue_timeout_s=600)
    assert store.unsent(older_than_s=0) == [job_id]
    # When a worker starts whose outbox grace is 1 s
    worker = start_worker(service_env | {"ECHO_OUTBOX_GRACE_S": "1"})
    # Then its sweep sends the job, it succeeds on its first delivery, and the outbox is empty
    wait_for(lambda: store.get(job_id).status is JobState.SUCCEEDED, timeout=60, what="the job")  # type: ignore[union-attr]
    record = store.get(job_id)
    assert record is not None and record.attempts == 1 and store.unsent(older_than_s=0) == []
    assert "never sent; sending it now" in worker.output()
