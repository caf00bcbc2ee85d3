"""``/v1/openapi.json``, generated from the pydantic models in :mod:`api.schemas` (the ones that validate)."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api import book_schemas, schemas, webhook_schemas

REF = "#/components/schemas/{model}"
_MODELS = (
    schemas.JobCreate,
    schemas.Job,
    schemas.JobList,
    schemas.Voice,
    schemas.VoiceList,
    schemas.ErrorEnvelope,
    schemas.Readiness,
    schemas.Health,
    schemas.SpeechCreate,
    book_schemas.BookCreate,
    book_schemas.BookOptions,
    book_schemas.Book,
    book_schemas.BookList,
    webhook_schemas.WebhookSecret,
)
_ERRORS = {
    "400": "The body is not a JSON object",
    "401": "Missing or unknown API key",
    "404": "Unknown id, or another key's",
    "409": "The job was canceled, or the object's state does not allow this",
    "410": "The result expired from storage",
    "413": "A limit was exceeded (the message names the setting)",
    "414": "The request line (path and query) is longer than gunicorn's limit_request_line (4094 bytes)",
    "415": "Unsupported content type (the message says which to send)",
    "422": "Invalid field (named)",
    "431": "A header field or all header fields together are too large (the message names the limit)",
    "429": "A per-key quota: requests per minute, or jobs/books queued (the message names the setting; Retry-After)",
    "503": "Not ready, or Redis, storage or the queue is unavailable (details say which)",
    "504": "The job did not finish within ECHO_SPEECH_TIMEOUT_S (details.job_id)",
}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_FORM_EVENTS = {"type": "string", "description": "Webhook events, comma-separated (started,completed) or a JSON array"}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": REF.format(model=name)}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _op(
    summary: str, ok: tuple[str, str, str | None], *, errors: tuple[str, ...] = ("401", "404"), **extra: Any
) -> dict[str, Any]:
    status, description, model = ok
    responses = {status: _json(model, description) if model else {"description": description}}
    responses |= {code: _json("ErrorEnvelope", _ERRORS[code]) for code in (*errors, "414", "431")}  # any route
    if "401" in errors:  # an authenticated route: the key's quotas apply (api/quotas.py)
        responses["429"] = _json("ErrorEnvelope", _ERRORS["429"])
    return {"summary": summary, "responses": responses, **extra}


def _form(model: type[BaseModel], *, required: tuple[str, ...] = (), **fields: Any) -> dict[str, Any]:
    """A multipart body: the model's fields as form fields, ``fields`` added or replacing some. Not an
    ``allOf`` with the model: it forbids other properties, so no body could hold both (a file, say)."""
    schema = model.model_json_schema(ref_template=REF)
    return {
        "type": "object",
        "required": [*schema.get("required", []), *required],
        "properties": schema["properties"] | fields,
    }


def _job_body() -> dict[str, Any]:
    multipart = _form(
        schemas.JobCreate,
        speaker_audio={"type": "string", "format": "binary", "description": "One-shot reference audio"},
        overrides={"type": "string", "description": "JSON object"},
        metadata={"type": "string", "description": "JSON object"},
        webhook_events=_FORM_EVENTS,
    )
    return {
        "required": True,
        "content": {"application/json": {"schema": _ref("JobCreate")}, "multipart/form-data": {"schema": multipart}},
    }


def _voice_body() -> dict[str, Any]:
    schema = {
        "type": "object",
        "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary"}, "name": {"type": "string", "maxLength": 128}},
    }
    return {"required": True, "content": {"multipart/form-data": {"schema": schema}}}


def _book_body() -> dict[str, Any]:
    multipart = _form(
        book_schemas.BookOptions,
        required=("file",),
        file={"type": "string", "format": "binary", "description": "EPUB, Markdown or plain text"},
        chapters={"type": "string", "description": "Chapter indices to render, e.g. 0,2,5"},
        overrides={"type": "string", "description": "JSON object"},
        webhook_events=_FORM_EVENTS,
    )
    return {
        "required": True,
        "content": {"application/json": {"schema": _ref("BookCreate")}, "multipart/form-data": {"schema": multipart}},
    }


def _book_paths(idem: dict[str, Any]) -> dict[str, Any]:
    chapter = {"name": "chapter", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}}
    before = {"name": "before", "in": "query", "schema": {"type": "number"}, "description": "a created_ts"}
    limit = {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}}
    return {
        "/v1/audiobooks": {
            "post": _op(
                "Submit a book (EPUB, Markdown, text, or JSON chapters) for chapter files and an M4B",
                ("202", "Queued (Location: the book)", "Book"),
                errors=("400", "401", "409", "413", "415", "422"),
                parameters=[idem],
                requestBody=_book_body(),
            ),
            "get": _op(
                "Own books, newest first",
                ("200", "A page of books", "BookList"),
                errors=("401", "422"),
                parameters=[limit, before],
            ),
        },
        "/v1/audiobooks/{id}": {
            "get": _op("Progress per chapter, ETA, files (fresh URLs)", ("200", "The book", "Book"), parameters=[_ID]),
            "delete": _op(
                "Cancel (idempotent; rendered segments stay cached)", ("200", "The book", "Book"), parameters=[_ID]
            ),
        },
        "/v1/audiobooks/{id}/retry": {
            "post": _op(
                "Re-queue a failed or canceled book: only segments not done render",
                ("202", "Queued again", "Book"),
                errors=("401", "404", "409"),
                parameters=[_ID],
            )
        },
        "/v1/audiobooks/{id}/audio": {
            "get": _op(
                "Download the M4B",
                ("302", "Redirect to a presigned URL (or the bytes)", None),
                errors=("401", "404", "409"),
                parameters=[_ID],
            )
        },
        "/v1/audiobooks/{id}/chapters/{chapter}/audio": {
            "get": _op(
                "Download one chapter file",
                ("302", "Redirect to a presigned URL (or the bytes)", None),
                errors=("401", "404", "409"),
                parameters=[_ID, chapter],
            )
        },
    }


def _speech_op() -> dict[str, Any]:
    """OpenAI-compatible speech: waits for its job, answers the audio bytes."""
    audio = {"schema": {"type": "string", "format": "binary"}}
    op = _op(
        "OpenAI-compatible synchronous speech (a job on the queue, waited for)",
        ("200", "The audio (X-Job-Id, X-Seed, X-Audio-Sample-Rate headers)", None),
        errors=("400", "401", "404", "409", "413", "415", "422", "504"),
        requestBody={"required": True, "content": {"application/json": {"schema": _ref("SpeechCreate")}}},
    )
    op["responses"]["200"]["content"] = {
        t: audio for t in ("audio/mpeg", "audio/ogg", "audio/mp4", "audio/flac", "audio/wav", "audio/L16")
    }
    return op


def _events_op(what: str) -> dict[str, Any]:
    """Live progress as server-sent events (api.routes_events)."""
    last_id = {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}}
    op = _op(
        f"Live progress of the {what} (server-sent events; resumable with Last-Event-ID)",
        ("200", f"event: progress (data: the {what} JSON) on each change, then event: done; ids resume", None),
        errors=("401", "404", "503"),
        parameters=[_ID, last_id],
    )
    op["responses"]["200"]["content"] = {"text/event-stream": {"schema": {"type": "string"}}}
    return op


def _paths() -> dict[str, Any]:
    idem = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "maxLength": 255},
    }
    listing = [
        {"name": "status", "in": "query", "schema": {"type": "string"}, "description": "comma-separated"},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
        {"name": "cursor", "in": "query", "schema": {"type": "string"}},
    ]
    return {
        "/v1/jobs": {
            "post": _op(
                "Submit a synthesis job",
                ("202", "Queued (Location: the job)", "Job"),
                errors=("400", "401", "409", "413", "415", "422"),
                parameters=[idem],
                requestBody=_job_body(),
            ),
            "get": _op(
                "List own jobs, newest first",
                ("200", "A page of jobs", "JobList"),
                errors=("401", "422"),
                parameters=listing,
            ),
        },
        "/v1/jobs/{id}": {
            "get": _op(
                "Job status, progress, result (fresh URL), error, timings", ("200", "The job", "Job"), parameters=[_ID]
            ),
            "delete": _op(
                "Cancel (idempotent)", ("200", "Canceled or finished (202: cancel requested)", "Job"), parameters=[_ID]
            ),
        },
        "/v1/jobs/{id}/audio": {
            "get": _op(
                "Download (409 until the job succeeded; 410 once the audio expired)",
                ("302", "Redirect to a presigned URL (or the bytes)", None),
                errors=("401", "404", "409", "410"),
                parameters=[_ID],
            )
        },
        "/v1/voices": {
            "post": _op(
                "Upload a reference voice",
                ("202", "Pending encode", "Voice"),
                errors=("401", "413", "415", "422"),
                requestBody=_voice_body(),
            ),
            "get": _op("Own voices and operator voices", ("200", "Voices", "VoiceList"), errors=("401",)),
        },
        "/v1/voices/{id}": {
            "get": _op("A voice", ("200", "The voice", "Voice"), parameters=[_ID]),
            "delete": _op("Delete own voice (operator voices: 403)", ("204", "Deleted", None), parameters=[_ID]),
        },
        **_book_paths(idem),
        "/v1/jobs/{id}/events": {"get": _events_op("job")},
        "/v1/audiobooks/{id}/events": {"get": _events_op("book")},
        "/v1/audio/speech": {"post": _speech_op()},
        "/v1/webhooks/secret": {
            "get": _op(
                "This key's webhook signing secret (Standard Webhooks whsec_...; 409 while webhooks are off)",
                ("200", "The secret", "WebhookSecret"),
                errors=("401", "409"),
            )
        },
        "/healthz": {"get": _op("Liveness", ("200", "Up", "Health"), errors=(), security=[])},
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (text format 0.0.4); no key: firewall it",
                "security": [],
                "responses": {
                    "200": {"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}},
                    "431": _json("ErrorEnvelope", _ERRORS["431"]),
                },
            }
        },
        "/readyz": {
            "get": _op(
                "Readiness: Redis, storage, a live worker",
                ("200", "Ready", "Readiness"),
                errors=("503",),
                security=[],
            )
        },
        "/v1/openapi.json": {"get": _op("This document", ("200", "OpenAPI 3.1", None), errors=(), security=[])},
    }


@cache
def openapi_document() -> dict[str, Any]:
    _, defs = models_json_schema([(m, "validation") for m in _MODELS], ref_template=REF)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Echo-TTS job service", "version": "1"},
        "paths": _paths(),
        "components": {"schemas": defs["$defs"], "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
    }
