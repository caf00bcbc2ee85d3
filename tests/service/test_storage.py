"""Storage against a real S3 server on loopback (moto) and against a local directory."""

from __future__ import annotations

import dataclasses
import io
import socket
from pathlib import Path

import pytest
import requests

from jobs.settings import SettingsError, StorageSettings
from jobs.storage import (
    BucketNotFound,
    LocalStorage,
    ObjectNotFound,
    S3Storage,
    StorageError,
    TransientStorageError,
    open_storage,
)


def test_the_bucket_is_created_when_missing_and_creation_is_idempotent(storage_settings: StorageSettings) -> None:
    # Given a bucket name that does not exist yet
    storage = open_storage(storage_settings)
    assert isinstance(storage, S3Storage)
    # When ensure_bucket runs twice
    storage.ensure_bucket()
    storage.ensure_bucket()
    # Then the bucket answers
    storage.ping()


def test_objects_round_trip_with_content_type_and_disposition(storage_settings: StorageSettings) -> None:
    # Given a storage with its bucket
    storage = S3Storage(storage_settings)
    storage.ensure_bucket()
    # When bytes are put with a content type and a download file name
    storage.put_bytes("jobs/j1/audio.mp3", b"abc", content_type="audio/mpeg", filename="j1.mp3")
    # Then they come back with the headers set
    assert storage.exists("jobs/j1/audio.mp3") and storage.get_bytes("jobs/j1/audio.mp3") == b"abc"
    head = storage.head("jobs/j1/audio.mp3")
    assert head["ContentType"] == "audio/mpeg" and 'filename="j1.mp3"' in head["ContentDisposition"]
    assert storage.list_keys("jobs/j1/") == ["jobs/j1/audio.mp3"]
    # And deleting leaves nothing
    assert storage.delete_prefix("jobs/") == 1 and not storage.exists("jobs/j1/audio.mp3")


def test_missing_objects_raise_object_not_found(storage_settings: StorageSettings) -> None:
    storage = S3Storage(storage_settings)
    storage.ensure_bucket()
    # When a missing key is read, Then the error is ObjectNotFound
    with pytest.raises(ObjectNotFound):
        storage.get_bytes("jobs/nope/audio.wav")
    assert storage.exists("jobs/nope/audio.wav") is False


def test_a_missing_bucket_is_a_storage_error_naming_the_bucket_not_a_missing_object(
    storage_settings: StorageSettings,
) -> None:
    # Given a bucket that does not exist on the S3 server
    storage = S3Storage(storage_settings)
    bucket = storage_settings.bucket
    # When an object is put, read, uploaded as a file and listed, and the bucket is pinged
    calls = {
        "put_bytes": lambda: storage.put_bytes("jobs/j1/result.json", b"{}", content_type="application/json"),
        "get_bytes": lambda: storage.get_bytes("jobs/j1/audio.wav"),
        "put_file": lambda: storage.put_file("jobs/j1/audio.wav", io.BytesIO(b"x"), content_type="audio/wav"),
        "list_keys": lambda: storage.list_keys("jobs/"),
        "ping": storage.ping,
    }
    for name, call in calls.items():
        with pytest.raises(StorageError) as caught:
            call()
        # Then each is a permanent storage error that names the bucket and the setting, never a missing key
        assert isinstance(caught.value, BucketNotFound) and not isinstance(caught.value, ObjectNotFound), name
        assert f"bucket {bucket!r} does not exist" in str(caught.value) and "ECHO_S3_BUCKET" in str(caught.value)
        assert caught.value.code == "storage_error" and "jobs/" not in str(caught.value), name


