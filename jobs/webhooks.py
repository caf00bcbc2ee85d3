"""Webhooks, the torch-free and Celery-free part: event names, the URL guard, per-key secrets, Standard
Webhooks signing, payloads, and the delivery state kept in the record's own Redis hash.

A job or book may name a ``webhook`` URL and the ``webhook_events`` it wants (``started``, ``progress``,
``completed``; default ``completed`` only, which covers every terminal state: succeeded, failed,
canceled, expired). Each event is one *message* (``msg_…`` id, the same on every retry of it) that a
worker delivers as the Celery task ``contract.WEBHOOK_DELIVER`` on ``contract.QUEUE_WEBHOOKS``
(``worker/webhook_tasks.py``). The API fires ``completed`` for the terminal moves it makes itself
(cancel of a queued job or of a book, expiry seen on a read).

Signing follows the Standard Webhooks spec (https://www.standardwebhooks.com): headers ``webhook-id``,
``webhook-timestamp`` and ``webhook-signature`` (``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``),
computed with the ``standardwebhooks`` package. Each API key signs with its own secret,
``whsec_`` + base64(HMAC-SHA256(ECHO_WEBHOOK_SECRET, context + key name)): the operator keeps one master
secret, and a key's owner reads theirs at ``GET /v1/webhooks/secret``.

Record hash fields (next to the record's own): ``webhook`` (JSON ``{url, events}``, set at creation),
and per event ``wh:{event}:id`` (the message being delivered), ``wh:{event}:n`` (its attempts) and
``wh:{event}`` (JSON: state, status_code, last_error, delivered_at, ...). Only the latest message of
an event is kept (for ``progress``: the latest progress message). ``started`` and ``completed`` are
begun at most once per run (a retried book clears them when it is queued again).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import math
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from standardwebhooks import Webhook

from jobs.contract import TERMINAL_STATES
from jobs.errors import ErrorCode, ServiceError
from jobs.records import iso, loads

if TYPE_CHECKING:
    import redis

    from jobs.bookstore import BookRecord
    from jobs.jobstore import JobRecord

EVENTS = ("started", "progress", "completed")
DEFAULT_EVENTS = ("completed",)
KINDS = ("job", "book")
SCHEMES = ("http", "https")
MAX_URL_LENGTH = 2048
SECRET_PREFIX = "whsec_"
_SECRET_CONTEXT = b"echo-tts webhook signing secret v1\x00"
RETRY_FACTOR = 3  # each retry waits 3x the one before: base, 3 base, 9 base, ...
USER_AGENT = "echo-tts-webhooks/1"


class WebhookURLError(ServiceError):
    """A webhook URL that may not be called; ``retryable`` when it may work later (DNS failing now)."""

    code = ErrorCode.INVALID_REQUEST

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


# --- the URL guard ------------------------------------------------------------------------------
Resolver = Callable[[str, int], Sequence[str]]


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (IPv4 and IPv6), in the resolver's order, without repeats."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


_KINDS_OF_ADDRESS = (
    ("is_loopback", "loopback"),
    ("is_link_local", "link-local (cloud metadata services live here)"),
    ("is_multicast", "multicast"),
    ("is_unspecified", "unspecified"),
    ("is_reserved", "reserved"),
    ("is_private", "private"),
)


def address_problem(address: str) -> str | None:
    """Why a webhook may not go to ``address`` (an IPv4 or IPv6 literal), or None for a public one.
    IPv4-mapped IPv6 addresses (``::ffff:127.0.0.1``) are judged as the IPv4 address they carry."""
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address)
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for attribute, name in _KINDS_OF_ADDRESS:
        if getattr(ip, attribute):
            return f"{address} is a {name} address"
    if not ip.is_global:
        return f"{address} is not a public address"
    return None


@dataclass(frozen=True)
class Target:
    """A checked webhook URL: where it resolved, so the delivery connects to an address that was checked
    (a second DNS answer cannot move it onto a private address between the check and the connect)."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]

    @property
    def host_header(self) -> str:
        default = {"http": 80, "https": 443}[self.scheme]
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"

    def pinned_url(self) -> str:
        """The URL with its host replaced by the first checked address (TLS still checks ``host``)."""
        parts = urlsplit(self.url)
        address = self.addresses[0]
        netloc = f"[{address}]" if ":" in address else address
        return urlunsplit((parts.scheme, f"{netloc}:{self.port}", parts.path or "/", parts.query, ""))


