"""The job flow without Celery: a fake pipeline, a real Redis job store and local-disk storage.

What survives what: the record lives in Redis and the result in storage, so a re-delivered task
(worker killed, broker redelivery) finds either a finished record (skip), stored audio (finish
the record, no render), or nothing (render again). A storage retry on the same machine reuses
the spooled render.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from echo_tts.speaker import SpeakerLatents
from jobs import contract
from jobs.contract import ErrorCode, JobState, SynthesisRequest, VoiceState
from jobs.jobstore import JobStore
from jobs.storage import LocalStorage, TransientStorageError
from worker.engine import Engine
from worker.runner import run_synthesis
from worker.settings import WorkerSettings
from worker.voices import encode_voice


class FakePipeline:
    model_revision = "fake"

    def __init__(self) -> None:
        self.rendered: list[list[str]] = []
        self.encoded = 0
        self.on_step: Callable[[int], None] = lambda step: None

    def encode_speaker(self, audio: Any) -> SpeakerLatents:
        if audio == b"not audio":
            from echo_tts.errors import InvalidAudio

            raise InvalidAudio("not audio")
        self.encoded += 1
        return SpeakerLatents(torch.zeros(1, 4, 80), torch.ones(1, 4, dtype=torch.bool))

    def synthesize_batch(
        self,
        texts: Sequence[str],
        speakers: Sequence[Any],
        config: Any,
        seeds: Sequence[int],
        *,
        progress: Any = None,
        should_cancel: Any = None,
    ) -> list[Any]:
        from echo_tts.errors import Cancelled
        from echo_tts.pipeline import SynthesisResult

        self.rendered.append(list(texts))
        for step in range(1, config.num_steps + 1):
            self.on_step(step)
            if should_cancel():
                raise Cancelled("stop")
            progress(step, config.num_steps)
        return [
            SynthesisResult(
                np.random.default_rng(s).uniform(-0.5, 0.5, 4410).astype(np.float32), 44100, {"settings": {}}
            )
            for s in seeds
        ]


@pytest.fixture
def engine(redis_url: str, tmp_path: Path) -> Engine:
    settings = WorkerSettings.from_env({"ECHO_REDIS_URL": redis_url, "ECHO_STORAGE_DIR": str(tmp_path / "s")})
    storage = LocalStorage(settings.storage.local_dir)
    storage.ensure_bucket()
    return Engine(settings, FakePipeline(), storage, JobStore.from_url(redis_url))


def _submit(engine: Engine, **changes: Any) -> dict[str, Any]:
    record, _ = engine.jobs.create("alice", {})
    values = {"job_id": record.id, "text": "Hello there.", "seed": 3, "overrides": {"num_steps": 4}} | changes
    return SynthesisRequest(**values).to_dict()


def test_a_queued_job_renders_uploads_and_succeeds_with_result_and_timings(engine: Engine) -> None:
    # Given a queued job
    payload = _submit(engine, format="flac")
    # When the runner takes it
    outcome = run_synthesis(engine, payload)
    # Then the record says succeeded with the stored key, and the audio is a FLAC file
    record = engine.jobs.get(payload["job_id"])
    assert outcome["status"] == JobState.SUCCEEDED and record is not None and record.status is JobState.SUCCEEDED
    assert record.result is not None and record.result["key"] == contract.job_audio_key(record.id, "flac")
    assert engine.storage.get_bytes(record.result["key"])[:4] == b"fLaC"
    assert record.result["bytes"] == engine.storage.size(record.result["key"])
    assert {"queue_s", "render_s", "rtf", "model_s", "encode_s", "upload_s"} <= set(record.timings or {})
    assert record.progress.fraction == 1.0 and record.attempts == 1


def test_a_redelivered_finished_job_is_not_rendered_again(engine: Engine) -> None:
    # Given a job that already succeeded
    payload = _submit(engine)
    run_synthesis(engine, payload)
    # When the same message is delivered again
    outcome = run_synthesis(engine, payload)
    # Then nothing renders a second time
    assert outcome["skipped"] is True and len(engine.pipeline.rendered) == 1


def test_stored_audio_with_an_unfinished_record_finishes_the_record_without_rendering(engine: Engine) -> None:
    # Given a worker that uploaded the result and died before updating the record
    payload = _submit(engine)
    run_synthesis(engine, payload)
    key = f"{engine.jobs.prefix}:job:{payload['job_id']}"
    engine.jobs.r.hset(key, mapping={"status": "running", "result": ""})
    # When the task is re-delivered
    outcome = run_synthesis(engine, payload)
    # Then the record is finished from the stored description, without a render
    record = engine.jobs.get(payload["job_id"])
    assert outcome["skipped"] is True and len(engine.pipeline.rendered) == 1
    assert record is not None and record.status is JobState.SUCCEEDED and record.result is not None


def test_a_job_canceled_while_queued_is_never_rendered(engine: Engine) -> None:
    payload = _submit(engine)
    # Given a cancel before any worker took the job
    engine.jobs.request_cancel(payload["job_id"])
    # When the task arrives, Then it does nothing
    assert run_synthesis(engine, payload)["status"] == JobState.CANCELED and engine.pipeline.rendered == []


def test_a_cancel_while_rendering_stops_between_steps_and_uploads_nothing(engine: Engine) -> None:
    # Given a render during which the client cancels at step 2
    payload = _submit(engine, overrides={"num_steps": 30})
    engine.pipeline.on_step = lambda step: step == 2 and engine.jobs.request_cancel(payload["job_id"])
    # When it runs
    outcome = run_synthesis(engine, payload)
    # Then the job is canceled and nothing was stored
    assert outcome["status"] == JobState.CANCELED
    assert engine.storage.list_keys(f"jobs/{payload['job_id']}/") == []


def test_a_stored_voice_is_encoded_once_and_then_only_loaded(engine: Engine) -> None:
    # Given a pending voice with a reference in storage
    engine.storage.put_bytes("voices/v1/reference.wav", b"RIFF", content_type="audio/wav")
    engine.voices.create("alice", "Ann", "voices/v1/reference.wav", voice_id="v1")
    # When the encode-voice task runs, then two jobs use the voice (one after the cache is emptied)
    assert encode_voice(engine, "v1")["status"] == VoiceState.READY
    run_synthesis(engine, _submit(engine, voice_id="v1", owner="alice"))
    engine.latents = type(engine.latents)(2)
    run_synthesis(engine, _submit(engine, voice_id="v1", owner="alice"))
    # Then the reference was encoded exactly once and the latents are stored
    assert engine.pipeline.encoded == 1 and engine.storage.exists(contract.voice_latents_key("v1"))
    assert encode_voice(engine, "v1")["skipped"] is True


@pytest.mark.parametrize(
    ("changes", "setup", "code"),
    [
        ({"voice_id": "nope"}, None, ErrorCode.VOICE_NOT_FOUND),
        ({"speaker_key": "uploads/x/speaker.wav"}, None, ErrorCode.INVALID_INPUT),
        ({"speaker_key": "uploads/x/speaker.wav"}, b"not audio", ErrorCode.INVALID_AUDIO),
        ({"format": "ogg"}, None, ErrorCode.INVALID_INPUT),
    ],
)
def test_bad_input_fails_the_job_at_once_with_a_code(
    engine: Engine, changes: dict, setup: bytes | None, code: ErrorCode
) -> None:
    # Given a job whose input cannot work
    if setup is not None:
        engine.storage.put_bytes("uploads/x/speaker.wav", setup, content_type="audio/wav")
    payload = _submit(engine) | changes
    # When it runs, Then it fails with the code
    run_synthesis(engine, payload)
    record = engine.jobs.get(payload["job_id"])
    assert record is not None and record.status is JobState.FAILED and record.error["code"] == code  # type: ignore[index]


def test_a_job_that_kills_its_worker_again_and_again_fails_as_worker_lost(engine: Engine) -> None:
    # Given a job already delivered MAX_DELIVERIES times without finishing
    payload = _submit(engine)
    for _ in range(contract.MAX_DELIVERIES):
        engine.jobs.mark_running(payload["job_id"])
    # When it is delivered once more, Then it fails instead of looping
    run_synthesis(engine, payload)
    record = engine.jobs.get(payload["job_id"])
    assert record is not None and record.error["code"] == ErrorCode.WORKER_LOST  # type: ignore[index]


def test_a_transient_upload_error_is_raised_for_retry_and_the_retry_reuses_the_render(engine: Engine) -> None:
    # Given storage that refuses the first audio upload as a transient error
    real_put = engine.storage.put_file
    failures = iter([True])

    def flaky(*args: Any, **kwargs: Any) -> None:
        if next(failures, False):
            raise TransientStorageError("503")
        real_put(*args, **kwargs)

    engine.storage.put_file = flaky  # type: ignore[method-assign]
    payload = _submit(engine)
    # When the first attempt fails, Then the error escapes for Celery to retry
    with pytest.raises(TransientStorageError):
        run_synthesis(engine, payload)
    # And the retry succeeds without rendering again
    assert run_synthesis(engine, payload, retries=1)["status"] == JobState.SUCCEEDED
    assert len(engine.pipeline.rendered) == 1
    stored = json.loads(engine.storage.get_bytes(contract.job_result_key(payload["job_id"])))
    assert stored["result"]["seed"] == 3
