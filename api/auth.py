"""Bearer API keys: each key has a name, and that name owns the jobs and voices made with it.
Once the key is known, its per-minute request limit is checked (:mod:`api.quotas`).

With ``ECHO_API_KEYS`` unset, auth is off and everything belongs to the owner ``local`` (local use only).
"""

from __future__ import annotations

import hmac

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


def _owner(keys: dict[str, str] | None) -> str:
    if keys is None:
        return LOCAL_OWNER
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    owner = None
    for known, name in keys.items():  # compare against every key: no early exit on a match
        if hmac.compare_digest(known.encode(), token.strip().encode()):
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
