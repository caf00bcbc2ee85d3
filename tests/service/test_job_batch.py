"""Cross-job batching without Celery: a real Redis job store and waiting room, local-disk storage and a fake
pipeline whose audio depends on each item's text, seed and voice, so a job given another job's piece,
seed or voice would show it.

What survives what: a claimed job is running under its claimer with an in-flight entry ``claim:{id}``; its
own message is dropped while that claimer lives, and renders the job once it is gone. A claimed job whose
upload meets a storage outage is handed back (its message sent again) and the next delivery uploads the
spooled render without rendering again.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import torch

from echo_tts.canvas import CanvasPolicy
from echo_tts.errors import InvalidInput
from echo_tts.speaker import SpeakerLatents
from jobs import contract
from jobs.company import WaitingRoom, claim_tag
from jobs.contract import ErrorCode, JobState, SynthesisRequest
from jobs.jobstore import JobStore
from jobs.records import new_id
from jobs.settings import SettingsError
from jobs.storage import LocalStorage, TransientStorageError
from worker import job_batch
from worker.engine import Engine
from worker.job_batch import company_sizes
from worker.recovery import InFlight
from worker.runner import run_synthesis
from worker.settings import WorkerSettings

WORKER = "w1@test"


class VoicedPipeline:
    """Each item's samples come from its text, seed and voice; records every sampler call."""

    model_revision = "fake"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.refuse: str | None = None  # a text the "model" rejects (InvalidInput) when it is in a batch
        self.on_step: Any = lambda: None

    def encode_speaker(self, audio: Any) -> SpeakerLatents:
        level = int(hashlib.sha256(bytes(audio)).hexdigest()[:4], 16) / 65536
        return SpeakerLatents(torch.full((1, 4, 80), level), torch.ones(1, 4, dtype=torch.bool))

    def synthesize_batch(
        self, texts: Sequence[str], speakers: Sequence[Any], config: Any, seeds: Sequence[int], **hooks: Any
    ) -> list[Any]:
        from echo_tts.errors import Cancelled
        from echo_tts.pipeline import SynthesisResult

        self.calls.append(list(texts))
        if self.refuse in texts and len(texts) > 1:
            raise InvalidInput("a text the model refuses")
        if self.refuse in texts:
            raise InvalidInput("this text is refused")
        for step in range(1, config.num_steps + 1):
            self.on_step()
            if hooks["should_cancel"]():
                raise Cancelled("stop")
            hooks["progress"](step, config.num_steps)
        out = []
        for text, speaker, seed in zip(texts, speakers, seeds, strict=True):
            voice = 0.0 if speaker is None else float(speaker.latents.mean())
            rng = np.random.default_rng([seed, len(text), int(voice * 1e6)])
            out.append(SynthesisResult(rng.uniform(-0.5, 0.5, 2205).astype(np.float32), 44100, {"settings": {}}))
        return out


class Resent(list[str]):
    """Records the job ids a worker sends again (Celery's part, in the real worker)."""

    def __call__(self, job_id: str) -> None:
        self.append(job_id)


def _engine(redis_url: str, folder: Path, **env: str) -> Engine:
    settings = WorkerSettings.from_env(
        {
            "ECHO_REDIS_URL": redis_url,
            "ECHO_STORAGE_DIR": str(folder),
            "ECHO_BATCH_WINDOW_MS": "0",
            "ECHO_JOB_BATCHING": "true",  # the default, auto, batches on CUDA only
            **env,
        }
    )
    storage = LocalStorage(settings.storage.local_dir)
    storage.ensure_bucket()
    engine = Engine(settings, VoicedPipeline(), storage, JobStore.from_url(redis_url))
    engine.worker_name = WORKER
    engine.inflight = InFlight(engine.jobs.r, WORKER, life="life-1", active=set())
    engine.resend = Resent()
    engine.jobs.heartbeat(WORKER)
    return engine


@pytest.fixture
def engine(redis_url: str, tmp_path: Path) -> Engine:
    return _engine(redis_url, tmp_path / "s")


@pytest.fixture(autouse=True)
def _clean_redis(redis_url: str) -> None:
    JobStore.from_url(redis_url).r.flushdb()


