"""Bearer API keys: each key has a name, and that name owns the jobs and voices made with it.
Once the key is known, its per-minute request limit is checked (:mod:`api.quotas`).

With ``ECHO_API_KEYS`` unset, auth is off and everything belongs to the owner ``local`` (local use only).

Keys may be stored hashed (``name:sha256:<hex>``, see ``python -m api hash-key``): the API then never
holds the token itself. Every key, plain or hashed, is compared as a SHA-256 digest: the presented token
is hashed once per request and compared with every stored digest by ``hmac.compare_digest``, with no
early exit, so neither the time taken nor the order of the keys tells which key (or how much of one)
matched.
"""

from __future__ import annotations

import hashlib
import hmac
import threading

from flask import g, request

from api.errors import APIError
from api.quotas import check_rate
from api.services import services
from jobs.errors import ErrorCode

LOCAL_OWNER = "local"


def authenticate() -> None:
    """A ``before_request`` hook: sets ``g.owner`` or refuses with 401 (or 429 past the key's rate)."""
    s = services()
    g.owner = _owner(s.settings.api_keys)
    check_rate(s.rate_limiter, g.owner, s.settings.rate_limit_per_min)


HASHED_PREFIX = "sha256:"
_digests_lock = threading.Lock()
_digests_of: tuple[dict[str, str], list[tuple[bytes, str]]] | None = None  # (the settings' keys, their digests)


def key_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _digests(keys: dict[str, str]) -> list[tuple[bytes, str]]:
    """``[(SHA-256 digest, owner)]`` of the configured keys, computed once per settings object."""
    global _digests_of
    with _digests_lock:
        if _digests_of is None or _digests_of[0] is not keys:
            table = [
                (bytes.fromhex(known.removeprefix(HASHED_PREFIX)) if known.startswith(HASHED_PREFIX)
                 else key_digest(known), name)
                for known, name in keys.items()
            ]  # fmt: skip
            _digests_of = (keys, table)
        return _digests_of[1]


def _owner(keys: dict[str, str] | None) -> str:
    if keys is None:
        return LOCAL_OWNER
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    presented = key_digest(token.strip())
    owner = None
    for digest, name in _digests(keys):  # compare against every key: no early exit on a match
        if hmac.compare_digest(digest, presented):
            owner = name
    if scheme.lower() != "bearer" or owner is None:
        raise APIError(
            401,
            ErrorCode.UNAUTHORIZED,
            "send Authorization: Bearer <API key>",
            headers={"WWW-Authenticate": 'Bearer realm="echo-tts"'},
        )
    return owner


def current_owner() -> str:
    return str(g.owner)
