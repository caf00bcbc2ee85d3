"""The Echo-TTS job service's HTTP API (Flask). Builds on ``jobs/``; never imports torch, ``echo_tts`` or ``worker``.

``create_app(test_config=None)`` builds an app; ``api.wsgi:app`` is the one built at import, for gunicorn.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import redis
from flask import Flask

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app. ``test_config`` may hold ``SETTINGS`` (an ApiSettings), ``ENV`` (a mapping read
    instead of os.environ), ``STORE``/``VOICES``/``BOOKS``/``STORAGE``/``QUEUE`` (clients to use), plus
    Flask config keys.
    A missing or malformed setting raises ``api.settings.SettingsError`` naming it."""
    from api import errors, routes_books, routes_jobs, routes_meta, routes_metrics, routes_openai, routes_voices
    from api.queue import CeleryQueue
    from api.quotas import RateLimiter
    from api.request_limits import check_headers
    from api.routes_events import bp as events_bp
    from api.routes_web import bp as web_bp
    from api.routes_webhooks import bp as webhooks_bp
    from api.services import Services
    from api.settings import ApiSettings
    from api.voices_service import register_operator_voices
    from jobs.bookstore import BookStore
    from jobs.company import WaitingRoom
    from jobs.jobstore import JobStore
    from jobs.request_counts import RequestCounts
    from jobs.storage import StorageError, open_storage
    from jobs.voicestore import VoiceStore

    config = dict(test_config or {})
    settings = config.pop("SETTINGS", None) or ApiSettings.from_env(config.pop("ENV", None))
    client = redis.Redis.from_url(
        settings.redis_url, decode_responses=True, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30
    )
    store = config.pop("STORE", None) or JobStore(client, job_ttl_s=settings.job_ttl_s)
    s = Services(
        settings=settings,
        store=store,
        waiting=WaitingRoom(store),
        voices=config.pop("VOICES", None) or VoiceStore(client),
        books=config.pop("BOOKS", None) or BookStore(client, ttl_s=settings.book_ttl_s),
        request_counts=RequestCounts(client),
        storage=config.pop("STORAGE", None) or open_storage(settings.storage),
        queue=config.pop("QUEUE", None) or CeleryQueue(settings.redis_url),
        rate_limiter=RateLimiter(client),
    )
    app = Flask(__name__, static_folder=None)
    app.config.from_mapping(
        MAX_CONTENT_LENGTH=settings.max_upload_bytes,
        MAX_FORM_MEMORY_SIZE=max(500_000, settings.max_text_chars * 4 + 65_536),
        JSON_SORT_KEYS=False,
    )
    app.config.update(config)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["echo"] = s
    errors.register_error_handlers(app)
    app.before_request(check_headers)  # before any blueprint's (authentication included)
    for bp in (routes_jobs.bp, routes_books.bp, routes_voices.bp, routes_meta.bp, routes_openai.bp, routes_metrics.bp):
        app.register_blueprint(bp)
    app.register_blueprint(events_bp)  # live progress (server-sent events)
    app.register_blueprint(webhooks_bp)  # GET /v1/webhooks/secret
    app.register_blueprint(web_bp)  # the web page at / (docs/web.md)
    # like the worker, the API makes the bucket when missing: the stack may start the API before any
    # worker has run, and uploads (voices, one-shot references, books) go straight to storage. Storage
    # that is down at start is not fatal (readyz says so) unless operator voices must be stored now.
    try:
        s.storage.ensure_bucket()
    except StorageError as exc:
        if settings.voices_dir is not None:
            raise
        log.warning("storage unavailable at start (the bucket could not be checked or made): %s", exc)
    if settings.voices_dir is not None:
        register_operator_voices(s, settings.voices_dir)
    return app