def _queue(engine: Engine, text: str = "Hello there.", **changes: Any) -> dict[str, Any]:
    """Store a queued job as the API does (record, then an offer to the waiting room); its message."""
    job_id = new_id("job")
    values = {"job_id": job_id, "text": text, "seed": 3, "overrides": {"num_steps": 4}, "owner": "alice"} | changes
    request = SynthesisRequest(**values)
    if request.speaker_key:
        engine.storage.put_bytes(request.speaker_key, request.speaker_key.encode(), content_type="audio/wav")
    engine.jobs.create("alice", request.to_dict(), job_id=job_id)
    WaitingRoom(engine.jobs).offer(job_id, request.to_dict())
    return request.to_dict()


def _audio(engine: Engine, job_id: str) -> bytes:
    record = engine.jobs.get(job_id)
    assert record is not None and record.status is JobState.SUCCEEDED, record
    return engine.storage.get_bytes(record.result["key"])  # type: ignore[index]


def test_a_short_job_takes_waiting_jobs_into_its_sampler_call_and_each_gets_its_own_track(
    engine: Engine, redis_url: str, tmp_path: Path
) -> None:
    # Given a lead and three waiting jobs with the same settings: two voices, no voice, other formats
    lead = _queue(engine, "The lead sentence.", speaker_key="uploads/a/ref.wav")
    waiting = [
        _queue(engine, "A second speaker here.", speaker_key="uploads/b/ref.wav", seed=11),
        _queue(engine, "No voice at all.", seed=12, format="flac"),
        _queue(engine, "The first voice again, longer.", speaker_key="uploads/a/ref.wav", seed=13),
    ]
    # When the lead's message runs
    outcome = run_synthesis(engine, lead)
    # Then one sampler call rendered all four, and every job succeeded on its own record
    assert outcome["status"] == JobState.SUCCEEDED
    assert engine.pipeline.calls == [[p["text"] for p in [lead, *waiting]]]
    for payload in [lead, *waiting]:
        record = engine.jobs.get(payload["job_id"])
        assert record is not None and record.status is JobState.SUCCEEDED
        assert record.timings is not None and record.timings["batch_jobs"] == 4
        assert record.progress.segments_done == record.progress.segments_total == 1
    # And each file is the one the job renders alone (its own text, seed and voice)
    solo = _engine(redis_url, tmp_path / "solo", ECHO_JOB_BATCHING="false")
    for payload in [lead, *waiting]:
        copy = _queue(solo, **{k: v for k, v in payload.items() if k != "job_id"})
        run_synthesis(solo, copy)
        assert _audio(engine, payload["job_id"]) == _audio(solo, copy["job_id"])
    assert len(solo.pipeline.calls) == 4
    # And the claims are released: no in-flight entry, nothing marked active
    assert engine.jobs.r.hlen(contract.inflight_key(WORKER)) == 0 and not engine.inflight.active


def test_only_waiting_jobs_that_can_share_the_call_are_taken(engine: Engine) -> None:
    # Given waiting jobs: other settings, too long for one piece, streamed, canceled, and past their deadline
    lead = _queue(engine)
    other_settings = _queue(engine, overrides={"num_steps": 5})
    too_long = _queue(engine, "word " * 100)
    streamed = _queue(engine, stream=True, format="pcm")
    canceled = _queue(engine)
    engine.jobs.request_cancel(canceled["job_id"])
    overdue = _queue(engine)
    engine.jobs.r.hset(f"echo:job:{overdue['job_id']}", "deadline_ts", "1")
    fits = _queue(engine)
    # When the lead runs
    run_synthesis(engine, lead)
    # Then only the job that fits went with it; the others are untouched (queued, canceled or expired later)
    assert engine.pipeline.calls == [[lead["text"], fits["text"]]]
    for payload in (other_settings, too_long, streamed, overdue):
        assert engine.jobs.get(payload["job_id"]).status is JobState.QUEUED  # type: ignore[union-attr]
    assert engine.jobs.get(canceled["job_id"]).status is JobState.CANCELED  # type: ignore[union-attr]
    counts = engine.jobs.counts_by_state()
    assert counts[JobState.QUEUED] == 4 and counts[JobState.RUNNING] == 0 and counts[JobState.SUCCEEDED] == 2


