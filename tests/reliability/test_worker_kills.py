"""A render worker SIGKILLed at random moments, again and again, over single jobs and a book.

Fault: ``SIGKILL`` of ``python -m worker`` (tiny checkpoint, CPU) at a random moment while it holds a
job or a book's segment group: mid-render, mid-encode, mid-upload or just after; the worker is then
started again under the same name, as a container restart does (``echo-PID@HOST``). The broker's
visibility timeout stays at its default hour, so only the dead-worker recovery can bring the message
back in time: the new life's sweep re-queues what its previous life left in flight
(``worker/recovery.py``).

What must survive: every job ends ``succeeded`` exactly once (the job store's per-state count), with
one upload of its audio (moto's request log: PutObject calls per key); the book succeeds with every
segment uploaded once (no segment rendered twice outside a killed group) and counted once.

``make test`` runs 3 kills (2 on single jobs, 1 on the book); ``make reliability`` runs 20 (14 and 6).
The seed of the kill moments is printed; ``ECHO_KILL_SEED`` replays it.
"""

from __future__ import annotations

import os
import random
import re
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from fault_helpers import RELIABILITY, RecordedS3, finish_book, finish_job, get_book, get_job, recorded_s3_server
from service_helpers import WorkerProcess, wait_for

from jobs.contract import JobState
from jobs.jobstore import JobStore

pytestmark = [pytest.mark.slow, pytest.mark.reliability]  # short here, long with ECHO_RELIABILITY=1

JOB_KILLS, BOOK_KILLS = (14, 6) if RELIABILITY else (2, 1)
JOB_STEPS, BOOK_STEPS = 20, 12


@pytest.fixture
def recorded_s3(tmp_path: Path) -> Iterator[RecordedS3]:
    with recorded_s3_server(tmp_path) as server:
        yield server


@pytest.fixture
def kill_env(service_env: dict[str, str], recorded_s3: RecordedS3) -> dict[str, str]:
    """The test stack on the recording S3 server, with the default visibility timeout (one hour) and
    restore interval: a message left un-acked must not come back through them within the test."""
    shortened = ("ECHO_VISIBILITY_TIMEOUT_S", "ECHO_UNACKED_RESTORE_INTERVAL_S")
    env = {k: v for k, v in service_env.items() if k not in shortened}
    return env | {"ECHO_S3_ENDPOINT_URL": recorded_s3.url, "ECHO_MAX_PIECE_BYTES": "80", "ECHO_BOOK_GROUP_SIZE": "2"}


class Killer:
    """Kills the render worker at random moments and starts it again under the same name."""

    def __init__(self, env: dict[str, str], start_worker: Callable[..., WorkerProcess], rng: random.Random) -> None:
        self.env, self.start_worker, self.rng = env, start_worker, rng
        self.lives = [start_worker(env)]
        self.recoveries: list[float] = []  # SIGKILL → the new life's heartbeat (its sweep ran at start)

    @property
    def worker(self) -> WorkerProcess:
        return self.lives[-1]

    def kill_within(self, window_s: float) -> float:
        """SIGKILL after a random delay in [0, window_s); then restart. Returns the delay."""
        delay = self.rng.uniform(0, window_s)
        time.sleep(delay)
        self.worker.kill()
        killed_at = time.monotonic()
        self.lives.append(self.start_worker(self.env, name=self.worker.name))
        self.recoveries.append(time.monotonic() - killed_at)
        return delay

    def logs(self) -> str:
        return "\n".join(life.output() for life in self.lives)


