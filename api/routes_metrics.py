"""``GET /metrics`` (Prometheus text, no key: firewall it like /readyz), the request counting hooks and
the per-request log context.

The hooks are app-wide (``before_app_request``/``after_app_request``), so registering this blueprint
is all it takes: every answer, errors included, is counted by method, URL rule and status, and every
log line written while a request names a job, book or voice (``/v1/jobs/<job_id>``…) carries its id.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, current_app, g, request
from flask.blueprints import BlueprintSetupState
from prometheus_client.registry import CollectorRegistry

from api import metrics
from jobs import logs

bp = Blueprint("metrics", __name__)
_EXTENSION = "echo_metrics"
_REGISTRY = "echo_metrics_registry"


@bp.record_once
def _install(state: BlueprintSetupState) -> None:
    app = state.app
    counter = metrics.RequestCounter(app.extensions["echo"].request_counts)
    app.extensions[_EXTENSION] = counter
    app.extensions[_REGISTRY] = metrics.registry(app.extensions["echo"], counter)


def _counter() -> metrics.RequestCounter | None:
    counter: metrics.RequestCounter | None = current_app.extensions.get(_EXTENSION)
    return counter


@bp.before_app_request
def _start_clock() -> None:
    g.metrics_started = time.perf_counter()


@bp.after_app_request
def _count(response: Response) -> Response:
    counter, started = _counter(), g.get("metrics_started")
    if counter is not None and started is not None:
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        counter.record(request.method, route, response.status_code, time.perf_counter() - started)
    return response


@bp.app_url_value_preprocessor
def _log_ids(_: str | None, view_args: dict[str, Any] | None) -> None:
    """Every request replaces its thread's log context (first thing, before any refusal), so no line
    carries another request's ids. It is not cleared at teardown: gunicorn writes the access line after
    that, and ``python -m api`` clears it in gunicorn's ``post_request`` hook, after the access line."""
    logs.set_context(**logs.ids_from(view_args))


@bp.get("/metrics")
def prometheus() -> Response:
    registry: CollectorRegistry = current_app.extensions[_REGISTRY]
    return Response(metrics.render(registry), mimetype=None, content_type=metrics.CONTENT_TYPE)
