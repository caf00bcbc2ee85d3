"""Out of memory, or the model failing, inside one job: that job fails with a code that says which, and
the same worker process serves the next job.

Fault: the render of one job fails inside ``Pipeline.synthesize_batch`` in a real ``python -m worker`` on
the tiny checkpoint. The fault is loaded only into this test's worker, through ``tests/reliability/shims``
on its ``PYTHONPATH`` (see ``shims/sitecustomize.py``): torch's CPU allocator refusing a petabyte,
Python's ``MemoryError``, CUDA's ``torch.OutOfMemoryError``, and a shape error inside torch.

What must survive: the worker (same process, still beating) and the next job, which succeeds; nothing
is left ``running``; the failed job's record says ``out_of_memory`` with a message naming what to lower
(the text, ``ECHO_BATCH_SIZE``), or ``render_failed`` for the model error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fault_helpers import finish_job, submit_job
from service_helpers import ROOT, heartbeat

pytestmark = pytest.mark.slow
SHIMS = Path(__file__).with_name("shims")


FAULTS = [  # (the word that triggers it, the code the job must fail with, what its message must say)
    ("oomcpu", "out_of_memory", "can't allocate memory"),
    ("oompython", "out_of_memory", "MemoryError"),
    ("oomcuda", "out_of_memory", "OutOfMemoryError"),
    ("modelbreak", "render_failed", "RuntimeError"),
]


def test_a_job_that_runs_out_of_memory_or_breaks_the_model_fails_alone_and_the_worker_serves_the_next(
    service_env: dict[str, str], start_api: Any, start_worker: Any
) -> None:
    # Given the API and one worker whose pipeline fails on texts holding one of the FAULTS' words
    env = service_env | {"ECHO_BATCH_SIZE": "3"}
    api = start_api(env)
    worker = start_worker(env | {"PYTHONPATH": f"{SHIMS}:{ROOT}"})
    for word, code, says in FAULTS:
        # When a job's render hits the fault
        job = submit_job(api.url, text=f"This sentence says {word} once.")
        failed = finish_job(api.url, job["id"], timeout=120)
        # Then that job failed with the code that says which fault (nothing is left running)
        assert failed["status"] == "failed", (word, failed)
        assert failed["error"]["code"] == code, (word, failed["error"])
        assert says in failed["error"]["message"], (word, failed["error"])
        if code == "out_of_memory":  # and the message names what to lower
            message = failed["error"]["message"]
            assert "shorter text" in message and "ECHO_BATCH_SIZE (now 3)" in message, message
        # And the same worker process serves the next job
        after = finish_job(api.url, submit_job(api.url, text=f"The job after {code} renders.")["id"], timeout=120)
        assert after["status"] == "succeeded", (word, after)
        assert worker.proc.poll() is None, worker.output()[-3000:]
        beat = heartbeat(worker.redis_url, worker.name)
        assert beat is not None and beat["pid"] == worker.proc.pid
