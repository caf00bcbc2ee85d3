"""/v1/jobs: submit, poll, list, cancel, download."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from werkzeug.wrappers import Response as RawResponse

from api import jobs_service
from api.auth import authenticate, current_owner

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")
bp.before_request(authenticate)


@bp.post("")
def create_job() -> tuple[Response, int, dict[str, str]]:
    body, upload = jobs_service.parse_submission()
    record, created = jobs_service.submit(current_owner(), body, upload, jobs_service.idempotency_key())
    view = jobs_service.view(record)
    headers = {"Location": view["links"]["self"]}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return jsonify(view), 202, headers


@bp.get("")
def list_jobs() -> Response:
    return jsonify(jobs_service.list_owned(current_owner()))


@bp.get("/<job_id>")
def get_job(job_id: str) -> Response:
    return jsonify(jobs_service.view(jobs_service.get_owned(current_owner(), job_id)))


@bp.delete("/<job_id>")
def cancel_job(job_id: str) -> tuple[Response, int]:
    record = jobs_service.cancel(current_owner(), job_id)
    return jsonify(jobs_service.view(record)), 202 if record.status.value == "running" else 200


@bp.get("/<job_id>/audio")
def audio(job_id: str) -> RawResponse:
    return jobs_service.audio_response(current_owner(), job_id)
