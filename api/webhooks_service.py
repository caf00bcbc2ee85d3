"""Webhooks in the API: check the ``webhook`` and ``webhook_events`` of a submission, show a key its
signing secret, and send ``completed`` for the terminal moves the API itself makes (a cancel of a queued
job or of a book, a queued job expiring when read). The rest (``jobs.webhooks``) is shared with workers."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis
from kombu.exceptions import OperationalError

from api.errors import APIError, invalid
from api.services import services
from jobs import webhooks
from jobs.bookstore import BookRecord
from jobs.errors import ErrorCode
from jobs.jobstore import JobRecord

log = logging.getLogger(__name__)
OFF = "webhooks are off on this server: the operator has not set ECHO_WEBHOOK_SECRET"


def form_events(data: dict[str, Any]) -> dict[str, Any]:
    """A form's ``webhook_events`` (``started,completed`` or a JSON array) as the list the models take."""
    raw = data.get("webhook_events")
    if not isinstance(raw, str):
        return data
    text = raw.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            raise invalid("webhook_events", "must be event names separated by commas, or a JSON array") from None
    else:
        value = [part.strip() for part in text.split(",") if part.strip()]
    return data | {"webhook_events": value}


def checked(url: str | None, events: list[str] | None) -> tuple[str, tuple[str, ...]] | None:
    """``(url, events)`` for the store, None without a webhook; 422 naming ``webhook`` or ``webhook_events``."""
    settings = services().settings.webhooks
    if url is None:
        if events is not None:
            raise invalid("webhook_events", "needs a webhook URL (the field webhook)")
        return None
    if settings.secret is None:
        raise invalid("webhook", OFF)
    try:
        webhooks.check_url(url, allow_private=settings.allow_private)
        return url, webhooks.checked_events(events)
    except webhooks.WebhookURLError as exc:
        hint = "" if settings.allow_private else " (ECHO_WEBHOOK_ALLOW_PRIVATE is off)"
        private = "public addresses only" in exc.message
        raise invalid("webhook", exc.message + (hint if private else "")) from None


def secret_of(owner: str) -> dict[str, Any]:
    """GET /v1/webhooks/secret: the caller's signing secret (409 while webhooks are off)."""
    master = services().settings.webhooks.secret
    if master is None:
        raise APIError(409, ErrorCode.CONFLICT, OFF, {"setting": "ECHO_WEBHOOK_SECRET"})
    return {
        "secret": webhooks.derive_secret(master, owner),
        "owner": owner,
        "events": list(webhooks.EVENTS),
        "default_events": list(webhooks.DEFAULT_EVENTS),
    }


def completed(kind: str, record: JobRecord | BookRecord) -> None:
    """Send ``completed`` for a finished record that has not sent it (once, whoever comes first: the
    worker or the API). A broker that cannot be reached is logged: the state stays readable."""
    if not webhooks.completed_due(record):
        return
    s = services()
    store: webhooks.WebhookStore = s.store if kind == "job" else s.books
    try:
        webhooks.fire(store, kind, record, "completed", s.queue.send_webhook, time.time())
    except (OperationalError, redis.RedisError) as exc:  # the client's answer must not depend on the broker
        log.warning("could not send the completed webhook of %s %s: %s", kind, record.id, exc)
