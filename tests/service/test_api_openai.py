"""POST /v1/audio/speech, OpenAI-compatible synchronous speech, over real HTTP.

The rendering tests run the API and a real ``python -m worker`` on the tiny checkpoint; the refusal,
timeout, failure and cancel tests use the shared API process with no worker (the job waits in the queue,
and the test moves its record the way a worker or another client would).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import soundfile as sf
from api_helpers import API_KEYS, ApiServer, queued_tasks, wav_bytes, while_waiting
from service_helpers import ApiProcess

from jobs.jobstore import JobStore

pytest_plugins = ["api_fixtures"]
FAST = {"num_steps": 2}
KEYS = ",".join(f"{name}:{token}" for name, token in API_KEYS.items())


def speech(url: str, body: dict[str, Any], as_: str = "alice", **kwargs: Any) -> requests.Response:
    return requests.post(
        f"{url}/v1/audio/speech", json=body, timeout=60, headers={"Authorization": f"Bearer {API_KEYS[as_]}"}, **kwargs
    )


def upload_voice(url: str, as_: str) -> str:
    answer = requests.post(
        f"{url}/v1/voices",
        files={"file": ("me.wav", wav_bytes(), "audio/wav")},
        headers={"Authorization": f"Bearer {API_KEYS[as_]}"},
        timeout=30,
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def the_field(answer: requests.Response) -> str:
    return str(answer.json()["error"]["details"]["errors"][0]["field"])


@pytest.mark.slow
def operator_voices(tmp_path: Path) -> Path:
    """A voices directory (``ECHO_VOICES_DIR``) holding the operator's voice ``narrator``."""
    voices = tmp_path / "voices"
    voices.mkdir()
    (voices / "narrator.wav").write_bytes(wav_bytes())
    return voices


def test_speech_answers_decodable_mp3_wav_and_pcm_with_a_stored_or_an_operator_voice(
    service_env: dict[str, str], start_worker: Callable[..., Any], start_api: Callable[..., ApiProcess], tmp_path: Path
) -> None:
    # Given one worker (it creates the bucket), the API with keys and an operator voice, and a voice alice uploaded
    start_worker(service_env)
    api = start_api(service_env | {"ECHO_API_KEYS": KEYS, "ECHO_VOICES_DIR": str(operator_voices(tmp_path))})
    own = upload_voice(api.url, "alice")
    # When alice asks for speech the way an OpenAI client does (mp3 is the default format)
    mp3 = speech(
        api.url, {"model": "tts-1", "input": "Hello there, world.", "voice": own, "seed": 7, "overrides": FAST}
    )
    wav = speech(
        api.url,
        {
            "model": "echo-tts",
            "input": "Hello there.",
            "voice": "narrator.wav",
            "response_format": "wav",
            "speed": 1.0,
            "overrides": FAST,
        },
    )
    pcm = speech(
        api.url,
        {"model": "tts-1", "input": "Hi.", "voice": {"id": "narrator"}, "response_format": "pcm", "overrides": FAST},
    )
    # Then each answer is the audio itself, with its content type, and it decodes
    assert mp3.status_code == 200, mp3.text
    assert mp3.headers["Content-Type"] == "audio/mpeg" and mp3.headers["X-Seed"] == "7"
    from echo_tts.audio import load_audio

    assert load_audio(mp3.content).shape[-1] > 0
    assert wav.status_code == 200 and wav.headers["Content-Type"] == "audio/wav", wav.text
    samples, rate = sf.read(io.BytesIO(wav.content))
    assert rate == 44100 and len(samples) > 0
    assert pcm.status_code == 200 and pcm.headers["Content-Type"] == "audio/L16; rate=24000; channels=1", pcm.text
    # (pcm, wav and mp3 are streamed as they render: no length is known up front, the job's record has it)
    pcm_job = requests.get(
        f"{api.url}{pcm.headers['Location']}", timeout=10, headers={"Authorization": f"Bearer {API_KEYS['alice']}"}
    ).json()
    assert len(pcm.content) % 2 == 0 and pcm_job["result"]["duration_s"] == pytest.approx(
        len(pcm.content) / 2 / 24000, abs=1e-3
    )
    # And each was an ordinary job of alice's that records the model asked for
    job = requests.get(
        f"{api.url}{mp3.headers['Location']}", timeout=10, headers={"Authorization": f"Bearer {API_KEYS['alice']}"}
    ).json()
    assert job["status"] == "succeeded" and job["request"]["voice"] == own
    assert job["request"]["metadata"] == {"endpoint": "/v1/audio/speech", "model": "tts-1"}


def test_an_unknown_voice_and_another_keys_voice_are_404(api: ApiServer) -> None:
    # Given a voice bob uploaded
    bobs = upload_voice(api.url, "bob")
    # When alice asks for speech with it, and with an OpenAI voice name this server does not have
    theirs = speech(api.url, {"input": "Hello.", "voice": bobs})
    unknown = speech(api.url, {"input": "Hello.", "voice": "alloy"})
    # Then both are 404 naming the voice, and nothing was queued
    for answer, name in ((theirs, bobs), (unknown, "alloy")):
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"]["code"] == "not_found" and name in answer.json()["error"]["message"]
    assert [t["task"] for t in queued_tasks(redis.Redis.from_url(api.env["ECHO_REDIS_URL"]))] == ["echo.encode_voice"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"response_format": "ogg"}, "response_format"),
        ({"speed": 1.5}, "speed"),
        ({"speed": 0.25}, "speed"),
        ({"input": "   "}, "input"),
        ({"stream_format": "sse", "response_format": "flac"}, "stream_format"),  # sse: pcm, wav or mp3
        ({"stream_format": "chunks"}, "stream_format"),
        ({"instructions": "x" * 4097}, "instructions"),  # accepted and recorded up to 4096 characters
        ({"overrides": {"num_steps": 1000}}, "overrides.num_steps"),
    ],
)
def test_a_bad_field_is_422_naming_it(api: ApiServer, body: dict[str, Any], field: str) -> None:
    # Given a voice of alice's
    voice = upload_voice(api.url, "alice")
    # When a request has one bad field
    answer = speech(api.url, {"input": "Hello.", "voice": voice} | body)
    # Then it is 422 and the envelope names that field
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "invalid_request" and the_field(answer) == field


