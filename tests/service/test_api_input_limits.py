"""Input an outside probe found answered with 500, a wrong status or a worker-killing job (issue 11): odd
output sample rates, deeply nested metadata, integers int() refuses or booleans posing as integers.
Each is refused with a 4xx envelope naming the field or the limit, before anything is queued."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from api_helpers import ApiServer, queued_tasks, wav_bytes

from jobs import contract

pytest_plugins = ["api_fixtures"]
STANDARD = "8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000"


def error_of(response: Any) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    return dict(body["error"])


def fields_of(error: dict) -> list[str]:
    return [e["field"] for e in error["details"].get("errors", [])]


def synthesis_tasks(client: redis.Redis) -> list[dict]:
    return [t for t in queued_tasks(client) if t["task"] == contract.SYNTHESIZE]


def a_voice(api: ApiServer) -> str:
    answer = api.call("POST", "/v1/voices", files={"file": ("me.wav", wav_bytes(), "audio/wav")})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def nested(levels: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(levels):
        value = {"k": value}
    return value


@pytest.mark.parametrize(("fmt", "rate"), [("wav", 85847), ("wav", 22051), ("flac", 44101), ("pcm", 12345)])
def test_an_odd_output_rate_is_422_listing_the_valid_rates_on_jobs_and_speech(
    api: ApiServer, redis_client: redis.Redis, fmt: str, rate: int
) -> None:
    # Given a rate between 8000 and 96000 that is not a standard one (85847 once took a worker to 23 GB)
    voice = a_voice(api)
    # When a job and a speech request ask for it
    job = api.call("POST", "/v1/jobs", json={"text": "x", "format": fmt, "sample_rate": rate})
    speech = api.call(
        "POST", "/v1/audio/speech", json={"input": "x", "voice": voice, "response_format": fmt, "sample_rate": rate}
    )
    # Then both are 422 naming sample_rate and listing the valid rates, and nothing is queued
    for answer in (job, speech):
        error = error_of(answer)
        assert answer.status_code == 422 and fields_of(error) == ["sample_rate"], answer.text
        assert f"{rate} Hz" in error["message"] and f"valid rates: {STANDARD}" in error["message"]
    assert synthesis_tasks(redis_client) == []


def test_every_standard_rate_is_accepted_for_wav_flac_and_pcm(api: ApiServer, redis_client: redis.Redis) -> None:
    # Given / When a job asks for each standard rate in each lossless format
    answers = {
        (fmt, rate): api.call("POST", "/v1/jobs", json={"text": "x", "format": fmt, "sample_rate": rate}).status_code
        for fmt in ("wav", "flac", "pcm")
        for rate in contract.STANDARD_RATES
    }
    # Then every one is accepted and queued with its rate
    assert set(answers.values()) == {202}
    assert sorted(t["kwargs"]["sample_rate"] for t in queued_tasks(redis_client)) == sorted(contract.STANDARD_RATES * 3)


def test_metadata_nested_past_the_limit_is_422_naming_it_in_json_and_in_a_form(
    api: ApiServer, redis_client: redis.Redis
) -> None:
    # Given metadata 300 levels deep (it once answered 500), as a JSON body and as a multipart form field
    deep = nested(300)
    as_json = api.call("POST", "/v1/jobs", json={"text": "Hi.", "metadata": deep})
    as_form = api.call("POST", "/v1/jobs", data={"text": "Hi.", "metadata": json.dumps(deep)})
    # And nesting so deep that a JSON parser gives up (20,000 levels of arrays)
    abyss = "[" * 20_000 + "]" * 20_000
    raw = api.call(
        "POST",
        "/v1/jobs",
        data='{"text": "Hi.", "metadata": {"a": ' + abyss + "}}",
        headers={"Content-Type": "application/json"},
    )
    form = api.call("POST", "/v1/jobs", data={"text": "Hi.", "metadata": '{"a": ' + abyss + "}"})
    # Then each is 422 naming metadata (or the body) and the depth limit, and nothing is queued
    for answer, field in ((as_json, "metadata"), (as_form, "metadata"), (raw, "body"), (form, "metadata")):
        error = error_of(answer)
        assert answer.status_code == 422 and fields_of(error) == [field], answer.text
        assert (
            f"MAX_METADATA_DEPTH={contract.MAX_METADATA_DEPTH}" in error["message"] or "too deeply" in error["message"]
        )
    assert f"MAX_METADATA_DEPTH={contract.MAX_METADATA_DEPTH}" in error_of(as_json)["message"]
    assert synthesis_tasks(redis_client) == []
    # And metadata exactly at the limit is accepted and echoed
    ok = api.call("POST", "/v1/jobs", json={"text": "Hi.", "metadata": nested(contract.MAX_METADATA_DEPTH - 1)})
    assert ok.status_code == 202 and ok.json()["request"]["metadata"] == nested(contract.MAX_METADATA_DEPTH - 1)


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"seed": "²"}, "seed"),
        ({"sample_rate": "²"}, "sample_rate"),
        ({"seed": "٣"}, "seed"),  # an Arabic-Indic digit: str.isdigit() and int() take it, we do not
        ({"seed": "9" * 5000}, "seed"),
        ({"seed": "-9" + "9" * 5000}, "seed"),
        ({"seed": "1.5"}, "seed"),
        ({"seed": "99999999999999999999"}, "seed"),  # digits, but past 2**63
    ],
)
def test_a_form_integer_int_would_refuse_or_overflow_is_422_naming_it(
    api: ApiServer, redis_client: redis.Redis, form: dict, field: str
) -> None:
    # Given / When a multipart job carries an integer field that is not a plain, bounded ASCII integer
    answer = api.call("POST", "/v1/jobs", data={"text": "Hi.", **form}, files={"speaker_audio": ("a.wav", wav_bytes())})
    # Then it is refused naming the field (it once answered 500), and nothing is queued
    error = error_of(answer)
    assert answer.status_code == 422 and fields_of(error) == [field], answer.text
    assert synthesis_tasks(redis_client) == []


def test_a_json_integer_too_long_to_convert_is_422_naming_the_problem(api: ApiServer) -> None:
    # Given a JSON body whose seed has 5,001 digits (past Python's int-string limit) and one with 100
    huge = '{"text": "Hi.", "seed": ' + "9" * 5001 + "}"
    long = '{"text": "Hi.", "seed": ' + "9" * 100 + "}"
    # When they are submitted
    answers = [
        api.call("POST", "/v1/jobs", data=body, headers={"Content-Type": "application/json"}) for body in (huge, long)
    ]
    # Then both are 422 saying which integer is too long (not "the body is not a JSON object")
    for answer, digits in zip(answers, (5001, 100), strict=True):
        error = error_of(answer)
        assert answer.status_code == 422 and error["code"] == "invalid_request", answer.text
        assert f"integer of {digits} digits" in error["message"] and "64 digits" in error["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"seed": True}, "seed"),
        ({"sample_rate": True}, "sample_rate"),
        ({"seed": False}, "seed"),
        ({"overrides": {"num_steps": True}}, "overrides.num_steps"),
        ({"seed": "5"}, "seed"),
    ],
)
def test_a_boolean_or_a_string_is_not_an_integer(
    api: ApiServer, redis_client: redis.Redis, body: dict, field: str
) -> None:
    # Given / When a JSON job and a speech request give a boolean where an integer goes (true was stored as 1)
    voice = a_voice(api)
    job = api.call("POST", "/v1/jobs", json={"text": "Hi.", **body})
    speech = api.call("POST", "/v1/audio/speech", json={"input": "Hi.", "voice": voice, **body})
    # Then both are refused naming the field, and nothing is queued
    for answer in (job, speech):
        assert answer.status_code == 422 and field in fields_of(error_of(answer)), answer.text
    assert synthesis_tasks(redis_client) == []
