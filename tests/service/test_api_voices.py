"""POST/GET/DELETE /v1/voices over real HTTP, and operator voices from ECHO_VOICES_DIR."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import redis
from api_helpers import ApiServer, queued_tasks, s3_client, wav_bytes

from jobs import contract
from jobs.voicestore import VoiceStore

pytest_plugins = ["api_fixtures"]


def upload(api: ApiServer, data: bytes | None = None, *, name: str | None = "Me", as_: str = "alice"):  # type: ignore[no-untyped-def]
    form = {"name": name} if name else {}
    return api.call(
        "POST", "/v1/voices", data=form, files={"file": ("me.wav", data or wav_bytes(), "audio/wav")}, as_=as_
    )


def test_an_uploaded_voice_is_stored_pending_and_its_encode_task_enqueued(
    api: ApiServer, redis_client: redis.Redis
) -> None:
    # Given / When alice uploads a reference clip
    response = upload(api)
    # Then the voice is pending, the reference lies in storage, and one encode task waits
    assert response.status_code == 202, response.text
    voice = response.json()
    assert response.headers["Location"] == f"/v1/voices/{voice['id']}"
    assert voice["status"] == "pending" and voice["name"] == "Me" and voice["operator"] is False
    key = contract.voice_reference_key(voice["id"], "wav")
    assert api.s3().get_object(Bucket=api.bucket, Key=key)["Body"].read() == wav_bytes()
    (task,) = queued_tasks(redis_client)
    assert task["task"] == contract.ENCODE_VOICE and task["kwargs"] == {"voice_id": voice["id"], "reference_key": key}


def test_a_ready_voice_is_used_by_jobs_without_its_reference(
    api: ApiServer, api_redis_url: str, redis_client: redis.Redis
) -> None:
    # Given a voice the worker encoded
    voice_id = upload(api).json()["id"]
    VoiceStore.from_url(api_redis_url).mark_ready(voice_id, contract.voice_latents_key(voice_id))
    # When alice submits a job with it
    response = api.call("POST", "/v1/jobs", json={"text": "In my voice.", "voice": voice_id})
    # Then the voice shows ready and the task names the voice, not a reference upload
    assert api.call("GET", f"/v1/voices/{voice_id}").json()["status"] == "ready"
    assert response.status_code == 202 and response.json()["request"]["voice"] == voice_id
    kwargs = queued_tasks(redis_client)[-1]["kwargs"]
    assert kwargs["voice_id"] == voice_id and kwargs["speaker_key"] is None


def test_a_failed_voice_cannot_be_used(api: ApiServer, api_redis_url: str) -> None:
    # Given a voice whose encoding failed
    voice_id = upload(api).json()["id"]
    VoiceStore.from_url(api_redis_url).mark_failed(voice_id, "invalid_audio", "not decodable")
    # When a job names it, Then it is refused naming the voice field
    response = api.call("POST", "/v1/jobs", json={"text": "Hi.", "voice": voice_id})
    assert response.status_code == 422 and "voice" in response.json()["error"]["message"]
    assert api.call("GET", f"/v1/voices/{voice_id}").json()["error"]["code"] == "invalid_audio"


def test_another_keys_voice_is_404_everywhere(api: ApiServer) -> None:
    # Given a voice of alice
    voice_id = upload(api).json()["id"]
    # When bob reads, deletes or uses it
    read = api.call("GET", f"/v1/voices/{voice_id}", as_="bob")
    deleted = api.call("DELETE", f"/v1/voices/{voice_id}", as_="bob")
    used = api.call("POST", "/v1/jobs", json={"text": "Hi.", "voice": voice_id}, as_="bob")
    # Then it does not exist for him, and it is not in his list
    assert read.status_code == deleted.status_code == 404 and used.status_code == 422
    assert api.call("GET", "/v1/voices", as_="bob").json()["voices"] == []
    assert [v["id"] for v in api.call("GET", "/v1/voices").json()["voices"]] == [voice_id]


def test_deleting_a_voice_removes_record_and_storage(api: ApiServer) -> None:
    # Given a voice of alice
    voice_id = upload(api).json()["id"]
    # When she deletes it (twice)
    first, second = api.call("DELETE", f"/v1/voices/{voice_id}"), api.call("DELETE", f"/v1/voices/{voice_id}")
    # Then it is gone, from storage too, and the second delete is 404
    assert (first.status_code, second.status_code) == (204, 404)
    assert api.call("GET", f"/v1/voices/{voice_id}").status_code == 404
    assert "Contents" not in api.s3().list_objects_v2(Bucket=api.bucket, Prefix=f"voices/{voice_id}/")


def test_bad_voice_uploads_are_refused_naming_the_field(api: ApiServer, redis_client: redis.Redis) -> None:
    # Given / When a non-audio file, no file, a JSON body and an oversize file are sent
    not_audio = upload(api, b"%PDF-1.7 not audio" * 20)
    no_file = api.call("POST", "/v1/voices", files={"name": (None, "x")})
    as_json = api.call("POST", "/v1/voices", json={"name": "x"})
    too_big = upload(api, wav_bytes(seconds=12.0))
    # Then each is refused with the envelope, and nothing is enqueued
    assert (not_audio.status_code, not_audio.json()["error"]["code"]) == (422, "invalid_audio")
    assert "file" in not_audio.json()["error"]["message"]
    assert no_file.status_code == 422 and no_file.json()["error"]["details"]["errors"][0]["field"] == "file"
    assert as_json.status_code == 415
    assert too_big.status_code == 413 and "ECHO_MAX_UPLOAD_BYTES" in too_big.json()["error"]["message"]
    assert queued_tasks(redis_client) == []


def test_operator_voices_are_shared_read_only_and_registered_once(
    launch_api: Callable[..., ApiServer], api_env: dict[str, str], redis_client: redis.Redis, tmp_path: Path
) -> None:
    # Given a voices directory with one clip and one stray file
    (tmp_path / "narrator.wav").write_bytes(wav_bytes(1.0))
    (tmp_path / "README.txt").write_text("not a voice")
    env = {**api_env, "ECHO_VOICES_DIR": str(tmp_path)}
    # When two API processes start on it
    api = launch_api(env)
    launch_api(env)
    # Then both keys see the narrator, by id and by file name, and exactly one encode task was enqueued
    for who in ("alice", "bob"):
        (voice,) = api.call("GET", "/v1/voices", as_=who).json()["voices"]
        assert voice["id"] == "narrator" and voice["operator"] is True and voice["name"] == "narrator.wav"
    tasks = queued_tasks(redis_client)
    assert [t["kwargs"] for t in tasks] == [{"voice_id": "narrator", "reference_key": "voices/narrator/reference.wav"}]
    # And jobs may use it by file name, but nobody may delete it
    job = api.call("POST", "/v1/jobs", json={"text": "Hi.", "voice": "narrator.wav"}, as_="bob")
    assert job.status_code == 202 and job.json()["request"]["voice"] == "narrator"
    refused = api.call("DELETE", "/v1/voices/narrator")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "read_only_voice"


def test_an_api_with_operator_voices_starts_before_any_worker_and_makes_the_missing_bucket(
    launch_api: Callable[..., ApiServer], api_env: dict[str, str], tmp_path: Path
) -> None:
    # Given a voices directory and a bucket nobody has created yet (the API starts first)
    (tmp_path / "narrator.wav").write_bytes(wav_bytes(1.0))
    env = {**api_env, "ECHO_VOICES_DIR": str(tmp_path), "ECHO_S3_BUCKET": "echo-fresh-bucket"}
    # When the API starts
    api = launch_api(env)
    # Then it serves the operator voice, and its reference is stored in the bucket it made
    assert api.call("GET", "/v1/voices/narrator").status_code == 200
    listing = s3_client(api_env["ECHO_S3_ENDPOINT_URL"]).list_objects_v2(Bucket="echo-fresh-bucket")
    assert [o["Key"] for o in listing["Contents"]] == ["voices/narrator/reference.wav"]