def test_a_batch_takes_no_more_pieces_than_the_batch_size(redis_url: str, tmp_path: Path) -> None:
    # Given a batch size of 3, a lead and four waiting jobs
    engine = _engine(redis_url, tmp_path / "s", ECHO_BATCH_SIZE="3")
    lead = _queue(engine)
    waiting = [_queue(engine, f"Waiting job {i}.") for i in range(4)]
    # When the lead runs
    run_synthesis(engine, lead)
    # Then it took the two oldest; the other two still wait for their own messages
    assert engine.pipeline.calls == [[lead["text"], waiting[0]["text"], waiting[1]["text"]]]
    assert [engine.jobs.get(p["job_id"]).status for p in waiting[2:]] == [JobState.QUEUED] * 2  # type: ignore[union-attr]


def test_company_that_arrives_inside_the_window_joins_the_lead(redis_url: str, tmp_path: Path) -> None:
    # Given a lead that may wait up to 2 s for company, and a job submitted 100 ms after it starts
    engine = _engine(redis_url, tmp_path / "s", ECHO_BATCH_WINDOW_MS="2000")
    lead = _queue(engine)
    late: list[dict[str, Any]] = []
    threading.Timer(0.1, lambda: late.append(_queue(engine, "Just in time."))).start()
    # When the lead runs
    run_synthesis(engine, lead)
    # Then the late job was rendered in the lead's call
    assert engine.pipeline.calls == [[lead["text"], "Just in time."]]
    assert engine.jobs.get(late[0]["job_id"]).status is JobState.SUCCEEDED  # type: ignore[union-attr]


def test_a_claimed_jobs_own_message_is_dropped_while_its_claimer_lives_and_renders_once_it_is_gone(
    redis_url: str, tmp_path: Path
) -> None:
    # Given a worker w1 rendering a batch that holds a claimed job (stopped inside its sampler call)
    engine = _engine(redis_url, tmp_path / "s")
    other = _engine(redis_url, tmp_path / "s", ECHO_JOB_BATCHING="false")
    other.worker_name = "w2@test"
    lead, claimed = _queue(engine), _queue(engine, "Claimed one.")
    seen: dict[str, Any] = {}

    def deliver_elsewhere() -> None:  # w2 receives the claimed job's own message meanwhile
        if "outcome" not in seen:
            seen["outcome"] = run_synthesis(other, claimed)

    engine.pipeline.on_step = deliver_elsewhere
    run_synthesis(engine, lead)
    # Then w2 dropped it without rendering: w1 was alive and answered for it
    assert seen["outcome"]["skipped"] is True and seen["outcome"]["held_by"] == WORKER
    assert other.pipeline.calls == []
    assert engine.jobs.get(claimed["job_id"]).status is JobState.SUCCEEDED  # type: ignore[union-attr]

    # Given another claimed job whose claimer died (entry left, heartbeat gone)
    lead2, orphan = _queue(engine), _queue(engine, "Orphaned one.")
    room = WaitingRoom(engine.jobs)
    assert room.claim(lead2["job_id"], lead2, limit=1, max_text_bytes=300, worker="dead@test", life="x") == [
        orphan["job_id"]
    ]
    # When its own message reaches w2
    outcome = run_synthesis(other, orphan)
    # Then w2 released the claim and rendered it
    assert outcome["status"] == JobState.SUCCEEDED and other.pipeline.calls == [["Orphaned one."]]


def test_a_claimed_job_cannot_be_started_by_its_message_until_the_claim_is_released(engine: Engine) -> None:
    # Given a job claimed by a worker
    lead, claimed = _queue(engine), _queue(engine, "Claimed.")
    room = WaitingRoom(engine.jobs)
    room.claim(lead["job_id"], lead, limit=1, max_text_bytes=300, worker="w9", life="x")
    # When something tries to start it, Then the store refuses until the claimer's claim is released
    assert engine.jobs.mark_running(claimed["job_id"], worker="w2") is False
    assert room.release(claimed["job_id"], "someone-else") is False
    assert room.release(claimed["job_id"], "w9") is True
    assert engine.jobs.mark_running(claimed["job_id"], worker="w2") is True
    # And the claim wrote the entry a sweep would re-send it by
    entry = json.loads(engine.jobs.r.hget(contract.inflight_key("w9"), claim_tag(claimed["job_id"])))
    assert entry["job_id"] == claimed["job_id"] and entry["batch_lead"] == lead["job_id"]


