"""Webhooks end to end: the API (``python -m api``), a rendering worker and an assembler (real
``python -m worker`` processes on the tiny checkpoint), real Redis, moto S3, and a receiver: a small
HTTP server on loopback in this test. Every delivery is verified with the ``standardwebhooks`` package
and the secret the API shows the key (``GET /v1/webhooks/secret``)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from service_helpers import ApiProcess, wait_for
from standardwebhooks import Webhook, WebhookVerificationError

from jobs.contract import TERMINAL_STATES

pytestmark = pytest.mark.slow
AUTH = {"Authorization": "Bearer alice-token-0001"}


@dataclass
class Receiver:
    """Records every POST (path, headers, body); answers the statuses queued for a path, then 200."""

    url: str
    calls: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    script: dict[str, list[int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on(self, path: str) -> list[tuple[dict[str, str], bytes]]:
        with self.lock:
            return [(h, b) for p, h, b in self.calls if p == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    box: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            rec = box[0]
            with rec.lock:
                rec.calls.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                statuses = rec.script.get(self.path) or []
                status = statuses.pop(0) if statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    box.append(Receiver(f"http://127.0.0.1:{server.server_address[1]}"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield box[0]
    server.shutdown()
    server.server_close()


@pytest.fixture
def stack(service_env: dict[str, str], start_api: Any, start_worker: Any) -> ApiProcess:
    """Auth on, webhooks on with loopback allowed, fast retries; one render worker (it delivers too,
    by default) and one assembler."""
    env = service_env | {
        "ECHO_API_KEYS": "alice:alice-token-0001",
        "ECHO_WEBHOOK_SECRET": "e2e-webhook-master-secret-0123456789abcdef",
        "ECHO_WEBHOOK_ALLOW_PRIVATE": "1",
        "ECHO_WEBHOOK_RETRY_BASE_S": "0.2",
        "ECHO_WEBHOOK_PROGRESS_INTERVAL_S": "0.3",
        "ECHO_MAX_PIECE_BYTES": "80",
    }
    api = start_api(env)
    start_worker(env)
    start_worker(env | {"ECHO_WORKER_ROLE": "assemble"})
    return api


def get(api: ApiProcess, path: str) -> dict[str, Any]:
    answer = requests.get(f"{api.url}{path}", headers=AUTH, timeout=10)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def post(api: ApiProcess, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = requests.post(f"{api.url}{path}", json=body, headers=AUTH, timeout=30)
    assert answer.status_code == 202, answer.text
    return dict(answer.json())


def finished(api: ApiProcess, path: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        view = get(api, path)
        return view if view["status"] in TERMINAL_STATES else None

    return wait_for(done, timeout=180, what=path, interval=0.2)  # type: ignore[return-value]


def delivery(view: dict[str, Any], event: str) -> dict[str, Any]:
    return next(d for d in view["webhook"]["deliveries"] if d["event"] == event)


def test_jobs_and_books_deliver_signed_events_and_retry_until_the_receiver_answers(
    stack: ApiProcess, receiver: Receiver
) -> None:
    # Given the key's secret, and a receiver whose /flaky path answers 500 twice before 200
    secret = get(stack, "/v1/webhooks/secret")["secret"]
    receiver.script["/flaky"] = [500, 500]
    # When a job asks for every event, a second job (default events) uses the flaky path, and a book
    # asks for its completion
    text = "The first sentence is here. The second sentence follows it. A third one ends."
    every = post(
        stack,
        "/v1/jobs",
        {
            "text": text,
            "seed": 3,
            "overrides": {"num_steps": 6},
            "webhook": f"{receiver.url}/all",
            "webhook_events": ["started", "progress", "completed"],
        },
    )
    flaky = post(
        stack,
        "/v1/jobs",
        {"text": "Hello there.", "seed": 4, "overrides": {"num_steps": 2}, "webhook": f"{receiver.url}/flaky"},
    )
    book = post(
        stack,
        "/v1/audiobooks",
        {
            "title": "Hooks",
            "seed": 5,
            "overrides": {"num_steps": 2},
            "chapters": [{"title": "One", "text": "A short chapter to speak."}],
            "webhook": f"{receiver.url}/book",
        },
    )
    assert finished(stack, f"/v1/jobs/{every['id']}")["status"] == "succeeded"
    assert finished(stack, f"/v1/jobs/{flaky['id']}")["status"] == "succeeded"
    assert finished(stack, f"/v1/audiobooks/{book['id']}")["status"] == "succeeded"
    wait_for(lambda: len(receiver.on("/flaky")) == 3, timeout=30, what="three attempts at /flaky")
    wait_for(lambda: receiver.on("/book"), timeout=30, what="the book's completed event")

    def types(path: str) -> list[str]:
        return [Webhook(secret).verify(body, headers)["type"] for headers, body in receiver.on(path)]

    wait_for(lambda: "job.completed" in types("/all"), timeout=30, what="the job's completed event")
    # Then every delivery verifies with the key's secret: the job got started, progress and completed
    # once each (progress maybe more often), each describing the job at that moment
    seen = types("/all")
    assert set(seen) == {"job.started", "job.progress", "job.completed"}
    assert seen.count("job.started") == seen.count("job.completed") == 1
    payloads = {p["type"]: p for p in (Webhook(secret).verify(b, h) for h, b in receiver.on("/all"))}
    assert {p["data"]["id"] for p in payloads.values()} == {every["id"]}
    completed = payloads["job.completed"]["data"]
    assert completed["status"] == "succeeded" and completed["result"]["format"] == "wav"
    assert "url" not in completed["result"] and payloads["job.started"]["data"]["status"] == "running"
    assert payloads["job.progress"]["data"]["progress"]["step"] >= 1
    # And a tampered body fails verification
    headers, body = next((h, b) for h, b in receiver.on("/all") if b'"job.completed"' in b)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"succeeded", b"failed"), headers)
    # And the flaky receiver got the same message three times (one webhook-id), the job view saying
    # attempts=3, delivered with 200
    assert types("/flaky") == ["job.completed"] * 3
    assert len({h["webhook-id"] for h, _ in receiver.on("/flaky")}) == 1
    view = wait_for(
        lambda: (v := get(stack, f"/v1/jobs/{flaky['id']}")) and delivery(v, "completed")["state"] == "delivered" and v,
        timeout=20,
        what="the delivered state",
    )
    done = delivery(view, "completed")  # type: ignore[arg-type]
    assert (done["attempts"], done["status_code"], done["last_error"]) == (3, 200, None) and done["delivered_at"]
    # And the book's completed event arrived once, signed, describing the finished book
    assert types("/book") == ["book.completed"]
    book_payload = json.loads(receiver.on("/book")[0][1])
    assert book_payload["data"]["id"] == book["id"] and book_payload["data"]["status"] == "succeeded"
    assert delivery(get(stack, f"/v1/audiobooks/{book['id']}"), "completed")["state"] == "delivered"
