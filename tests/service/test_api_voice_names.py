"""Voices by name everywhere a voice is taken (jobs, speech, books), aliases, ``none`` and the OpenAI
fallback, over real HTTP (real Redis, S3 on moto; no worker: the queued messages show what was asked)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from api_helpers import ApiServer, queued_tasks, wav_bytes

from api.settings import SettingsError, parse_voice_aliases
from jobs import contract

pytest_plugins = ["api_fixtures"]


def upload(api: ApiServer, name: str) -> str:
    answer = api.call("POST", "/v1/voices", files={"file": (f"{name}.wav", wav_bytes())}, data={"name": name})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def queued_voice(redis_client: redis.Redis) -> str | None:
    (task,) = [t for t in queued_tasks(redis_client) if t["task"] == contract.SYNTHESIZE]
    return task["kwargs"]["voice_id"]


def test_a_job_takes_a_voice_by_name_by_id_or_none(api: ApiServer, redis_client: redis.Redis) -> None:
    # Given alice's voice named Ann
    ann = upload(api, "Ann")
    # When jobs name it by name (any case), by id, and ask for none
    by_name = api.call("POST", "/v1/jobs", json={"text": "Hi.", "voice": "ann"}).json()
    by_id = api.call("POST", "/v1/jobs", json={"text": "Hi.", "voice": ann}).json()
    unconditioned = api.call("POST", "/v1/jobs", json={"text": "Hi.", "voice": "none"}).json()
    # Then the first two use Ann, the last no voice
    assert by_name["request"]["voice"] == by_id["request"]["voice"] == ann
    assert unconditioned["request"]["voice"] is None
    # And bob cannot use alice's voice by its name: the refusal names the field and lists what he can use
    refused = api.call("POST", "/v1/jobs", json={"text": "Hi.", "voice": "Ann"}, as_="bob")
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert error["details"]["errors"][0]["field"] == "voice" and error["details"]["errors"][0]["usable"] == ["none"]


def test_speech_takes_names_and_an_unknown_openai_voice_is_404_listing_the_usable_ones(
    launch_api: Callable[..., ApiServer], api_env: dict[str, str], redis_client: redis.Redis
) -> None:
    # Given alice's voice named narrator (and speech that waits 0.2 s: no worker runs here)
    api = launch_api(api_env | {"ECHO_SPEECH_TIMEOUT_S": "0.2"})
    narrator = upload(api, "narrator")
    # When OpenAI-style requests name it, and name an OpenAI voice nothing maps
    named = api.call(
        "POST",
        "/v1/audio/speech",
        json={"input": "Hi.", "voice": "narrator", "instructions": "calm"},
        headers={"Idempotency-Key": "s1"},
    )
    alloy = api.call("POST", "/v1/audio/speech", json={"input": "Hi.", "voice": "alloy"})
    # Then the named one became a job with that voice and the instructions recorded (504: no worker here)
    assert named.status_code == 504, named.text
    assert queued_voice(redis_client) == narrator
    job = api.call("GET", f"/v1/jobs/{named.json()['error']['details']['job_id']}").json()
    assert job["request"]["metadata"]["instructions"] == "calm"
    # And alloy is 404, its message and details listing the names that work
    assert alloy.status_code == 404
    assert alloy.json()["error"]["details"]["usable"] == ["none", "narrator"]
    assert "narrator" in alloy.json()["error"]["message"]


def test_aliases_and_the_default_voice_serve_openai_names(
    launch_api: Callable[..., ApiServer], api_env: dict[str, str], redis_client: redis.Redis
) -> None:
    # Given an API where alloy is an alias of narrator and unknown OpenAI names fall back to narrator
    api = launch_api(
        api_env
        | {
            "ECHO_VOICE_ALIASES": "alloy=narrator, Echo=none",
            "ECHO_DEFAULT_VOICE": "narrator",
            "ECHO_SPEECH_TIMEOUT_S": "0.2",
        }
    )
    narrator = upload(api, "narrator")
    # When speech asks for alloy (alias), nova (an OpenAI name nothing maps: the default), echo (alias to none)
    voices = []
    for voice in ("alloy", "nova", "echo"):
        answer = api.call("POST", "/v1/audio/speech", json={"input": "Hi.", "voice": voice})
        assert answer.status_code == 504, answer.text
        voices.append(queued_voice(redis_client))
        redis_client.delete(contract.QUEUE_INTERACTIVE)
    # Then each job got the voice the operator chose
    assert voices == [narrator, narrator, None]
    # And a name that is neither a voice nor an OpenAI voice is still refused
    assert api.call("POST", "/v1/audio/speech", json={"input": "Hi.", "voice": "bogus"}).status_code == 404


def test_a_book_takes_a_voice_by_name(api: ApiServer, redis_client: redis.Redis) -> None:
    # Given alice's voice named Ann
    ann = upload(api, "Ann")
    # When a book names it
    book = api.call("POST", "/v1/audiobooks", json={"voice": "Ann", "chapters": [{"title": "A", "text": "Hi."}]})
    # Then the book uses it
    assert book.status_code == 202 and book.json()["request"]["voice_id"] == ann


@pytest.mark.parametrize("raw", ["alloy", "alloy=", "=narrator", "al loy=narrator"])
def test_a_bad_alias_setting_is_refused_by_name(raw: str) -> None:
    # Given / When a malformed ECHO_VOICE_ALIASES is read, Then the error names the setting
    with pytest.raises(SettingsError, match="ECHO_VOICE_ALIASES"):
        parse_voice_aliases(raw)
