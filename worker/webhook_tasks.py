"""Webhooks on the workers: fire events where jobs and books change, and deliver them over HTTP.

*Firing* (:func:`notify`, :func:`progress`) builds a message from the record (``jobs.webhooks.fire``:
``started`` and ``completed`` at most once, ``progress`` at most every ECHO_WEBHOOK_PROGRESS_INTERVAL_S
across all workers) and sends the task ``contract.WEBHOOK_DELIVER`` to ``contract.QUEUE_WEBHOOKS``. It
never fails the caller: a render goes on whatever happens to a webhook.

*Delivering* (:func:`deliver`, the task): the URL is checked again (DNS rebinding: a host that now
resolves to a private address is refused, and the request goes to the address that was checked), the
body is signed (Standard Webhooks) with the owner's secret and POSTed once, redirects not followed,
ECHO_WEBHOOK_TIMEOUT_S at most. 2xx is delivered; 408, 429, 5xx and network errors are retried after
ECHO_WEBHOOK_RETRY_BASE_S x 1, 3, 9, 27, 81 (6 attempts over about 10 minutes by default); other
answers fail at once. Every attempt is written to the record (``jobs.webhooks.record_attempt``) before
the next is scheduled, so a retry on another worker carries on from the stored count. ``progress``
messages get one attempt (the next one supersedes them) and are dropped once the record has finished.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import redis
from celery import Celery, Task

from jobs import webhooks
from jobs.contract import QUEUE_WEBHOOKS, TERMINAL_STATES, WEBHOOK_DELIVER, JobState
from jobs.records import iso
from jobs.settings import WebhookSettings

from .engine import Engine, get_engine
from .settings import WorkerSettings

log = logging.getLogger(__name__)
_CACHE_SIZE = 4096  # records whose subscribed events this process remembers (they never change)


def _store(engine: Engine, kind: str) -> Any:
    return engine.jobs if kind == "job" else engine.books


class Notifier:
    """Fires the events of this process's jobs and books (one per worker process)."""

    def __init__(self, send: Callable[[dict[str, Any]], None], settings: WebhookSettings) -> None:
        self.send, self.settings = send, settings
        self._events: OrderedDict[tuple[str, str], tuple[str, ...]] = OrderedDict()

    def _subscribed(self, engine: Engine, kind: str, record_id: str) -> tuple[str, ...]:
        key = (kind, record_id)
        if key not in self._events:
            record = _store(engine, kind).get(record_id)
            self._events[key] = tuple(record.webhook["events"]) if record and record.webhook else ()
            while len(self._events) > _CACHE_SIZE:
                self._events.popitem(last=False)
        return self._events[key]

    def notify(self, engine: Engine, kind: str, record_id: str) -> None:
        """``started`` for a running record (a book once planned), ``completed`` for a finished one."""
        if not self._subscribed(engine, kind, record_id):
            return
        store = _store(engine, kind)
        record = store.get(record_id)
        if record is None:
            return
        now = time.time()
        if record.status is JobState.RUNNING and (kind == "job" or record.planned):
            webhooks.fire(store, kind, record, "started", self.send, now)
        elif record.status in TERMINAL_STATES:
            webhooks.fire(store, kind, record, "completed", self.send, now)

    def progress(self, engine: Engine, kind: str, record_id: str) -> None:
        """``progress`` of a running record, at most once per interval across every worker."""
        if "progress" not in self._subscribed(engine, kind, record_id):
            return
        store = _store(engine, kind)
        if not store.webhook_throttle(record_id, self.settings.progress_interval_s):
            return
        record = store.get(record_id)
        if record is not None and record.status is JobState.RUNNING:
            webhooks.fire(store, kind, record, "progress", self.send, time.time())


_notifier: Notifier | None = None


def notify(engine: Engine, kind: str, record_id: str) -> None:
    """Fire ``started`` / ``completed`` of a job or book if its webhook wants them (never raises)."""
    if _notifier is not None and record_id:
        try:
            _notifier.notify(engine, kind, record_id)
        except Exception:
            log.warning("%s %s: could not fire a webhook event", kind, record_id, exc_info=True)


def progress(engine: Engine, kind: str, record_id: str) -> None:
    """Fire a throttled ``progress`` event of a job or book if its webhook wants it (never raises)."""
    if _notifier is not None and record_id:
        try:
            _notifier.progress(engine, kind, record_id)
        except Exception:
            log.warning("%s %s: could not fire a progress webhook", kind, record_id, exc_info=True)


