"""Thin Celery tasks: deserialize, call the runner with this process's engine, return a small dict.

Transient storage and Redis errors are retried with exponential backoff (Celery autoretry);
when the retries run out the job fails with ``storage_unavailable``. Bad input fails at once
inside the runner. Audio never travels through the broker.

A synthesis message carries Celery ``expires`` (the job's queue deadline, set by the API). Celery 5.7
checks it when the message arrives and again before running it; an expired message is acked and
dropped without running, and ``task_revoked`` fires with ``expired=True``: :func:`on_task_revoked`
then moves the record to ``expired`` (see :func:`worker.runner.expire_delivery`).
"""

from __future__ import annotations

from typing import Any

import redis
from celery import Celery, Task, signals

from jobs.contract import ENCODE_VOICE, QUEUE_INTERACTIVE, SYNTHESIZE, ErrorCode
from jobs.storage import TransientStorageError
from worker.settings import WorkerSettings

from .book_tasks import register_book_tasks
from .engine import get_engine
from .job_output import fail_unexpected
from .runner import expire_delivery, run_synthesis
from .voices import encode_voice
from .webhook_tasks import notify, register_webhook_tasks

TRANSIENT = (TransientStorageError, redis.ConnectionError, redis.TimeoutError)


def on_task_revoked(sender: Any = None, request: Any = None, expired: bool = False, **_: Any) -> None:
    """``task_revoked`` receiver: a synthesis message dropped because its ``expires`` passed."""
    if not expired or getattr(sender, "name", None) != SYNTHESIZE or request is None:
        return
    job_id = str((getattr(request, "kwargs", None) or {}).get("job_id") or getattr(request, "id", "") or "")
    if not job_id:
        return
    queue = (getattr(request, "delivery_info", None) or {}).get("routing_key") or QUEUE_INTERACTIVE
    retries = int(getattr(request, "retries", 0) or 0)  # kept: the delivery guard and max_retries count on

    def requeue(kwargs: dict[str, Any]) -> None:  # a fresh task id: Celery now counts the job id as revoked
        sender.app.send_task(SYNTHESIZE, kwargs=kwargs, queue=queue, retries=retries)

    engine = get_engine()
    expire_delivery(engine, job_id, requeue)
    notify(engine, "job", job_id)  # completed, when it expired


def register_tasks(app: Celery, settings: WorkerSettings) -> None:
    signals.task_revoked.connect(on_task_revoked, weak=False, dispatch_uid="echo.synthesis-expired")
    retry = {
        "autoretry_for": TRANSIENT,
        "retry_backoff": 2,
        "retry_backoff_max": 60,
        "retry_jitter": True,
        "max_retries": settings.storage_retries,
        "acks_late": True,
        "reject_on_worker_lost": True,
    }

    @app.task(name=SYNTHESIZE, bind=True, **retry)
    def synthesize(self: Task, **payload: Any) -> dict[str, Any]:
        engine = get_engine()
        job_id = str(payload.get("job_id") or "")
        try:
            return run_synthesis(engine, payload, retries=self.request.retries)
        except TRANSIENT as exc:
            if self.request.retries >= settings.storage_retries:
                engine.jobs.fail(job_id, ErrorCode.STORAGE_UNAVAILABLE, f"storage kept failing: {exc}")
            raise
        except Exception as exc:
            fail_unexpected(engine, job_id, exc)
            raise
        finally:
            notify(engine, "job", job_id)  # completed, whichever way the job ended (once: jobs.webhooks.fire)

    register_book_tasks(app, settings, retry, TRANSIENT)
    register_webhook_tasks(app, settings)

    @app.task(name=ENCODE_VOICE, bind=True, **retry)
    def encode_voice_task(self: Task, voice_id: str, reference_key: str | None = None) -> dict[str, Any]:
        engine = get_engine()
        try:
            return encode_voice(engine, voice_id, reference_key)
        except TRANSIENT:
            if self.request.retries >= settings.storage_retries:
                engine.voices.mark_failed(voice_id, ErrorCode.STORAGE_UNAVAILABLE, "storage kept failing")
            raise