def test_a_claimed_job_whose_upload_meets_an_outage_is_handed_back_and_uploaded_without_rendering(
    engine: Engine,
) -> None:
    # Given storage that refuses the claimed job's audio upload once
    lead, claimed = _queue(engine), _queue(engine, "Claimed.")
    real_put = engine.storage.put_file
    failures = iter([True])

    def flaky(key: str, *args: Any, **kwargs: Any) -> None:
        if claimed["job_id"] in key and next(failures, False):
            raise TransientStorageError("503")
        real_put(key, *args, **kwargs)

    engine.storage.put_file = flaky  # type: ignore[method-assign]
    # When the batch runs
    assert run_synthesis(engine, lead)["status"] == JobState.SUCCEEDED
    # Then the claimed job was handed back: its message sent again, its entry gone, still running
    assert engine.resend == [claimed["job_id"]]
    assert engine.jobs.r.hlen(contract.inflight_key(WORKER)) == 0
    assert engine.jobs.get(claimed["job_id"]).status is JobState.RUNNING  # type: ignore[union-attr]
    # And the re-sent message uploads the spooled render without rendering it again
    assert run_synthesis(engine, claimed)["status"] == JobState.SUCCEEDED
    assert engine.pipeline.calls == [[lead["text"], "Claimed."]]


def test_a_batch_the_model_refuses_renders_each_job_alone_and_only_the_bad_one_fails(engine: Engine) -> None:
    # Given a lead and a waiting job whose text the model refuses
    lead, bad, good = _queue(engine), _queue(engine, "Refused text."), _queue(engine, "Fine text.")
    engine.pipeline.refuse = "Refused text."
    # When the lead runs
    run_synthesis(engine, lead)
    # Then the batch was refused, each rendered alone, and only the refused job failed, with its code
    assert engine.pipeline.calls[1:] == [["Refused text."], ["Fine text."], [lead["text"]]]
    assert engine.jobs.get(lead["job_id"]).status is JobState.SUCCEEDED  # type: ignore[union-attr]
    assert engine.jobs.get(good["job_id"]).status is JobState.SUCCEEDED  # type: ignore[union-attr]
    failed = engine.jobs.get(bad["job_id"])
    assert failed is not None and failed.error["code"] == ErrorCode.INVALID_INPUT  # type: ignore[index]


def test_a_job_canceled_inside_a_batch_is_canceled_and_the_others_finish(engine: Engine) -> None:
    # Given a batch of three in which one job is canceled while the sampler runs
    lead, doomed, other = _queue(engine), _queue(engine, "Doomed."), _queue(engine, "Other.")
    engine.pipeline.on_step = lambda: engine.jobs.request_cancel(doomed["job_id"])
    # When it runs
    run_synthesis(engine, lead)
    # Then the canceled job uploaded nothing; the lead and the other succeeded
    assert engine.jobs.get(doomed["job_id"]).status is JobState.CANCELED  # type: ignore[union-attr]
    assert not engine.storage.exists(contract.job_audio_key(doomed["job_id"], "wav"))
    assert engine.jobs.get(lead["job_id"]).status is JobState.SUCCEEDED  # type: ignore[union-attr]
    assert engine.jobs.get(other["job_id"]).status is JobState.SUCCEEDED  # type: ignore[union-attr]


def test_a_streamed_job_never_leads_a_batch(engine: Engine) -> None:
    # Given a streamed lead and a waiting job
    lead, waiting = _queue(engine, stream=True, format="pcm"), _queue(engine)
    # When the lead runs, Then it rendered alone and the other still waits
    run_synthesis(engine, lead)
    assert engine.pipeline.calls == [[lead["text"]]]
    assert engine.jobs.get(waiting["job_id"]).status is JobState.QUEUED  # type: ignore[union-attr]