def check_url(url: str, *, allow_private: bool, resolve: Resolver = resolve_host) -> Target:
    """The URL as a :class:`Target`, or :class:`WebhookURLError` saying why it may not be called: not
    http(s), no host, credentials in it, too long, a host that does not resolve, or (unless
    ``allow_private``) any address it resolves to being private, loopback, link-local or reserved."""
    if len(url) > MAX_URL_LENGTH:
        raise WebhookURLError(f"is {len(url)} characters long; the limit is MAX_URL_LENGTH={MAX_URL_LENGTH}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookURLError(f"is not a valid URL ({exc})") from None
    if parts.scheme not in SCHEMES:
        raise WebhookURLError("must be an http:// or https:// URL")
    host = parts.hostname
    if not host:
        raise WebhookURLError("has no host")
    if parts.username is not None or parts.password is not None:
        raise WebhookURLError("must not hold credentials (user:password@); put a token in the path or query")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise WebhookURLError("must not hold spaces or control characters")
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = (host,) if _is_ip(host) else tuple(resolve(host, port))
    except (OSError, UnicodeError) as exc:
        raise WebhookURLError(f"host {host!r} does not resolve ({exc})", retryable=True) from None
    if not addresses:
        raise WebhookURLError(f"host {host!r} does not resolve", retryable=True)
    if not allow_private:
        for address in addresses:
            problem = address_problem(address)
            if problem:
                shown = "" if address == host else f"host {host!r} resolves to "
                raise WebhookURLError(f"{shown}{problem}; webhooks go to public addresses only")
    return Target(url, parts.scheme, host, port, addresses)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def checked_events(events: Sequence[str] | None) -> tuple[str, ...]:
    """The events asked for, each once, in the order of :data:`EVENTS` (default: completed only)."""
    if events is None:
        return DEFAULT_EVENTS
    unknown = [e for e in events if e not in EVENTS]
    if unknown:
        raise WebhookURLError(f"unknown event {unknown[0]!r}; the events are {', '.join(EVENTS)}")
    if not events:
        raise WebhookURLError(f"must name at least one event of {', '.join(EVENTS)}")
    return tuple(e for e in EVENTS if e in events)


# --- secrets and signing ------------------------------------------------------------------------
def derive_secret(master: str, owner: str) -> str:
    """The signing secret of API key ``owner``: ``whsec_`` + base64(HMAC-SHA256(master, context + owner))."""
    key = hmac.new(master.encode(), _SECRET_CONTEXT + owner.encode(), hashlib.sha256).digest()
    return SECRET_PREFIX + base64.b64encode(key).decode()


def signed_headers(secret: str, message_id: str, body: str, when: datetime) -> dict[str, str]:
    """The Standard Webhooks headers for ``body`` sent at ``when`` (seconds resolution, as signed)."""
    seconds = math.floor(when.timestamp())
    at = datetime.fromtimestamp(seconds, UTC)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(seconds),
        "webhook-signature": Webhook(secret).sign(message_id, at, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def encode_body(payload: Mapping[str, Any]) -> str:
    """The exact body that is signed and sent."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


# --- payloads -----------------------------------------------------------------------------------
def message(kind: str, record: JobRecord | BookRecord, event: str, now: float) -> dict[str, Any]:
    """The delivery task's kwargs for ``event`` of ``record``: a fresh message id and the payload
    ``{"type": "job.completed", "timestamp": ISO-8601, "data": <the record's view>}``."""
    from jobs.views import book_data, job_data  # here: the stores import this module, views import the stores

    if kind == "job":
        data = job_data(record)  # type: ignore[arg-type]
    else:
        data = book_data(record)  # type: ignore[arg-type]
    return {
        "kind": kind,
        "record_id": record.id,
        "event": event,
        "message_id": f"msg_{uuid.uuid4().hex}",
        "payload": {"type": f"{kind}.{event}", "timestamp": iso(now), "data": data},
    }


# --- delivery state in the record's hash --------------------------------------------------------
# KEYS: record. ARGV: event, message id, "1" = only when no message of this event was begun, state JSON.
_BEGIN = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local f = 'wh:' .. ARGV[1]
if ARGV[3] == '1' then
  local cur = redis.call('HGET', KEYS[1], f .. ':id')
  if cur and cur ~= '' then return 0 end
end
redis.call('HSET', KEYS[1], f .. ':id', ARGV[2], f .. ':n', 0, f, ARGV[4])
return 1
"""
# KEYS: record. ARGV: event, message id, attempts so far, state JSON. Only for the event's current message.
_ATTEMPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local f = 'wh:' .. ARGV[1]
if redis.call('HGET', KEYS[1], f .. ':id') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], f .. ':n', ARGV[3], f, ARGV[4])
return 1
"""


def config_fields(url: str, events: Sequence[str]) -> dict[str, str]:
    """The hash field a record is created with when it has a webhook."""
    return {"webhook": json.dumps({"url": url, "events": list(events)})}


def reset_fields() -> dict[str, str]:
    """Fields that forget the ``started`` and ``completed`` messages (a book queued again runs again)."""
    return {f"wh:{event}:id": "" for event in ("started", "completed")}


def begin(r: redis.Redis, key: str, event: str, message_id: str, *, once: bool) -> bool:
    """Record ``message_id`` as the event's message being delivered (attempts 0). With ``once``, only when
    no message of the event was begun; False then, and when the record is gone."""
    state = json.dumps({"state": "pending"})
    return bool(r.register_script(_BEGIN)(keys=[key], args=[event, message_id, "1" if once else "0", state]))


def record_attempt(r: redis.Redis, key: str, event: str, message_id: str, attempts: int, state: dict[str, Any]) -> bool:
    """Store the outcome of attempt ``attempts`` of ``message_id`` (False: the record is gone, or a newer
    message of the event replaced it)."""
    script = r.register_script(_ATTEMPT)
    return bool(script(keys=[key], args=[event, message_id, attempts, json.dumps(state)]))


def throttle(r: redis.Redis, key: str, interval_s: float) -> bool:
    """True at most once per ``interval_s`` for ``key``, across every worker process."""
    return bool(r.set(key, "1", px=max(1, int(interval_s * 1000)), nx=True))


def parse_state(h: Mapping[str, str]) -> dict[str, Any] | None:
    """The public webhook state of a record's hash: ``{url, events, deliveries: [...]}``, or None."""
    config = loads(h.get("webhook"))
    if not config:
        return None
    deliveries = []
    for event in EVENTS:
        message_id = h.get(f"wh:{event}:id")
        if not message_id:
            continue
        state = loads(h.get(f"wh:{event}")) or {}
        deliveries.append(
            {
                "event": event,
                "message_id": message_id,
                "state": state.get("state", "pending"),
                "attempts": int(h.get(f"wh:{event}:n") or 0),
                "status_code": state.get("status_code"),
                "last_error": state.get("last_error"),
                "last_attempt_at": state.get("last_attempt_at"),
                "delivered_at": state.get("delivered_at"),
                "next_attempt_at": state.get("next_attempt_at"),
            }
        )
    return {"url": config["url"], "events": list(config["events"]), "deliveries": deliveries}


def subscribed(state: Mapping[str, Any] | None, event: str) -> bool:
    return state is not None and event in state["events"]


def begun(state: Mapping[str, Any] | None, event: str) -> bool:
    return state is not None and any(d["event"] == event for d in state["deliveries"])


class WebhookStore(Protocol):
    """What :func:`fire` needs of a record store (the job and book stores both have it)."""

    def webhook_begin(self, record_id: str, event: str, message_id: str, *, once: bool) -> bool: ...


Send = Callable[[dict[str, Any]], None]  # sends the delivery task with these kwargs


def fire(store: WebhookStore, kind: str, record: JobRecord | BookRecord, event: str, send: Send, now: float) -> bool:
    """Send ``event`` of ``record`` when its webhook wants it; ``started`` and ``completed`` at most once
    (whoever begins it first sends it: the worker or the API). True when a message was sent."""
    if not subscribed(record.webhook, event):
        return False
    kwargs = message(kind, record, event, now)
    if not store.webhook_begin(record.id, event, kwargs["message_id"], once=event != "progress"):
        return False
    send(kwargs)
    return True


def completed_due(record: JobRecord | BookRecord) -> bool:
    """A finished record whose webhook wants ``completed`` and has not been sent it yet."""
    # (fire() decides atomically whether it is sent; this only saves a Redis call when it cannot be)
    return (
        record.status in TERMINAL_STATES
        and subscribed(record.webhook, "completed")
        and not begun(record.webhook, "completed")
    )


def retry_delay(attempts: int, base_s: float) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: base, 3 base, 9 base, ..."""
    return float(base_s * RETRY_FACTOR ** max(attempts - 1, 0))


def verdict(status_code: int) -> str:
    """``delivered`` (2xx), ``retry`` (408, 429, 5xx) or ``failed`` (redirects and other 4xx: not retried)."""
    if 200 <= status_code < 300:
        return "delivered"
    if status_code in (408, 429) or status_code >= 500:
        return "retry"
    return "failed"
