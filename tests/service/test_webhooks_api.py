"""Webhook fields at the API over real HTTP (``python -m api``, real Redis, moto S3; no worker): what is
refused at submit (422 naming the field), what is stored and shown, the secret route, and the
``completed`` message the API itself sends when it cancels a queued job."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from api_helpers import ApiServer, queued_tasks

from jobs import contract, webhooks

MASTER = "test-webhook-master-secret-0123456789abcdef"


@pytest.fixture(scope="session")
def strict_api(launch_api: Callable[..., ApiServer], api_env: dict[str, str]) -> ApiServer:
    """Webhooks on, private addresses refused (the default)."""
    return launch_api(api_env | {"ECHO_WEBHOOK_SECRET": MASTER})


@pytest.fixture(scope="session")
def open_api(launch_api: Callable[..., ApiServer], api_env: dict[str, str]) -> ApiServer:
    """Webhooks on, private addresses allowed (ECHO_WEBHOOK_ALLOW_PRIVATE=1)."""
    return launch_api(api_env | {"ECHO_WEBHOOK_SECRET": MASTER, "ECHO_WEBHOOK_ALLOW_PRIVATE": "1"})


def fields(answer: object) -> list[str]:
    body = answer.json()  # type: ignore[attr-defined]
    return [e["field"] for e in body["error"]["details"]["errors"]]


JOB = {"text": "Hello there."}
BOOK = {"title": "T", "chapters": [{"title": "One", "text": "A short chapter."}]}


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost:8000/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://10.0.0.8/hook",
        "ftp://93.184.215.14/hook",
    ],
)
def test_private_and_non_http_webhooks_are_refused_at_submit(
    strict_api: ApiServer, redis_client: redis.Redis, url: str
) -> None:
    # Given an API with private addresses refused
    # When a job and a book name a webhook on a private address (or not http)
    job = strict_api.call("POST", "/v1/jobs", json=JOB | {"webhook": url})
    book = strict_api.call("POST", "/v1/audiobooks", json=BOOK | {"webhook": url})
    # Then both are 422 naming the field webhook, and nothing was stored or queued
    assert (job.status_code, book.status_code) == (422, 422), job.text
    assert fields(job) == fields(book) == ["webhook"]
    assert queued_tasks(redis_client) == [] and queued_tasks(redis_client, contract.QUEUE_ASSEMBLY) == []


def test_a_public_address_passes_and_the_view_shows_the_webhook_without_the_secret(
    strict_api: ApiServer, redis_client: redis.Redis
) -> None:
    # Given the same API, When a job names a webhook on a public address (no events: the default)
    answer = strict_api.call("POST", "/v1/jobs", json=JOB | {"webhook": "https://93.184.215.14/hooks?t=1"})
    # Then it is queued, and its view shows the URL, the default events and no deliveries yet
    assert answer.status_code == 202, answer.text
    view = answer.json()
    assert view["webhook"] == {"url": "https://93.184.215.14/hooks?t=1", "events": ["completed"], "deliveries": []}
    assert "whsec_" not in answer.text
    # And a job without a webhook shows null
    assert strict_api.call("POST", "/v1/jobs", json=JOB).json()["webhook"] is None


def test_private_addresses_are_accepted_when_the_setting_allows_them(
    open_api: ApiServer, redis_client: redis.Redis
) -> None:
    # Given an API with ECHO_WEBHOOK_ALLOW_PRIVATE=1
    # When a job (JSON) and a book (multipart, events comma-separated) name loopback webhooks
    job = open_api.call(
        "POST", "/v1/jobs", json=JOB | {"webhook": "http://127.0.0.1:9/h", "webhook_events": ["completed", "started"]}
    )
    book = open_api.call(
        "POST",
        "/v1/audiobooks",
        files={"file": ("b.txt", b"Chapter 1\n\nSome text to speak.\n")},
        data={"webhook": "http://localhost:9/b", "webhook_events": "progress,completed"},
    )
    form_job = open_api.call(
        "POST", "/v1/jobs", data={"text": "Hi.", "webhook": "http://127.0.0.1:9/f", "webhook_events": '["started"]'}
    )
    # Then all are accepted, with their events in canonical order
    assert (job.status_code, book.status_code, form_job.status_code) == (202, 202, 202), book.text
    assert job.json()["webhook"]["events"] == ["started", "completed"]
    assert book.json()["webhook"]["events"] == ["progress", "completed"]
    assert form_job.json()["webhook"]["events"] == ["started"]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"webhook": "http://127.0.0.1:9/h", "webhook_events": ["finished"]}, "webhook_events.0"),
        ({"webhook": "http://127.0.0.1:9/h", "webhook_events": []}, "webhook_events"),
        ({"webhook": "http://127.0.0.1:9/h", "webhook_events": "completed"}, "webhook_events"),
        ({"webhook_events": ["completed"]}, "webhook_events"),
        ({"webhook": 5}, "webhook"),
        ({"webhook": "not a url"}, "webhook"),
    ],
)
def test_bad_webhook_fields_are_422_naming_the_field(
    open_api: ApiServer, redis_client: redis.Redis, extra: dict[str, object], field: str
) -> None:
    # Given an API with webhooks on, When a job and a book carry a bad webhook field
    job = open_api.call("POST", "/v1/jobs", json=JOB | extra)
    book = open_api.call("POST", "/v1/audiobooks", json=BOOK | extra)
    # Then both are 422 naming it
    assert (job.status_code, book.status_code) == (422, 422), job.text
    assert fields(job) == fields(book) == [field]


def test_a_form_with_unknown_events_is_422_naming_the_field(open_api: ApiServer, redis_client: redis.Redis) -> None:
    # Given a multipart job and book whose webhook_events hold an unknown name or broken JSON
    form = {"text": "Hi.", "webhook": "http://127.0.0.1:9/", "webhook_events": "start"}
    job = open_api.call("POST", "/v1/jobs", data=form)
    book = open_api.call(
        "POST",
        "/v1/audiobooks",
        files={"file": ("b.txt", b"Some text.\n")},
        data={"webhook": "http://127.0.0.1:9/", "webhook_events": "[started"},
    )
    # Then both are 422 naming webhook_events
    assert (job.status_code, book.status_code) == (422, 422)
    assert fields(job)[0].startswith("webhook_events") and fields(book) == ["webhook_events"]


def test_each_key_reads_its_own_secret_and_webhooks_are_off_without_the_master(
    open_api: ApiServer, api: ApiServer
) -> None:
    # Given an API with ECHO_WEBHOOK_SECRET and the shared one without it
    # When alice and bob ask for their secrets
    alice = open_api.call("GET", "/v1/webhooks/secret", as_="alice")
    bob = open_api.call("GET", "/v1/webhooks/secret", as_="bob")
    # Then each gets the secret derived for their key name, and they differ; no key is 401
    assert alice.status_code == bob.status_code == 200
    assert alice.json()["secret"] == webhooks.derive_secret(MASTER, "alice") != bob.json()["secret"]
    assert alice.json()["events"] == ["started", "progress", "completed"]
    assert open_api.call("GET", "/v1/webhooks/secret", as_=None).status_code == 401
    # And without the master secret the route is 409 and a webhook is 422 naming the field and the setting
    off = api.call("GET", "/v1/webhooks/secret")
    refused = api.call("POST", "/v1/jobs", json=JOB | {"webhook": "https://93.184.215.14/h"})
    assert off.status_code == 409 and "ECHO_WEBHOOK_SECRET" in off.json()["error"]["message"]
    assert refused.status_code == 422 and fields(refused) == ["webhook"] and "ECHO_WEBHOOK_SECRET" in refused.text


def test_canceling_a_queued_job_sends_its_completed_event_once(open_api: ApiServer, redis_client: redis.Redis) -> None:
    # Given a queued job with a webhook (no worker runs here)
    job = open_api.call("POST", "/v1/jobs", json=JOB | {"webhook": "http://127.0.0.1:9/h"}).json()
    # When it is canceled, twice, and read
    open_api.call("DELETE", f"/v1/jobs/{job['id']}")
    open_api.call("DELETE", f"/v1/jobs/{job['id']}")
    view = open_api.call("GET", f"/v1/jobs/{job['id']}").json()
    # Then one delivery task waits on the webhook queue with the canceled job as its payload
    sent = queued_tasks(redis_client, contract.QUEUE_WEBHOOKS)
    assert [t["task"] for t in sent] == [contract.WEBHOOK_DELIVER]
    kwargs = sent[0]["kwargs"]
    assert (kwargs["kind"], kwargs["record_id"], kwargs["event"]) == ("job", job["id"], "completed")
    assert kwargs["payload"]["type"] == "job.completed" and kwargs["payload"]["data"]["status"] == "canceled"
    # And the job shows that delivery as pending under the same message id
    assert view["webhook"]["deliveries"] == [
        {
            "event": "completed",
            "message_id": kwargs["message_id"],
            "state": "pending",
            "attempts": 0,
            "status_code": None,
            "last_error": None,
            "last_attempt_at": None,
            "delivered_at": None,
            "next_attempt_at": None,
        }
    ]
