"""/v1/audio/speech: OpenAI-compatible synchronous speech (a job on the queue, waited for; see api.speech)."""

from __future__ import annotations

from flask import Blueprint, Response

from api import speech
from api.auth import authenticate, current_owner
from api.schemas import SpeechCreate
from api.uploads import json_body

bp = Blueprint("openai", __name__, url_prefix="/v1/audio")
bp.before_request(authenticate)


@bp.post("/speech")
def create_speech() -> Response:
    return speech.speak(current_owner(), SpeechCreate.model_validate(json_body()))
