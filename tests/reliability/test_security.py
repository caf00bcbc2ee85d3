"""Keys and URLs, over real HTTP: API keys stored hashed, every route of the OpenAPI document tried with
no key, a wrong key and another key, and presigned URLs that stop working when they expire.

Faults: requests without a key, with a wrong one (another scheme, a near miss, the stored hash itself),
and with a valid key asking for another key's job, voice or book; a client using a presigned URL after
its expiry or with its expiry edited.

What must survive: every protected route answers 401 without a valid key, and 404 (as for an unknown id,
so nothing about the object leaks) for another key's ids, leaving the object untouched; a hashed key
authenticates like a plain one, and the API never needs the token itself; a presigned URL works until
``ECHO_PRESIGN_EXPIRES_S`` has passed and is refused (403) after, while the API hands out a fresh one.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from api_helpers import API_KEYS, ROOT, ApiServer, child_env, wav_bytes
from fault_helpers import finish_job, submit_job
from presign_gateway import PresignGateway

METHODS = ("get", "post", "put", "patch", "delete")
ALICE_HASH = "sha256:" + hashlib.sha256(API_KEYS["alice"].encode()).hexdigest()


@pytest.fixture(scope="module")
def hashed_api(launch_api: Callable[..., ApiServer], api_env: dict[str, str]) -> ApiServer:
    """The API with alice's key stored hashed and bob's plain."""
    keys = f"alice:{ALICE_HASH},bob:{API_KEYS['bob']}"
    return launch_api({**api_env, "ECHO_API_KEYS": keys})


def protected_operations(document: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(METHOD, path) of every operation the document says needs the bearer key."""
    default = document.get("security", [])
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if method in METHODS and operation.get("security", default):
                yield method.upper(), path


def test_a_hashed_key_authenticates_and_its_hash_or_a_near_miss_does_not(
    hashed_api: ApiServer, redis_client: Any
) -> None:
    # Given alice's key stored as sha256:<hex> (the API holds no token of hers) and bob's plain
    # When each presents its token, Then both are let in, each as itself
    mine = hashed_api.call("POST", "/v1/jobs", json={"text": "Hashed key."}, as_="alice")
    assert mine.status_code == 202, mine.text
    assert hashed_api.call("GET", f"/v1/jobs/{mine.json()['id']}", as_="alice").status_code == 200
    assert hashed_api.call("GET", f"/v1/jobs/{mine.json()['id']}", as_="bob").status_code == 404
    # And the stored hash itself, a near miss, another scheme or an empty bearer are 401
    for header in (
        f"Bearer {ALICE_HASH}",
        f"Bearer {ALICE_HASH.removeprefix('sha256:')}",
        f"Bearer {API_KEYS['alice'][:-1]}",
        f"Bearer {API_KEYS['alice']}x",
        f"Basic {API_KEYS['alice']}",
        "Bearer ",
    ):
        answer = hashed_api.call("GET", "/v1/jobs", as_=None, headers={"Authorization": header})
        assert answer.status_code == 401, (header, answer.text)
        assert answer.json()["error"]["code"] == "unauthorized"


