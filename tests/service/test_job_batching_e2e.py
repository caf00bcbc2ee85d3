"""Cross-job batching through real processes: the API over HTTP, ``python -m worker`` on the tiny checkpoint,
Redis and the S3 server on loopback.

What must hold: short jobs that wait while the worker is busy are rendered in one sampler call when it is
free; each keeps its own voice and seed, so its audio is the audio the same request gives alone.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import requests
import soundfile as sf
from fault_helpers import finish_job, submit_job
from service_helpers import ApiProcess

FAST = {"num_steps": 2}
LONG = " ".join(f"Sentence number {i} keeps the worker busy for a while." for i in range(12))


def _tone(hz: float) -> bytes:
    t = np.arange(int(44100 * 1.5)) / 44100
    buffer = io.BytesIO()
    sf.write(buffer, (0.3 * np.sin(2 * np.pi * hz * t)).astype("float32"), 44100, format="WAV")
    return buffer.getvalue()


def _submit(url: str, text: str, seed: int, reference: bytes | None) -> dict[str, Any]:
    """A short wav job; ``reference``: a one-shot voice uploaded with it (None: no voice)."""
    if reference is None:
        return submit_job(url, text=text, seed=seed, format="wav", overrides=FAST)
    answer = requests.post(
        f"{url}/v1/jobs",
        files={"speaker_audio": ("ref.wav", reference, "audio/wav")},
        data={"text": text, "seed": str(seed), "format": "wav", "overrides": '{"num_steps": 2}'},
        timeout=15,
    )
    assert answer.status_code == 202, answer.text
    return dict(answer.json())


def _samples(job: dict[str, Any]) -> np.ndarray:
    audio = requests.get(job["result"]["url"], timeout=30)
    assert audio.status_code == 200, audio.text
    samples, _ = sf.read(io.BytesIO(audio.content), dtype="int16")
    return np.asarray(samples, dtype=np.int32)


@pytest.mark.slow
def test_waiting_jobs_render_in_one_call_and_each_sounds_as_it_does_alone(
    service_env: dict[str, str], start_worker: Callable[..., Any], start_api: Callable[..., ApiProcess]
) -> None:
    # Given one worker, four pieces per sampler call, busy with a long job
    url = start_api(service_env).url
    # (batching switched on: its default, auto, batches on CUDA only)
    start_worker(service_env | {"ECHO_BATCH_SIZE": "4", "ECHO_MAX_PIECE_BYTES": "200", "ECHO_JOB_BATCHING": "true"})
    busy = submit_job(url, text=LONG, seed=1, overrides={"num_steps": 40})  # seconds of work: time to queue three
    # When three short jobs with two different voices and none are submitted meanwhile
    requests_ = [
        ("The first voice speaks here.", 21, _tone(180.0)),
        ("And a second voice answers.", 22, _tone(600.0)),
        ("Nobody's voice at all.", 23, None),
    ]
    batched = [_submit(url, text, seed, ref) for text, seed, ref in requests_]
    # Then once the worker is free they render together: all three in one sampler call
    assert finish_job(url, busy["id"])["status"] == "succeeded"
    finished = [finish_job(url, job["id"]) for job in batched]
    assert [job["status"] for job in finished] == ["succeeded"] * 3, [job["error"] for job in finished]
    assert [job["timings"].get("batch_jobs") for job in finished] == [3, 3, 3]
    # And each one's audio is what the same request gives alone (same seed and voice; float32 on the CPU
    # batches to within ~1e-4 of a lone render, a few steps of 16 bits)
    for (text, seed, ref), job in zip(requests_, finished, strict=True):
        alone = finish_job(url, _submit(url, text, seed, ref)["id"])
        assert "batch_jobs" not in alone["timings"]
        together, single = _samples(job), _samples(alone)
        assert together.shape == single.shape and np.abs(together - single).max() <= 16
    # And the voice mattered: the first text and seed with the second job's voice sound different
    swapped = finish_job(url, _submit(url, requests_[0][0], requests_[0][1], requests_[1][2])["id"])
    first, other_voice = _samples(finished[0]), _samples(swapped)
    span = min(first.size, other_voice.size)
    assert first.size != other_voice.size or np.abs(first[:span] - other_voice[:span]).max() > 16
