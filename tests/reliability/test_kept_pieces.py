"""A long job whose delivery is repeated renders only the pieces the lost delivery did not finish.

Fault: the worker is SIGKILLed after its first batches of a long job are rendered (the same happens when
a Redis outage makes the broker hand the message out again). What must survive: the pieces already
rendered (kept under ``jobs/{id}/pieces/``); the next delivery renders only the others, the job succeeds
with the audio an uninterrupted render gives, byte for byte, and the kept pieces are deleted after.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
from service_helpers import wait_for

from jobs.contract import job_pieces_prefix
from jobs.jobstore import JobStore
from jobs.settings import StorageSettings
from jobs.storage import S3Storage

pytestmark = pytest.mark.slow
LONG = " ".join(f"Sentence number {i} of a longer answer, said at an easy pace." for i in range(12))


def test_a_killed_long_job_keeps_its_finished_pieces_and_renders_the_same_audio(
    service_env: dict[str, str], start_worker: Any, start_api: Any
) -> None:
    # Given a worker that renders ~150-byte pieces two at a time, and a long job on it
    env = service_env | {"ECHO_MAX_PIECE_BYTES": "150", "ECHO_BATCH_SIZE": "2"}
    api = start_api(env)
    doomed = start_worker(env)
    body = {"text": LONG, "format": "wav", "seed": 11, "overrides": {"num_steps": 4}}
    job = requests.post(f"{api.url}/v1/jobs", json=body, timeout=10).json()

    def view(job_id: str) -> dict[str, Any]:
        return dict(requests.get(f"{api.url}/v1/jobs/{job_id}", timeout=10).json())

    wait_for(lambda: view(job["id"])["progress"]["segments_done"] >= 2, timeout=120, what="the first batch")
    # When the worker is SIGKILLed and comes back under its own name (as a restarted container does)
    doomed.kill()
    start_worker(env, name=doomed.name)
    done = wait_for(
        lambda: (v := view(job["id"]))["status"] in ("succeeded", "failed") and v, timeout=150, what="the job"
    )
    # Then it succeeded, and the pieces the first delivery finished were not rendered again
    assert isinstance(done, dict) and done["status"] == "succeeded", done
    record = JobStore.from_url(env["ECHO_REDIS_URL"]).get(job["id"])
    assert record is not None and record.attempts == 2 and record.result is not None
    kept = [p["index"] for p in record.result["pieces"] if p.get("kept")]
    assert len(kept) >= 2 and kept == list(range(len(kept)))
    # and its audio is what the same request renders uninterrupted, byte for byte
    twin = requests.post(f"{api.url}/v1/jobs", json=body, timeout=10).json()
    wait_for(lambda: view(twin["id"])["status"] == "succeeded", timeout=150, what="the uninterrupted twin")
    storage = S3Storage(StorageSettings.from_env(env))
    audio = storage.get_bytes(record.result["key"])
    assert audio == storage.get_bytes(f"jobs/{twin['id']}/audio.wav")
    # and nothing is left of the kept pieces
    assert storage.list_keys(job_pieces_prefix(job["id"])) == []
