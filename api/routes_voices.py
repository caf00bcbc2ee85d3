"""/v1/voices: stored reference voices (encoded once by a worker) and the operator's read-only voices."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, url_for

from api import voices_service
from api.auth import authenticate, current_owner
from api.services import services

bp = Blueprint("voices", __name__, url_prefix="/v1/voices")
bp.before_request(authenticate)


@bp.post("")
def create_voice() -> tuple[Response, int, dict[str, str]]:
    record = voices_service.create(current_owner())
    return jsonify(voices_service.view(record)), 202, {"Location": url_for("voices.get_voice", voice_id=record.id)}


@bp.get("")
def list_voices() -> Response:
    records = services().voices.list_voices(current_owner())
    return jsonify({"voices": [voices_service.view(r) for r in records]})


@bp.get("/<voice_id>")
def get_voice(voice_id: str) -> Response:
    return jsonify(voices_service.view(voices_service.get_owned(current_owner(), voice_id)))


@bp.delete("/<voice_id>")
def delete_voice(voice_id: str) -> tuple[str, int]:
    voices_service.delete(current_owner(), voice_id)
    return "", 204