def test_a_malformed_hashed_key_stops_the_api_naming_the_setting(api_env: dict[str, str]) -> None:
    # Given a hashed entry that is not 64 hex digits
    env = child_env({**api_env, "ECHO_API_KEYS": "alice:sha256:abc123"})
    # When the API starts, Then it exits with status 2 naming ECHO_API_KEYS and how to make the hash
    done = subprocess.run(
        [sys.executable, "-m", "api", "--bind", "127.0.0.1:1"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 2 and "ECHO_API_KEYS" in done.stderr and "hash-key" in done.stderr, done.stderr


def test_hash_key_prints_the_entry_for_a_token_read_from_stdin() -> None:
    # Given a token on stdin, When `python -m api hash-key --name alice` runs
    done = subprocess.run(
        [sys.executable, "-m", "api", "hash-key", "--name", "alice"],
        input=API_KEYS["alice"] + "\n",
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    # Then it prints the ECHO_API_KEYS entry (as `printf %s TOKEN | sha256sum` would give the hex)
    assert done.returncode == 0 and done.stdout.strip() == f"alice:{ALICE_HASH}", done.stderr


def test_every_protected_route_is_401_without_a_valid_key_and_404_for_another_keys_ids(
    hashed_api: ApiServer, redis_client: Any
) -> None:
    # Given alice's job, voice and book, and the routes the API's own document lists
    job = hashed_api.call("POST", "/v1/jobs", json={"text": "Alice's job."}, as_="alice")
    voice = hashed_api.call(
        "POST", "/v1/voices", data={"name": "alices-voice"}, files={"file": ("a.wav", wav_bytes(), "audio/wav")}
    )
    book = hashed_api.call("POST", "/v1/audiobooks", json={"chapters": [{"title": "One", "text": "Alice's book."}]})
    assert (job.status_code, voice.status_code, book.status_code) == (202, 202, 202), (job.text, voice.text, book.text)
    ids = {"jobs": job.json()["id"], "voices": voice.json()["id"], "audiobooks": book.json()["id"]}
    document = hashed_api.call("GET", "/v1/openapi.json", as_=None).json()
    operations = sorted(protected_operations(document))
    assert len(operations) >= 15, operations  # (the sweep reads the routes from the document)
    wrong: list[str] = []
    for method, path in operations:
        family = path.split("/")[2]
        url = path.replace("{id}", ids[family] if "{id}" in path else "").replace("{chapter}", "0")
        # When each is called without a key and with a wrong one
        for header in ({}, {"Authorization": "Bearer not-a-key-0000"}):
            answer = hashed_api.call(method, url, as_=None, headers=header, stream=True)
            if answer.status_code != 401:
                wrong.append(f"{method} {path} with {header or 'no key'}: {answer.status_code}")
            answer.close()
        # And, for routes that name an object, with bob's key on alice's id
        # (the answer must be the one for an id that does not exist: nothing about the object leaks)
        if "{id}" in path:
            answer = hashed_api.call(method, url, as_="bob", stream=True)
            unknown_id = ids[family][:-6] + "000000"
            unknown = hashed_api.call(method, url.replace(ids[family], unknown_id), as_="bob", stream=True)
            if answer.status_code != 404 or answer.json()["error"]["code"] != "not_found":
                wrong.append(f"{method} {path} as another key: {answer.status_code} {answer.text[:200]}")
            elif answer.text.replace(ids[family], "ID") != unknown.text.replace(unknown_id, "ID"):
                wrong.append(f"{method} {path} as another key: {answer.text[:200]} differs from {unknown.text[:200]}")
            answer.close()
            unknown.close()
    # Then every one was 401, and 404 for another key's ids
    print(f"routes swept: {len(operations)} ({sum('{id}' in p for _, p in operations)} with ids); refused rightly")
    assert wrong == [], "\n".join(wrong)
    # (nor does her voice's name find it for bob)
    assert hashed_api.call("GET", "/v1/voices/alices-voice", as_="bob").status_code == 404
    # And alice's objects are untouched by bob's DELETE and retry attempts
    assert hashed_api.call("GET", f"/v1/jobs/{ids['jobs']}").json()["status"] == "queued"
    assert hashed_api.call("GET", f"/v1/voices/{ids['voices']}").status_code == 200
    assert hashed_api.call("GET", f"/v1/audiobooks/{ids['audiobooks']}").json()["status"] not in ("canceled",)


@pytest.fixture
def presign_gateway(s3_endpoint: str) -> Iterator[PresignGateway]:
    gateway = PresignGateway(s3_endpoint)
    yield gateway
    gateway.close()


def test_a_presigned_url_works_until_it_expires_then_is_refused(
    service_env: dict[str, str], start_api: Any, start_worker: Any, presign_gateway: PresignGateway
) -> None:
    # Given URLs presigned for 4 s, for an endpoint that checks signatures and expiry as S3 does
    env = service_env | {"ECHO_PRESIGN_EXPIRES_S": "4"}
    api = start_api(env | {"ECHO_S3_PUBLIC_ENDPOINT_URL": presign_gateway.url})
    start_worker(env)
    done = finish_job(api.url, submit_job(api.url)["id"], timeout=120)
    assert done["status"] == "succeeded", done
    # When the job is read, Then its URL says 4 s and works at once
    url = requests.get(f"{api.url}/v1/jobs/{done['id']}", timeout=10).json()["result"]["url"]
    issued_at = time.time()
    assert url.startswith(presign_gateway.url) and "X-Amz-Expires=4&" in url
    fresh = requests.get(url, timeout=10)
    assert fresh.status_code == 200 and fresh.content[:4] == b"RIFF", fresh.content[:16]  # (wav by default)
    # And the same URL with its expiry edited is refused (the signature covers it)
    assert requests.get(url.replace("X-Amz-Expires=4&", "X-Amz-Expires=3600&"), timeout=10).status_code == 403
    # When the 4 s have passed, Then the URL is refused
    time.sleep(max(0.0, issued_at + 5.5 - time.time()))
    expired = requests.get(url, timeout=10)
    assert expired.status_code == 403 and b"Request has expired" in expired.content
    # And the API hands out a fresh one on the next read, which works
    again = requests.get(f"{api.url}/v1/jobs/{done['id']}", timeout=10).json()["result"]["url"]
    assert again != url and requests.get(again, timeout=10).status_code == 200
    assert [code for code, _ in presign_gateway.refused] == ["SignatureDoesNotMatch", "AccessDenied"]