def test_large_files_go_up_as_multipart(storage_settings: StorageSettings) -> None:
    # Given a 5 MiB part size with a threshold below the file size
    mib = 1024 * 1024
    settings = dataclasses.replace(storage_settings, multipart_threshold=5 * mib, multipart_chunksize=5 * mib)
    storage = S3Storage(settings)
    storage.ensure_bucket()
    data = bytes(range(256)) * (11 * mib // 256)
    # When the file is uploaded
    storage.put_file("books/b1/book.m4b", io.BytesIO(data), content_type="audio/mp4")
    # Then it was stored in parts (multipart ETags end in -<parts>) and reads back intact
    assert storage.head("books/b1/book.m4b")["ETag"].strip('"').endswith("-3")
    assert storage.get_bytes("books/b1/book.m4b") == data


def test_presigned_urls_use_the_public_endpoint_and_download(storage_settings: StorageSettings) -> None:
    # Given a public endpoint that differs from the internal one (localhost vs 127.0.0.1)
    public = storage_settings.endpoint_url.replace("127.0.0.1", "localhost")  # type: ignore[union-attr]
    storage = S3Storage(dataclasses.replace(storage_settings, public_endpoint_url=public))
    storage.ensure_bucket()
    storage.put_bytes("jobs/j2/audio.wav", b"RIFF....", content_type="audio/wav")
    # When a URL is presigned
    url = storage.presign("jobs/j2/audio.wav", filename="j2.wav", expires_s=60)
    # Then it names the public host, and fetching it returns the bytes
    assert url is not None and url.startswith(public + "/")
    answer = requests.get(url, timeout=10)
    assert answer.status_code == 200 and answer.content == b"RIFF...."


def test_an_unreachable_server_is_a_transient_error(storage_settings: StorageSettings) -> None:
    # Given an endpoint where nothing listens
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    storage = S3Storage(dataclasses.replace(storage_settings, endpoint_url=f"http://127.0.0.1:{port}"))
    # When it is used, Then the error says "retry"
    with pytest.raises(TransientStorageError):
        storage.put_bytes("jobs/x/audio.wav", b"x", content_type="audio/wav")


def test_local_storage_keeps_the_same_layout_and_does_not_presign(tmp_path: Path) -> None:
    # Given no S3 endpoint, Then the local directory is the storage
    storage = open_storage(StorageSettings.from_env({"ECHO_STORAGE_DIR": str(tmp_path / "store")}))
    assert isinstance(storage, LocalStorage)
    storage.ensure_bucket()
    storage.ping()
    # When objects are written
    storage.put_bytes("jobs/j1/audio.wav", b"abc", content_type="audio/wav")
    storage.put_file("voices/v1/reference.flac", io.BytesIO(b"x" * 10), content_type="audio/flac")
    # Then they sit at their keys and read back; presign is None (the API streams)
    assert (tmp_path / "store" / "jobs/j1/audio.wav").read_bytes() == b"abc"
    assert storage.size("voices/v1/reference.flac") == 10
    assert storage.list_keys("voices/v1/reference.") == ["voices/v1/reference.flac"]
    assert storage.presign("jobs/j1/audio.wav") is None
    with pytest.raises(ObjectNotFound):
        storage.get_bytes("jobs/none/audio.wav")
    # And keys cannot escape the directory
    with pytest.raises(StorageError):
        storage.put_bytes("../evil", b"x", content_type="text/plain")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ECHO_S3_ENDPOINT_URL": "minio:9000"}, "ECHO_S3_ENDPOINT_URL"),
        ({"ECHO_S3_ENDPOINT_URL": "http://minio:9000", "AWS_ACCESS_KEY_ID": "k"}, "AWS_SECRET_ACCESS_KEY"),
        ({"ECHO_S3_PUBLIC_ENDPOINT_URL": "localhost"}, "ECHO_S3_PUBLIC_ENDPOINT_URL"),
        ({"ECHO_PRESIGN_EXPIRES_S": "999999"}, "ECHO_PRESIGN_EXPIRES_S"),
        ({"ECHO_S3_MULTIPART_CHUNKSIZE": "1024"}, "ECHO_S3_MULTIPART_CHUNKSIZE"),
        ({"ECHO_S3_MULTIPART_THRESHOLD": "lots"}, "ECHO_S3_MULTIPART_THRESHOLD"),
        *(
            ({"ECHO_S3_ENDPOINT_URL": "http://minio:9000", "ECHO_S3_BUCKET": bad}, r"ECHO_S3_BUCKET=.*not a valid")
            for bad in ("qa", "a" * 64, "Echo-TTS", "echo_tts", "-echo", "echo..tts", "192.168.0.1", "xn--echo")
        ),
    ],
)
def test_malformed_storage_settings_are_refused_naming_the_variable(env: dict[str, str], named: str) -> None:
    # Given a malformed storage setting, When settings are read, Then the error names it
    with pytest.raises(SettingsError, match=named):
        StorageSettings.from_env(env)


def test_a_bucket_name_is_checked_only_when_s3_is_used() -> None:
    # Given valid S3 names, and a short name with no S3 endpoint (the local directory has no bucket)
    for good in ("echo-tts", "my.bucket.2024", "abc", "a" * 63):
        env = {"ECHO_S3_ENDPOINT_URL": "http://minio:9000", "ECHO_S3_BUCKET": good}
        # When settings are read, Then the name is kept
        assert StorageSettings.from_env(env).bucket == good
    assert StorageSettings.from_env({"ECHO_S3_BUCKET": "qa"}).backend == "local"
