"""Unauthenticated endpoints: /healthz, /readyz, /v1/openapi.json."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from api.errors import envelope
from api.health import readiness
from api.openapi import openapi_document
from api.services import services
from jobs.errors import ErrorCode

bp = Blueprint("meta", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response | tuple[Response, int]:
    failing, checks = readiness(services())
    if failing:
        return envelope(503, ErrorCode.NOT_READY, f"not ready: {', '.join(failing)}", {"checks": checks})
    return jsonify({"status": "ready", "checks": checks})


@bp.get("/v1/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document())
