"""Every class of bad input to POST /v1/jobs answers 4xx with the envelope naming the field or limit."""

from __future__ import annotations

import json

import pytest
import redis
from api_helpers import ApiServer, queued_tasks, wav_bytes

pytest_plugins = ["api_fixtures"]


def error_of(response: object) -> dict:
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    return body["error"]


def fields_of(error: dict) -> list[str]:
    return [e["field"] for e in error["details"].get("errors", [])]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"text": ""}, "text"),
        ({"text": "   \n"}, "text"),
        ({"text": "\x01\x02\x07\x1b\x7f\x85 \u200b"}, "text"),  # control and format characters only
        ({}, "text"),
        ({"text": 5}, "text"),
        ({"preset": "Very-High-CFG"}, "preset"),
        ({"format": "ogg"}, "format"),
        ({"sample_rate": 1000}, "sample_rate"),
        ({"sample_rate": "fast"}, "sample_rate"),
        ({"format": "mp3", "sample_rate": 44101}, "sample_rate"),
        ({"overrides": {"num_steps": 0}}, "overrides.num_steps"),
        ({"overrides": {"num_steps": 1000}}, "overrides.num_steps"),
        ({"overrides": {"cfg_scale_text": -1}}, "overrides.cfg_scale_text"),
        ({"overrides": {"num_steps": None}}, "overrides.num_steps"),
        ({"overrides": {"warp_speed": 2}}, "overrides.warp_speed"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**64}, "seed"),
        ({"metadata": [1, 2]}, "metadata"),
        ({"voice": "voice_unknown"}, "voice"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_a_bad_field_is_422_naming_it(api: ApiServer, redis_client: redis.Redis, body: dict, field: str) -> None:
    # Given a request with one bad field
    payload = {"text": "Hello.", **body} if body else {}
    # When it is submitted
    response = api.call("POST", "/v1/jobs", json=payload)
    # Then it is refused with 422, the envelope names the field, and nothing is enqueued
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["code"] == "invalid_request" and field in fields_of(error) and field in error["message"]
    assert queued_tasks(redis_client) == []


def test_a_nullable_override_accepts_null(api: ApiServer) -> None:
    # Given / When an override that may be switched off is null
    response = api.call("POST", "/v1/jobs", json={"text": "Hi.", "overrides": {"rescale_k": None}})
    # Then it is accepted and echoed
    assert response.status_code == 202 and response.json()["request"]["overrides"] == {"rescale_k": None}


def test_text_over_the_limit_is_413_naming_the_setting(api: ApiServer, redis_client: redis.Redis) -> None:
    # Given text longer than ECHO_MAX_TEXT_CHARS=2000
    response = api.call("POST", "/v1/jobs", json={"text": "a" * 2001})
    # Then it is refused by name, and nothing is enqueued
    error = error_of(response)
    assert response.status_code == 413 and error["code"] == "text_too_long"
    assert "ECHO_MAX_TEXT_CHARS=2000" in error["message"] and error["details"]["field"] == "text"
    assert queued_tasks(redis_client) == []


def test_metadata_over_the_limit_is_413_naming_the_setting(api: ApiServer) -> None:
    # Given metadata larger than ECHO_MAX_METADATA_BYTES (4096 by default)
    response = api.call("POST", "/v1/jobs", json={"text": "Hi.", "metadata": {"blob": "x" * 5000}})
    # Then it is refused by name
    assert response.status_code == 413 and "ECHO_MAX_METADATA_BYTES" in error_of(response)["message"]


def test_a_body_that_is_not_json_is_400_or_415(api: ApiServer) -> None:
    # Given / When the body is broken JSON, or not JSON at all
    broken = api.call("POST", "/v1/jobs", data="{text:", headers={"Content-Type": "application/json"})
    plain = api.call("POST", "/v1/jobs", data="text=hi", headers={"Content-Type": "text/plain"})
    listed = api.call("POST", "/v1/jobs", json=["text"])
    # Then each is refused with the envelope
    assert (broken.status_code, error_of(broken)["code"]) == (400, "invalid_json")
    assert (plain.status_code, error_of(plain)["code"]) == (415, "unsupported_media_type")
    assert listed.status_code == 400


def test_a_non_audio_upload_is_422_naming_the_field(api: ApiServer, redis_client: redis.Redis) -> None:
    # Given a text file posing as a reference clip
    files = {"speaker_audio": ("voice.wav", b"this is not audio at all, just text" * 10, "audio/wav")}
    uploads_before = api.s3().list_objects_v2(Bucket=api.bucket, Prefix="uploads/").get("KeyCount")
    # When it is submitted
    response = api.call("POST", "/v1/jobs", data={"text": "Hi."}, files=files)
    # Then it is refused naming the field, and nothing is stored or enqueued
    error = error_of(response)
    assert response.status_code == 422 and error["code"] == "invalid_audio" and "speaker_audio" in error["message"]
    assert queued_tasks(redis_client) == []
    assert api.s3().list_objects_v2(Bucket=api.bucket, Prefix="uploads/").get("KeyCount") == uploads_before


def test_an_empty_upload_is_422_naming_the_field(api: ApiServer) -> None:
    # Given / When an empty reference file is submitted
    response = api.call("POST", "/v1/jobs", data={"text": "Hi."}, files={"speaker_audio": ("a.wav", b"", "audio/wav")})
    # Then it is refused naming the field
    assert response.status_code == 422 and "speaker_audio" in fields_of(error_of(response))


def test_an_upload_over_the_size_limit_is_413_naming_the_setting(api: ApiServer) -> None:
    # Given a reference larger than ECHO_MAX_UPLOAD_BYTES=300000
    clip = wav_bytes(seconds=12.0)  # 384 kB
    # When it is submitted
    response = api.call("POST", "/v1/jobs", data={"text": "Hi."}, files={"speaker_audio": ("big.wav", clip)})
    # Then it is refused by the limit's name
    error = error_of(response)
    assert response.status_code == 413 and error["code"] == "payload_too_large"
    assert "ECHO_MAX_UPLOAD_BYTES=300000" in error["message"]


def test_a_reference_longer_than_the_limit_is_413_naming_the_setting(api: ApiServer) -> None:
    # Given a small WAV whose header says 40 s, over ECHO_MAX_REFERENCE_SECONDS=30
    clip = wav_bytes(seconds=40.0, rate=1000)
    # When it is submitted
    response = api.call("POST", "/v1/jobs", data={"text": "Hi."}, files={"speaker_audio": ("long.wav", clip)})
    # Then it is refused naming the limit
    error = error_of(response)
    assert response.status_code == 413 and error["code"] == "reference_too_long"
    assert "ECHO_MAX_REFERENCE_SECONDS=30" in error["message"]


def test_multipart_fields_are_validated_like_json(api: ApiServer) -> None:
    # Given multipart jobs with broken JSON overrides, an out-of-range override and an unexpected file
    broken = api.call("POST", "/v1/jobs", data={"text": "Hi.", "overrides": "{num_steps"})
    bounded = api.call("POST", "/v1/jobs", data={"text": "Hi.", "overrides": json.dumps({"num_steps": 0})})
    stray = api.call("POST", "/v1/jobs", data={"text": "Hi."}, files={"photo": ("a.wav", wav_bytes())})
    # Then each names its field
    assert broken.status_code == 422 and fields_of(error_of(broken)) == ["overrides"]
    assert bounded.status_code == 422 and fields_of(error_of(bounded)) == ["overrides.num_steps"]
    assert stray.status_code == 422 and fields_of(error_of(stray)) == ["photo"]


def test_voice_and_a_one_shot_reference_together_are_refused(api: ApiServer) -> None:
    # Given / When both a stored voice and a reference file are given
    response = api.call(
        "POST", "/v1/jobs", data={"text": "Hi.", "voice": "narrator"}, files={"speaker_audio": ("a.wav", wav_bytes())}
    )
    # Then the request is refused naming voice
    assert response.status_code == 422 and "voice" in fields_of(error_of(response))


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "done"}, "status.0"),
        ({"limit": "0"}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"cursor": "zzz"}, "cursor"),
    ],
)
def test_bad_list_parameters_are_422_naming_them(api: ApiServer, params: dict, field: str) -> None:
    # Given / When the job list is asked for with a bad parameter
    response = api.call("GET", "/v1/jobs", params=params)
    # Then it is refused naming it
    assert response.status_code == 422 and field in fields_of(error_of(response))


def test_an_overlong_idempotency_key_is_refused(api: ApiServer) -> None:
    # Given / When the Idempotency-Key header is longer than 255 characters
    response = api.call("POST", "/v1/jobs", json={"text": "Hi."}, headers={"Idempotency-Key": "k" * 256})
    # Then it is refused naming the header
    assert response.status_code == 422 and fields_of(error_of(response)) == ["Idempotency-Key"]