# --- delivery ---------------------------------------------------------------------------------------
def post(
    settings: WebhookSettings,
    url: str,
    secret: str,
    message_id: str,
    payload: dict[str, Any],
    *,
    resolve: webhooks.Resolver = webhooks.resolve_host,
) -> tuple[int | None, str | None, str]:
    """One signed POST: ``(status code or None, error or None, verdict)`` (jobs.webhooks.verdict)."""
    try:
        target = webhooks.check_url(url, allow_private=settings.allow_private, resolve=resolve)
    except webhooks.WebhookURLError as exc:
        return None, f"webhook {exc.message}", "retry" if exc.retryable else "failed"
    body = webhooks.encode_body(payload)
    headers = webhooks.signed_headers(secret, message_id, body, datetime.now(UTC))
    headers["host"] = target.host_header
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    try:
        # trust_env off: no proxy from the environment may take the request elsewhere than the checked address
        with httpx.Client(timeout=settings.timeout_s, follow_redirects=False, trust_env=False) as client:
            request = client.build_request(
                "POST", target.pinned_url(), content=body.encode(), headers=headers, extensions=extensions
            )
            response = client.send(request, stream=True)  # the answer's body is never read
            response.close()
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:500], "retry"
    verdict = webhooks.verdict(response.status_code)
    if verdict == "delivered":
        return response.status_code, None, verdict
    note = " (redirects are not followed)" if 300 <= response.status_code < 400 else ""
    return response.status_code, f"the receiver answered {response.status_code}{note}", verdict


def deliver(
    engine: Engine,
    settings: WebhookSettings,
    kind: str,
    record_id: str,
    event: str,
    message_id: str,
    payload: dict[str, Any],
    *,
    resolve: webhooks.Resolver = webhooks.resolve_host,
) -> dict[str, Any]:
    """One attempt at ``message_id``; the outcome is stored in the record first. Returns
    ``{"state", "attempts", "retry_in"}`` (``retry_in``: seconds until the next attempt, or None)."""
    store = _store(engine, kind)
    record = store.get(record_id)
    state = record.webhook if record is not None else None
    current = next((d for d in state["deliveries"] if d["event"] == event), None) if state else None
    if state is None or current is None or current["message_id"] != message_id:
        return {"state": "dropped", "attempts": 0, "retry_in": None}  # the record is gone, or a newer message
    if current["state"] in ("delivered", "failed", "dropped"):
        return {"state": current["state"], "attempts": current["attempts"], "retry_in": None}  # a re-delivery
    assert record is not None
    now = time.time()
    attempts = int(current["attempts"])
    if event == "progress" and record.status is not JobState.RUNNING:
        dropped = {"state": "dropped", "last_error": f"the {kind} finished before this progress event went out"}
        store.webhook_attempt(record_id, event, message_id, attempts, dropped)
        return {"state": "dropped", "attempts": attempts, "retry_in": None}
    attempts += 1
    status_code: int | None
    error: str | None
    if settings.secret is None:
        status_code, error, verdict = None, "ECHO_WEBHOOK_SECRET is not set on this worker", "failed"
    else:
        secret = webhooks.derive_secret(settings.secret, record.owner)
        status_code, error, verdict = post(settings, state["url"], secret, message_id, payload, resolve=resolve)
    retry_in = None
    if verdict == "retry" and event != "progress" and attempts < settings.attempts:
        retry_in = webhooks.retry_delay(attempts, settings.retry_base_s)
        result = "retrying"
    else:
        result = "delivered" if verdict == "delivered" else "failed"
    outcome: dict[str, Any] = {
        "state": result,
        "status_code": status_code,
        "last_error": error,
        "last_attempt_at": iso(now),
        "delivered_at": iso(now) if result == "delivered" else None,
        "next_attempt_at": iso(now + retry_in) if retry_in is not None else None,
    }
    store.webhook_attempt(record_id, event, message_id, attempts, outcome)
    level = logging.INFO if result == "delivered" else logging.WARNING
    log.log(level, "%s %s: webhook %s attempt %d: %s", kind, record_id, event, attempts, error or "delivered")
    return {"state": result, "attempts": attempts, "retry_in": retry_in}


def register_webhook_tasks(app: Celery, settings: WorkerSettings) -> None:
    """The delivery task, and this process's notifier (it sends the task over ``app``)."""
    global _notifier

    def send(kwargs: dict[str, Any]) -> None:
        app.send_task(WEBHOOK_DELIVER, kwargs=kwargs, queue=QUEUE_WEBHOOKS)

    _notifier = Notifier(send, settings.webhooks)
    transient = (redis.ConnectionError, redis.TimeoutError)

    @app.task(
        name=WEBHOOK_DELIVER,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        autoretry_for=transient,  # Redis unreachable: Celery's backoff; the HTTP retries are ours below
        retry_backoff=2,
        retry_backoff_max=60,
        retry_jitter=True,
        max_retries=settings.storage_retries + settings.webhooks.attempts,
    )
    def deliver_task(
        self: Task, kind: str, record_id: str, event: str, message_id: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        outcome = deliver(get_engine(), settings.webhooks, kind, record_id, event, message_id, payload)
        if outcome["retry_in"] is not None:
            raise self.retry(countdown=outcome["retry_in"])
        return outcome
