"""Streamed speech over real HTTP: ``POST /v1/audio/speech`` answers as the pieces render.

A real API process, a real ``python -m worker`` on the tiny checkpoint, Redis and the S3 server on loopback.
What must hold: the answer starts before the job has finished (the first piece is short and rendered
alone); the streamed audio is the stored file's audio; SSE is what OpenAI's SDK reads; a chunk that a
re-delivered render sends again is not sent twice; failures before the first chunk are ordinary errors.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import numpy as np
import pytest
import redis
import requests
import soundfile as sf
from api_helpers import API_KEYS, ApiServer, while_waiting
from service_helpers import ApiProcess, wait_for

from jobs.audio_stream import AudioStream
from jobs.jobstore import JobStore

FAST = {"num_steps": 2}
KEYS = ",".join(f"{name}:{token}" for name, token in API_KEYS.items())
AUTH = {"Authorization": f"Bearer {API_KEYS['alice']}"}
# ~1,200 bytes: several pieces, the first one short and rendered alone
LONG = " ".join(f"Sentence number {i} of a longer answer, said at an easy pace." for i in range(20))


@pytest.fixture
def stack(service_env: dict[str, str], start_worker: Callable[..., Any], start_api: Callable[..., ApiProcess]) -> str:
    # ~200-byte pieces: LONG is about seven; generous limits, the tiny model shares two cores with the suite
    limits = {"ECHO_TASK_SOFT_TIME_LIMIT_S": "120", "ECHO_TASK_TIME_LIMIT_S": "150", "ECHO_VISIBILITY_TIMEOUT_S": "200"}
    start_worker(service_env | limits | {"ECHO_MAX_PIECE_BYTES": "200", "ECHO_BATCH_SIZE": "4"})
    return start_api(service_env | {"ECHO_API_KEYS": KEYS}).url


def _job(url: str, job_id: str) -> dict[str, Any]:
    """The job's view once it is final."""

    def final() -> dict[str, Any] | None:
        view = dict(requests.get(f"{url}/v1/jobs/{job_id}", headers=AUTH, timeout=10).json())
        return view if view["status"] not in ("queued", "running") else None

    return dict(wait_for(final, timeout=30, what=f"job {job_id} to finish"))


def _stored_pcm(url: str, job: dict[str, Any]) -> bytes:
    audio = requests.get(job["result"]["url"], headers=AUTH, timeout=30)
    assert audio.status_code == 200, audio.text
    return audio.content


def _parse_sse(lines: Iterator[str]) -> list[tuple[str, dict[str, Any]]]:
    events, kind = [], ""
    for line in lines:
        if line.startswith("event: "):
            kind = line[len("event: ") :]
        elif line.startswith("data: "):
            events.append((kind, json.loads(line[len("data: ") :])))
    return events


@pytest.mark.slow
def test_raw_audio_starts_before_the_job_finishes_and_is_the_stored_audio(stack: str) -> None:
    # Given a worker that cuts text into ~150-byte pieces and renders four at a time
    # When a long text is asked for as pcm at the model's rate, read as the bytes arrive
    body = {"input": LONG, "voice": "none", "response_format": "pcm", "sample_rate": 44100, "overrides": FAST}
    with requests.post(f"{stack}/v1/audio/speech", json=body, headers=AUTH, stream=True, timeout=120) as answer:
        assert answer.status_code == 200, answer.text
        chunks = answer.iter_content(chunk_size=None)
        first = next(chunks)
        first_audio_at = time.time()
        streamed = first + b"".join(chunks)
    # (the answer ends once the job has stored its file: its record already says succeeded)
    assert (
        requests.get(f"{stack}/v1/jobs/{answer.headers['X-Job-Id']}", headers=AUTH, timeout=10).json()["status"]
        == "succeeded"
    )
    job = _job(stack, answer.headers["X-Job-Id"])
    # Then the first audio came before the job finished (the rest was still rendering)
    assert job["status"] == "succeeded" and job["progress"]["segments_total"] >= 5, job.get("error")
    assert first_audio_at < datetime.fromisoformat(job["finished_at"]).timestamp()
    assert answer.headers["Content-Type"] == "audio/L16; rate=44100; channels=1"
    # And the streamed bytes are the stored file's, byte for byte (no resampling at the model rate)
    assert streamed == _stored_pcm(stack, job)


@pytest.mark.slow
def test_a_streamed_wav_has_a_header_any_reader_takes_and_the_same_samples(stack: str) -> None:
    # Given the same worker
    # When a long text is asked for as wav (streamed: the header cannot know the length)
    body = {"input": LONG, "voice": "none", "response_format": "wav", "seed": 3, "overrides": FAST}
    answer = requests.post(f"{stack}/v1/audio/speech", json=body, headers=AUTH, timeout=120)
    assert answer.status_code == 200, answer.text
    # Then soundfile reads it whole, at 44.1 kHz, with the job's duration
    samples, rate = sf.read(io.BytesIO(answer.content), dtype="int16")
    job = _job(stack, answer.headers["X-Job-Id"])
    assert rate == 44100 and len(samples) / rate == pytest.approx(job["result"]["duration_s"], abs=1e-3)
    # and the samples are the stored wav's
    stored, _ = sf.read(io.BytesIO(requests.get(job["result"]["url"], headers=AUTH, timeout=30).content), dtype="int16")
    assert np.array_equal(samples, stored)