def test_a_worker_sigkilled_at_random_moments_loses_no_job_and_uploads_each_result_once(
    kill_env: dict[str, str], start_api: Any, start_worker: Any, recorded_s3: RecordedS3
) -> None:
    seed = int(os.environ.get("ECHO_KILL_SEED") or random.randrange(1 << 30))
    print(f"kill moments: ECHO_KILL_SEED={seed}")
    rng = random.Random(seed)
    # Given the API, an assembling worker and one render worker on a recording S3 server
    api = start_api(kill_env)
    start_worker(kill_env | {"ECHO_WORKER_ROLE": "assemble"})
    killer = Killer(kill_env, start_worker, rng)
    store = JobStore.from_url(kill_env["ECHO_REDIS_URL"])
    bucket = kill_env["ECHO_S3_BUCKET"]
    # (one undisturbed job gives the length of a render, the window the kill moments are drawn from)
    began = time.monotonic()
    calm = finish_job(api.url, submit(api.url, 0)["id"])
    assert calm["status"] == "succeeded", calm
    render_s = time.monotonic() - began
    jobs = [calm["id"]]
    finished_after_kill: list[float] = []

    # When the worker is SIGKILLed at a random moment of each of JOB_KILLS single jobs, once running
    for n in range(1, JOB_KILLS + 1):
        job_id = submit(api.url, n)["id"]
        jobs.append(job_id)
        wait_for(lambda j=job_id: get_job(api.url, j)["status"] != "queued", timeout=60, what=f"job {n} to start")
        killer.kill_within(render_s)
        killed_at = time.monotonic() - killer.recoveries[-1]
        done = finish_job(api.url, job_id, timeout=120)
        finished_after_kill.append(time.monotonic() - killed_at)
        # Then it succeeds (the new life took it up from its predecessor's in-flight record)
        assert done["status"] == "succeeded", (done, killer.logs()[-3000:])

    # When a book renders and the worker is SIGKILLed BOOK_KILLS times at random moments of it
    paragraphs = "\n\n".join(f"Sentence {i} of the book under fire." for i in range(4 * BOOK_KILLS + 4))
    body = {
        "title": "Kills",
        "seed": 5,
        "overrides": {"num_steps": BOOK_STEPS},
        "chapters": [{"title": "One", "text": paragraphs}],
    }
    answer = requests.post(f"{api.url}/v1/audiobooks", json=body, timeout=30)
    assert answer.status_code == 202, answer.text
    book_id = answer.json()["id"]
    for k in range(BOOK_KILLS):
        done_before = get_book(api.url, book_id)["segments_done"]
        wait_for(
            lambda: get_book(api.url, book_id)["segments_done"] > done_before,  # noqa: B023
            timeout=120,
            what=f"the book to move on before kill {k + 1}",
            interval=0.1,
        )
        killer.kill_within(render_s)
    book = finish_book(api.url, book_id, timeout=300)

    # Then every job succeeded exactly once: one succeeded transition each, one audio upload each
    uploads = recorded_s3.uploads(bucket)
    for job_id in jobs:
        record = store.get(job_id)
        assert record is not None and record.status is JobState.SUCCEEDED, record
        assert uploads[f"{record.result['key']}"] == 1, (job_id, {k: v for k, v in uploads.items() if job_id in k})
    assert store.counts_by_state()[JobState.SUCCEEDED] == len(jobs)
    redelivered = sum(1 for job_id in jobs if store.get(job_id).attempts > 1)  # type: ignore[union-attr]
    # And the book succeeded, every segment counted once and uploaded once: no segment rendered twice
    # outside a killed group (a re-rendered segment would be uploaded again)
    assert book["status"] == "succeeded", book
    assert book["segments_rendered"] + book["segments_cached"] == book["segments_total"]
    segments = {key: count for key, count in uploads.items() if key.startswith("cache/segments/")}
    assert len(segments) == book["segments_total"] and set(segments.values()) == {1}, segments
    # (what the lives report rendering plus what re-delivered groups found cached is the book: the
    # killed groups never reported)
    reported = sum(int(n) for n in re.findall(r"'rendered': (\d+)", killer.logs()))
    assert reported + book["segments_cached"] == book["segments_total"]
    print(
        f"{JOB_KILLS + BOOK_KILLS} SIGKILLs ({JOB_KILLS} on jobs, {BOOK_KILLS} on a book of "
        f"{book['segments_total']} segments; {redelivered} jobs killed mid-job and re-delivered), jobs lost: 0, "
        "extra uploads: 0; "
        f"kill to restarted worker: median {statistics.median(killer.recoveries):.1f} s, "
        f"max {max(killer.recoveries):.1f} s; kill to job succeeded: median "
        f"{statistics.median(finished_after_kill):.1f} s, max {max(finished_after_kill):.1f} s "
        f"(one undisturbed render: {render_s:.1f} s)"
    )


def submit(url: str, n: int) -> dict[str, Any]:
    body = {"text": f"Job number {n} under fire, spoken once.", "seed": n, "overrides": {"num_steps": JOB_STEPS}}
    answer = requests.post(f"{url}/v1/jobs", json=body, timeout=15)
    assert answer.status_code == 202, answer.text
    return dict(answer.json())