def test_speech_needs_a_key(api: ApiServer) -> None:
    # Given / When speech is asked without a key, Then it is 401 like the rest of /v1
    answer = requests.post(f"{api.url}/v1/audio/speech", json={"input": "Hi.", "voice": "x"}, timeout=10)
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthorized"


def test_no_worker_within_the_timeout_is_504_with_the_job_id_and_the_job_stays_queued(
    launch_api: Callable[..., ApiServer], api_env: dict[str, str], redis_client: redis.Redis
) -> None:
    # Given an API that waits half a second for speech, and no worker
    api = launch_api(api_env | {"ECHO_SPEECH_TIMEOUT_S": "0.5"})
    voice = upload_voice(api.url, "alice")
    # When alice asks for speech
    started = time.monotonic()
    answer = speech(api.url, {"input": "Hello.", "voice": voice})
    # Then after about the timeout it is 504 naming the setting and the job, which is still queued
    assert answer.status_code == 504 and 0.5 <= time.monotonic() - started < 10
    error = answer.json()["error"]
    job_id = error["details"]["job_id"]
    assert error["code"] == "timeout" and "ECHO_SPEECH_TIMEOUT_S" in error["message"]
    assert answer.headers["X-Job-Id"] == job_id and answer.headers["Location"] == f"/v1/jobs/{job_id}"
    assert api.call("GET", f"/v1/jobs/{job_id}").json()["status"] == "queued"
    assert job_id in [t["id"] for t in queued_tasks(redis_client)]


def test_a_failed_job_answers_its_error_code(api: ApiServer, api_redis_url: str, redis_client: redis.Redis) -> None:
    # Given a voice of alice's, and a "worker" that fails the next job as a bad input
    voice = upload_voice(api.url, "alice")
    store = JobStore.from_url(api_redis_url)
    failer = while_waiting(redis_client, lambda job_id: store.fail(job_id, "invalid_input", "no speakable text"))
    # When alice asks for speech
    answer = speech(api.url, {"input": "Hello.", "voice": voice})
    failer.join(timeout=10)
    # Then the answer carries the job's error code and message, and the job id
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_input" and error["message"] == "no speakable text"
    assert error["details"]["status"] == "failed" and answer.headers["X-Job-Id"] == error["details"]["job_id"]


def test_a_job_canceled_while_waited_for_is_409(api: ApiServer, redis_client: redis.Redis) -> None:
    # Given a voice of alice's, and alice canceling the job from elsewhere while the request waits
    voice = upload_voice(api.url, "alice")
    canceler = while_waiting(redis_client, lambda job_id: api.call("DELETE", f"/v1/jobs/{job_id}"))
    # When alice asks for speech
    answer = speech(api.url, {"input": "Hello.", "voice": voice})
    canceler.join(timeout=10)
    # Then it is 409 canceled, naming the job
    assert answer.status_code == 409, answer.text
    assert answer.json()["error"]["code"] == "canceled" and answer.json()["error"]["details"]["job_id"]


def test_the_openapi_document_describes_the_speech_request(api: ApiServer) -> None:
    # Given / When the spec is fetched
    spec = api.call("GET", "/v1/openapi.json", as_=None).json()
    # Then it has the endpoint and the request model with OpenAI's fields
    schema = spec["components"]["schemas"]["SpeechCreate"]
    assert "/v1/audio/speech" in spec["paths"] and {"model", "input", "voice", "response_format", "speed"} <= set(
        schema["properties"]
    )


@pytest.mark.slow
def test_the_official_openai_sdk_gets_speech_by_name_by_alias_and_none(
    service_env: dict[str, str], start_worker: Callable[..., Any], start_api: Callable[..., ApiProcess], tmp_path: Path
) -> None:
    from openai import OpenAI

    from echo_tts.audio import load_audio

    # Given a worker and an API with an operator voice narrator and the OpenAI name alloy aliased to it
    start_worker(service_env)
    voices = {"ECHO_VOICES_DIR": str(operator_voices(tmp_path)), "ECHO_VOICE_ALIASES": "alloy=narrator"}
    api = start_api(service_env | {"ECHO_API_KEYS": KEYS} | voices)
    client = OpenAI(base_url=f"{api.url}/v1", api_key=API_KEYS["alice"], max_retries=0, timeout=120)
    extra = {"overrides": FAST, "seed": 5}
    # When the SDK asks for speech by the voice's name, by the alias (with instructions), and for none
    by_name = client.audio.speech.create(model="tts-1", voice="narrator", input="Hello there.", extra_body=extra)
    by_alias = client.audio.speech.create(
        model="tts-1", voice="alloy", input="Hello there.", instructions="Speak calmly.", extra_body=extra
    )
    plain = client.audio.speech.create(
        model="tts-1", voice="none", input="Hello there.", response_format="wav", extra_body=extra
    )
    # Then each is audio the SDK hands back as bytes; the alias is the named voice (same seed: same audio)
    assert load_audio(by_name.content).shape[-1] > 0 and by_alias.content == by_name.content
    samples, rate = sf.read(io.BytesIO(plain.content))
    assert rate == 44100 and len(samples) > 0
