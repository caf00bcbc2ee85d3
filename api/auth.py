"""Bearer API keys: each key has a name, and that name owns the jobs and voices made with it.

With ``ECHO_API_KEYS`` unset, auth is off and everything belongs to the owner ``local`` (local use only).
"""

from __future__ import annotations

import hmac

from flask import g, request

from api.errors import APIError
from api.services import services
from jobs.errors import ErrorCode

LOCAL_OWNER = "local"


def authenticate() -> None:
    """A ``before_request`` hook: sets ``g.owner`` or refuses with 401."""
    keys = services().settings.api_keys
    if keys is None:
        g.owner = LOCAL_OWNER
        return
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
    g.owner = owner


def current_owner() -> str:
    return str(g.owner)
