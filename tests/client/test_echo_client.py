"""EchoClient against scripted answers (httpx.MockTransport): error mapping, auth, forms, waits, downloads.

The client against the real stack is in tests/service/test_client_e2e.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from echo_client import ClientError, EchoClient, ServerUnreachable, WaitTimedOut, book_idempotency_key
from echo_client.forms import book_form_fields

API = "http://api.test:8000"
Handler = Callable[[httpx.Request], httpx.Response]


def client_with(handler: Handler, api_key: str | None = "sekret") -> EchoClient:
    return EchoClient(API, api_key, transport=httpx.MockTransport(handler))


def envelope(status: int, code: str, message: str, **details: Any) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message, "details": details}})


def test_an_error_envelope_becomes_a_client_error_with_its_status_code_message_and_details() -> None:
    # Given an API that refuses with its envelope
    client = client_with(lambda _: envelope(422, "invalid_request", "seed: too big", errors=[{"field": "seed"}]))
    # When a job is submitted
    with pytest.raises(ClientError) as caught:
        client.submit_job("Hello.", seed=2**64)
    # Then the error carries the envelope
    error = caught.value
    assert (error.status, error.code, error.message) == (422, "invalid_request", "seed: too big")
    assert error.details == {"errors": [{"field": "seed"}]} and str(error) == "seed: too big"
    assert not error.transient and not isinstance(error, ServerUnreachable)


def test_an_answer_without_an_envelope_is_an_http_error_naming_the_status() -> None:
    # Given a proxy in front that answers HTML
    client = client_with(lambda _: httpx.Response(502, text="<html>Bad Gateway</html>"))
    # When a job is read
    with pytest.raises(ClientError) as caught:
        client.job("job_1")
    # Then the status and a piece of the body are in the error, and it is transient
    assert caught.value.status == 502 and caught.value.code == "http_error"
    assert "Bad Gateway" in caught.value.message and caught.value.transient


def test_no_answer_is_server_unreachable_a_client_error_without_a_status() -> None:
    # Given a server that cannot be connected to, and one that does not answer in time
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    # When each is asked for voices
    with pytest.raises(ServerUnreachable) as refused:
        client_with(refuse).voices()
    with pytest.raises(ServerUnreachable) as hung:
        client_with(hang).voices()
    # Then both are ServerUnreachable (a ClientError) with no status
    assert isinstance(refused.value, ClientError) and refused.value.status is None
    assert refused.value.code == "unreachable" and "api.test:8000" in refused.value.message
    assert hung.value.code == "timeout" and hung.value.transient


def test_the_api_key_goes_to_the_api_as_a_bearer_token_with_the_idempotency_key() -> None:
    # Given an API that records the request
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"id": "job_1", "status": "queued"}, headers={"Idempotent-Replayed": "true"})

    # When a job is submitted with options and an Idempotency-Key
    job = client_with(handler).submit_job("Hi.", idempotency_key="k-1", seed=3, overrides={"num_steps": 2}, voice=None)
    # Then it went as JSON with the key and the token, and the replay is reported
    request = seen[0]
    assert request.url == f"{API}/v1/jobs" and request.headers["Authorization"] == "Bearer sekret"
    assert request.headers["Idempotency-Key"] == "k-1"
    assert json.loads(request.content) == {"text": "Hi.", "seed": 3, "overrides": {"num_steps": 2}}
    assert job == {"id": "job_1", "status": "queued"} and job.replayed is True


def test_a_book_goes_as_a_form_with_its_file_and_options_as_the_api_reads_them(tmp_path: Path) -> None:
    # Given a Markdown book and an API that records the request
    book = tmp_path / "tale.md"
    book.write_bytes(b"# T\n\n## One\n\nHello.\n")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"id": "book_1", "status": "queued"})

    # When it is submitted with options
    answer = client_with(handler).submit_book(
        book, idempotency_key="bk", overrides={"num_steps": 2}, seed=5, chapters=[0, 2], title="Tale", voice=None
    )
    # Then it is multipart with the file and the options as form fields
    body = seen[0].content.decode()
    headers = seen[0].headers
    assert headers["Content-Type"].startswith("multipart/form-data") and headers["Idempotency-Key"] == "bk"
    assert 'name="file"; filename="tale.md"' in body and "Hello." in body
    assert book_form_fields({"overrides": {"num_steps": 2}, "seed": 5, "chapters": [0, 2], "voice": None}) == {
        "overrides": '{"num_steps":2}',
        "seed": "5",
        "chapters": "0,2",
    }
    for name, value in (("overrides", '{"num_steps":2}'), ("seed", "5"), ("chapters", "0,2"), ("title", "Tale")):
        assert f'name="{name}"\r\n\r\n{value}\r\n' in body
    assert 'name="voice"' not in body and answer.replayed is False


def test_the_book_key_is_the_same_for_the_same_file_and_options_and_differs_otherwise() -> None:
    # Given a book and its options
    data, options = b"# T\n\nHello.\n", {"seed": 5, "overrides": {"num_steps": 2}}
    key = book_idempotency_key(data, "t.md", options)
    # When the key is derived again, in another order, and with a change to the file, name or options
    # Then only the changes change it, and it fits the API's limit
    assert key == book_idempotency_key(data, "/elsewhere/t.md", {"overrides": {"num_steps": 2}, "seed": 5})
    assert key != book_idempotency_key(data + b"!", "t.md", options)
    assert key != book_idempotency_key(data, "u.md", options)
    assert key != book_idempotency_key(data, "t.md", {**options, "seed": 6})
    assert 1 <= len(key) <= 255


def test_waiting_reports_each_read_and_rides_out_a_brief_outage() -> None:
    # Given a book that is running, then the API is unavailable once, then the book succeeds
    answers = iter(
        [
            httpx.Response(200, json={"id": "b", "status": "running", "progress": 0.5}),
            envelope(503, "unavailable", "Redis is down"),
            httpx.Response(200, json={"id": "b", "status": "succeeded", "progress": 1.0}),
        ]
    )
    seen: list[dict[str, Any]] = []
    # When the book is waited for
    final = client_with(lambda _: next(answers)).wait_book("b", seen.append, poll_s=0)
    # Then every status read was reported and the last one returned
    assert [b["status"] for b in seen] == ["running", "succeeded"] and final["progress"] == 1.0


def test_waiting_stops_on_a_refusal_and_after_its_timeout() -> None:
    # Given an API that no longer knows the job, and a job that stays queued
    gone = client_with(lambda _: envelope(404, "not_found", "no job 'j'"))
    stuck = client_with(lambda _: httpx.Response(200, json={"id": "j", "status": "queued"}))
    # When each is waited for
    with pytest.raises(ClientError) as refused:
        gone.wait_job("j", poll_s=0)
    with pytest.raises(WaitTimedOut) as timed_out:
        stuck.wait_job("j", poll_s=0.01, timeout=0.05)
    # Then the refusal is raised at once and the timeout carries the last status read
    assert refused.value.status == 404
    assert timed_out.value.last == {"id": "j", "status": "queued"}


def test_a_download_follows_the_redirect_without_the_api_key_and_lands_atomically(tmp_path: Path) -> None:
    # Given an API that redirects to a presigned URL on the storage host
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "api.test":
            return httpx.Response(302, headers={"Location": "http://s3.test/bucket/book.m4b?X-Amz-Signature=x"})
        return httpx.Response(200, content=b"M4B" * 1000)

    target = tmp_path / "book.m4b"
    target.write_bytes(b"old")
    # When the book is downloaded
    written = client_with(handler).download_book({"id": "book_1"}, target)
    # Then the API got the key, the storage host did not, and the file is complete with no temporary left
    assert seen[0].url.path == "/v1/audiobooks/book_1/audio" and seen[0].headers["Authorization"] == "Bearer sekret"
    assert seen[1].url.host == "s3.test" and "Authorization" not in seen[1].headers
    assert written == target and target.read_bytes() == b"M4B" * 1000
    assert [p.name for p in tmp_path.iterdir()] == ["book.m4b"]


def test_a_refused_or_broken_download_leaves_the_old_file_untouched(tmp_path: Path) -> None:
    # Given a job not ready yet, and a storage host that breaks off mid-body
    target = tmp_path / "out.mp3"
    target.write_bytes(b"old")
    not_ready = client_with(lambda _: envelope(409, "not_ready", "job job_1 is running"))

    def broken_stream(request: httpx.Request) -> httpx.Response:
        def body() -> Any:
            yield b"partial"
            raise httpx.ReadError("connection reset", request=request)

        return httpx.Response(200, content=body())

    # When each download is tried
    with pytest.raises(ClientError) as refused:
        not_ready.download("job_1", target)
    with pytest.raises(ServerUnreachable):
        client_with(broken_stream).download("http://s3.test/jobs/job_1/audio.mp3", target)
    # Then the refusal names its code, and the old file is there alone
    assert refused.value.code == "not_ready"
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["out.mp3"]
