"""``GET /metrics`` (Prometheus text, no key: firewall it like /readyz) and the request counting hooks.

The hooks are app-wide (``before_app_request``/``after_app_request``), so registering this blueprint
is all it takes: every answer, errors included, is counted by method, URL rule and status.
"""

from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, g, request
from flask.blueprints import BlueprintSetupState

from api import metrics
from api.services import services

bp = Blueprint("metrics", __name__)
_EXTENSION = "echo_metrics"


@bp.record_once
def _install(state: BlueprintSetupState) -> None:
    app = state.app
    app.extensions[_EXTENSION] = metrics.RequestCounter(app.extensions["echo"].request_counts)


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


@bp.get("/metrics")
def prometheus() -> Response:
    return Response(metrics.render(services(), _counter()), mimetype=None, content_type=metrics.CONTENT_TYPE)