def test_with_fitted_canvases_only_company_of_the_leads_canvas_is_taken(engine: Engine) -> None:
    # Given fitted canvases (each canvas length is a sampler run of its own), a short lead, a short waiting
    # job (the same 128-frame canvas) and a long one (~250 bytes: a 448-frame canvas)
    engine.pipeline.canvas = CanvasPolicy("auto")  # type: ignore[attr-defined]
    lead, short = _queue(engine, "A short lead."), _queue(engine, "Short company.")
    long = _queue(engine, "A much longer waiting request that needs a canvas of its own size. " * 4)
    assert company_sizes(engine, SynthesisRequest.from_dict(lead))[1] < len(long["text"].encode())
    # When the lead runs
    run_synthesis(engine, lead)
    # Then only the short job shared its call; the long one still waits, for a lead of its own size
    assert engine.pipeline.calls == [[lead["text"], short["text"]]]
    assert engine.jobs.get(long["job_id"]).status is JobState.QUEUED  # type: ignore[union-attr]
    other_lead = _queue(engine, "A much longer leading request that needs a canvas of its own size. " * 4)
    run_synthesis(engine, other_lead)
    assert engine.pipeline.calls[-1] == [other_lead["text"], long["text"]]


@pytest.mark.parametrize(("device", "batched"), [("cpu", False), ("cuda", True), ("cuda:1", True)])
def test_by_default_jobs_are_batched_on_cuda_only(redis_url: str, tmp_path: Path, device: str, batched: bool) -> None:
    # Given the default setting (auto) on a worker of this device, a lead and a waiting job
    engine = _engine(redis_url, tmp_path / "s", ECHO_JOB_BATCHING="auto")
    engine.device = device
    lead, waiting = _queue(engine), _queue(engine, "Waiting.")
    # When the lead runs, Then it took the other job along only on CUDA
    run_synthesis(engine, lead)
    assert (engine.pipeline.calls == [[lead["text"], waiting["text"]]]) is batched


@pytest.mark.parametrize(("raw", "parsed"), [(None, None), ("auto", None), ("true", True), ("off", False)])
def test_the_batching_setting_reads_auto_or_a_boolean(raw: str | None, parsed: bool | None) -> None:
    env = {"ECHO_REDIS_URL": "redis://r:6379/0"} | ({"ECHO_JOB_BATCHING": raw} if raw else {})
    assert WorkerSettings.from_env(env).job_batching is parsed
    with pytest.raises(SettingsError, match="ECHO_JOB_BATCHING"):
        WorkerSettings.from_env(env | {"ECHO_JOB_BATCHING": "sometimes"})


def test_a_failure_right_after_the_claim_hands_the_claimed_jobs_back(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given Redis failing just after a lead claimed a waiting job
    lead, waiting = _queue(engine), _queue(engine, "Waiting.")

    def lost(_engine: Engine, _job_id: str) -> None:
        raise redis.ConnectionError("connection lost")

    monkeypatch.setattr(job_batch, "_companion", lost)
    # When the lead runs, Then the error reaches its task (which retries it)
    with pytest.raises(redis.ConnectionError):
        run_synthesis(engine, lead)
    # And the claimed job was handed back: its message sent again, no entry left, nothing marked active
    assert engine.resend == [waiting["job_id"]]
    assert engine.jobs.r.hlen(contract.inflight_key(WORKER)) == 0 and not engine.inflight.active


def test_a_running_jobs_message_is_rendered_even_when_a_live_worker_has_a_delivery_entry_for_it(
    engine: Engine,
) -> None:
    # Fault: Redis came back after a task of live worker w2 ended while it was down; w2's delivery entry for
    # the job is still there, and kombu restored the job's message, which reaches this worker
    job = _queue(engine, "Restored.")
    engine.jobs.mark_running(job["job_id"], worker="w2@test")
    engine.jobs.heartbeat("w2@test")
    InFlight(engine.jobs.r, "w2@test", life="w2", active=set()).started("7", "echo.synthesize", "t", job)
    # When the message runs here, Then it renders (only a claim lets a message be dropped: w2's sweep would
    # restore this delivery by tag, which does nothing once this worker has acked it)
    assert run_synthesis(engine, job)["status"] == JobState.SUCCEEDED