@pytest.mark.slow
def test_the_official_sdk_reads_the_sse_stream_and_the_deltas_are_the_audio(stack: str) -> None:
    from openai import OpenAI, Stream

    # Given the official SDK pointed at the API
    client = OpenAI(base_url=f"{stack}/v1", api_key=API_KEYS["alice"], max_retries=0, timeout=120)
    # When it asks for sse and lets its own stream reader parse the events
    with client.audio.speech.with_streaming_response.create(
        model="tts-1",
        voice="none",
        input=LONG,
        response_format="pcm",
        stream_format="sse",
        extra_body={"overrides": FAST, "sample_rate": 44100},
    ) as response:
        job_id = response.headers["X-Job-Id"]
        events: list[Any] = list(Stream(cast_to=object, response=response.http_response, client=client))
    # Then there are deltas, then one done with usage counting the input's bytes
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "speech.audio.done" and set(kinds[:-1]) == {"speech.audio.delta"} and len(kinds) >= 6
    assert events[-1]["usage"]["input_tokens"] == len(LONG.encode())
    # and the deltas put together are the stored pcm
    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    assert audio == _stored_pcm(stack, _job(stack, job_id))


def _as_worker(api: ApiServer, redis_client: redis.Redis, script: Callable[[str, JobStore, AudioStream], None]) -> Any:
    """While a streamed speech request waits, the test plays its worker: ``script(job_id, store, stream)``."""
    store = JobStore.from_url(api.env["ECHO_REDIS_URL"])
    stream = AudioStream(store.r)
    return while_waiting(redis_client, lambda job_id: script(job_id, store, stream))


def test_chunks_a_redelivered_render_sends_again_reach_the_client_once(
    api: ApiServer, redis_client: redis.Redis
) -> None:
    # Given a "worker" that sends chunks 0 and 1, dies, and whose re-delivery sends 0, 1, 2 and the end
    def worker(job_id: str, store: JobStore, stream: AudioStream) -> None:
        store.mark_running(job_id, worker="first")
        for seq in (0, 1, 0, 1, 2):
            stream.publish(job_id, seq, bytes([seq]) * 4, 24000)
        stream.finish(job_id, 3, 24000)
        store.succeed(job_id, {"key": f"jobs/{job_id}/audio.pcm", "duration_s": 0.0}, {})

    player = _as_worker(api, redis_client, worker)
    # When alice asks for pcm speech
    answer = api.call("POST", "/v1/audio/speech", json={"input": "Hello.", "voice": "none", "response_format": "pcm"})
    player.join(timeout=10)
    # Then each chunk arrived once, in order
    assert answer.status_code == 200, answer.text
    assert answer.content == b"\x00" * 4 + b"\x01" * 4 + b"\x02" * 4


def test_a_job_that_fails_after_audio_was_sent_ends_the_sse_stream_with_an_error_event(
    api: ApiServer, redis_client: redis.Redis
) -> None:
    # Given a "worker" that sends one chunk, then fails the job (a model error)
    def worker(job_id: str, store: JobStore, stream: AudioStream) -> None:
        store.mark_running(job_id, worker="w")
        stream.publish(job_id, 0, b"\x01\x00" * 8, 24000)
        store.fail(job_id, "render_failed", "RuntimeError: the model broke")

    player = _as_worker(api, redis_client, worker)
    # When alice asks for speech as SSE
    body = {"input": "Hello.", "voice": "none", "response_format": "pcm", "stream_format": "sse"}
    answer = api.call("POST", "/v1/audio/speech", json=body)
    player.join(timeout=10)
    # Then the status was already 200: the audio came as a delta and the failure as an error event
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/event-stream")
    events = _parse_sse(iter(answer.text.splitlines()))
    assert [kind for kind, _ in events] == ["speech.audio.delta", "error"]
    assert base64.b64decode(events[0][1]["audio"]) == b"\x01\x00" * 8
    assert events[1][1]["error"] == {"code": "render_failed", "message": "RuntimeError: the model broke"}


def test_sse_for_a_format_that_cannot_be_cut_is_422_naming_stream_format(api: ApiServer) -> None:
    # Given / When sse is asked for flac
    body = {"input": "Hello.", "voice": "none", "response_format": "flac", "stream_format": "sse"}
    answer = api.call("POST", "/v1/audio/speech", json=body)
    # Then it is 422 naming stream_format and the formats it carries, and nothing was queued
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["details"]["errors"][0]["field"] == "stream_format" and "pcm, wav, mp3" in error["message"]
