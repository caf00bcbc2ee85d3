"""/v1/webhooks: the caller's signing secret (Standard Webhooks ``whsec_…``)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from api import webhooks_service
from api.auth import authenticate, current_owner

bp = Blueprint("webhooks", __name__, url_prefix="/v1/webhooks")
bp.before_request(authenticate)


@bp.get("/secret")
def secret() -> Response:
    return jsonify(webhooks_service.secret_of(current_owner()))
