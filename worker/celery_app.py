"""The Celery application of the GPU workers (Celery lives here only).

``create_celery(settings)`` builds a configured app, registers the tasks and wires the
process lifecycle: the engine (model) is loaded in ``worker_process_init`` (Celery's solo pool
fires it too; prefork fires it in each child after the fork), the heartbeat starts once the
worker consumes, and stops at shutdown. Nothing happens at import.
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import UTC, datetime
from functools import partial
from typing import Any

from celery import Celery, signals
from kombu.entity import Exchange, Queue

from jobs import logs
from jobs.company import claimed_job
from jobs.contract import (
    ALL_QUEUES,
    BOOK_PLAN,
    ENCODE_VOICE,
    QUEUE_ASSEMBLY,
    QUEUE_INTERACTIVE,
    QUEUE_WEBHOOKS,
    SYNTHESIZE,
    TERMINAL_STATES,
    WEBHOOK_DELIVER,
)
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)


def celery_config(settings: WorkerSettings) -> dict[str, Any]:
    """Settings for long GPU tasks (DESIGN §2). Clients that send tasks should use the same
    ``visibility_timeout``: with a shared broker, the shortest value wins."""
    # A task whose worker died (SIGKILL, OOM) is re-queued once it has been un-acked for
    # visibility_timeout; kombu sweeps for those every interval * throttle seconds.
    transport = {
        "visibility_timeout": settings.visibility_timeout_s,
        "unacked_restore_interval": settings.restore_interval_s,
        "unacked_restore_throttle": 1,
    }
    return {
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,  # a task killed mid-render is re-delivered, never lost
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,  # exactly one reserved task per process
        "task_ignore_result": True,  # our own job records are the source of truth
        "task_track_started": False,
        "task_default_queue": QUEUE_INTERACTIVE,
        "task_queues": tuple(Queue(q, Exchange(q, type="direct"), routing_key=q) for q in ALL_QUEUES),
        "task_routes": {
            SYNTHESIZE: {"queue": QUEUE_INTERACTIVE},
            ENCODE_VOICE: {"queue": QUEUE_INTERACTIVE},
            WEBHOOK_DELIVER: {"queue": QUEUE_WEBHOOKS},
        },
        "task_soft_time_limit": settings.soft_time_limit_s,  # enforced by Celery on prefork only; the
        "task_time_limit": settings.time_limit_s,  # render loop enforces the soft limit on solo itself
        "broker_transport_options": transport,
        "result_backend_transport_options": transport,
        "visibility_timeout": settings.visibility_timeout_s,
        "broker_connection_retry_on_startup": True,
        # A task that meets a Redis outage retries (autoretry), which publishes a new message: Celery's
        # default policy gives up after ~0.6 s, the task is then rejected on a dead connection and its
        # message stays un-acked until the visibility timeout (an hour), the job left `running`.
        # Keep trying for about a minute so a restarted Redis gets the retry.
        "task_publish_retry_policy": {"max_retries": 30, "interval_start": 0, "interval_step": 1, "interval_max": 2},
        "worker_proc_alive_timeout": 900.0,  # model loading in worker_process_init takes minutes, not 4 s
        "worker_soft_shutdown_timeout": 30.0,  # on SIGTERM, requeue unfinished acks_late work after 30 s
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,  # our handler (jobs.logs) stays: see _connect_logging
    }


def create_celery(settings: WorkerSettings, *, main: str = "echo_tts_worker") -> Celery:
    """A configured app with the tasks registered and the lifecycle signals connected."""
    app = Celery(main, broker=settings.redis_url, set_as_current=True)
    app.conf.update(celery_config(settings))
    from .tasks import register_tasks  # imports echo_tts (torch) but touches no device

    register_tasks(app, settings)
    _connect_lifecycle(app, settings)
    _connect_logging(settings)
    return app


def _connect_lifecycle(app: Celery, settings: WorkerSettings) -> None:
    from .engine import get_engine, init_engine
    from .heartbeat import Heartbeat
    from .recovery import InFlight, Sweeper, send_unsent

    beats: list[Heartbeat] = []
    sweepers: list[Sweeper] = []
    inflight: list[InFlight] = []

    restore, resend = partial(_restore, app), partial(_resend, app)

    def load(**_: Any) -> None:
        try:
            init_engine(settings)
        except Exception:  # any failure to load is fatal: exit non-zero so the orchestrator restarts us
            log.critical("the engine failed to load; exiting", exc_info=True)
            logging.shutdown()
            sys.stderr.flush()
            os._exit(3)

    def ready(sender: Any = None, **_: Any) -> None:
        name = getattr(sender, "hostname", None) or f"worker-{os.getpid()}"
        engine = get_engine()
        engine.worker_name = name
        beat = Heartbeat(engine.jobs, name, engine.info)
        beat.start()
        beats.append(beat)
        inflight.append(InFlight(engine.jobs.r, name))
        engine.inflight, engine.resend = inflight[0], resend
        grace = settings.outbox_grace_s

        def outbox() -> None:
            send_unsent(engine.jobs, partial(_send_queued, app), grace_s=grace)
            send_unsent(engine.books, partial(_send_plan, app), grace_s=grace)

        sweeper = Sweeper(engine.jobs.r, restore, name, outbox=outbox)
        sweeper.start()  # at start too: a worker restarted after a crash re-queues what died with it
        sweepers.append(sweeper)

    def task_started(task_id: str = "", task: Any = None, kwargs: dict[str, Any] | None = None, **_: Any) -> None:
        tag = (getattr(task.request, "properties", None) or {}).get("delivery_tag") if task is not None else None
        if inflight and tag:
            inflight[0].started(str(tag), str(getattr(task, "name", "")), task_id, kwargs or {})

    def task_ended(task: Any = None, **_: Any) -> None:
        tag = (getattr(task.request, "properties", None) or {}).get("delivery_tag") if task is not None else None
        if inflight and tag:
            inflight[0].finished(str(tag))

    def shutdown(**_: Any) -> None:
        while sweepers:
            sweepers.pop().stop()
        while beats:
            beats.pop().stop()

    signals.worker_process_init.connect(load, weak=False)
    signals.worker_ready.connect(ready, weak=False)
    signals.worker_shutdown.connect(shutdown, weak=False)
    signals.task_prerun.connect(task_started, weak=False)
    signals.task_postrun.connect(task_ended, weak=False)


def _restore(app: Celery, delivery_tag: str) -> None:
    """Put one un-acked message back on its queue with kombu's own restore (one transaction); a job
    claimed into a batch (``claim:{id}``) has no message of its own: it is sent again."""
    job_id = claimed_job(delivery_tag)
    if job_id is not None:
        _resend(app, job_id)
        return
    with app.connection_for_write() as connection:
        connection.default_channel.qos.restore_by_tag(delivery_tag, leftmost=False)


def _resend(app: Celery, job_id: str) -> None:
    """Send a job's message again from its record (its claimer died, or handed it back)."""
    from .engine import get_engine

    record = get_engine().jobs.get(job_id)
    if record is not None and record.status not in TERMINAL_STATES:
        app.send_task(SYNTHESIZE, kwargs=record.request, queue=QUEUE_INTERACTIVE)


def _send_queued(app: Celery, record: Any) -> None:
    """Send a queued job's message as the API does (task id = job id; Celery drops it after the deadline)."""
    expires = datetime.fromtimestamp(record.deadline_ts, UTC) if record.deadline_ts is not None else None
    app.send_task(SYNTHESIZE, kwargs=record.request, queue=QUEUE_INTERACTIVE, task_id=record.id, expires=expires)


def _send_plan(app: Celery, record: Any) -> None:
    """Send a queued book's plan task as the API does."""
    app.send_task(BOOK_PLAN, kwargs={"book_id": record.id}, queue=QUEUE_ASSEMBLY)


def _connect_logging(settings: WorkerSettings) -> None:
    """Log lines as ``jobs.logs`` writes them (JSON by default), each carrying the id of the job, book or
    voice its task is about. A ``setup_logging`` receiver stops Celery from configuring logging itself
    (it would replace the root handler and redirect stdout into the log)."""

    def setup(loglevel: Any = None, **_: Any) -> None:
        logs.configure(settings.log_format, loglevel or settings.log_level)

    def bind(kwargs: dict[str, Any] | None = None, **_: Any) -> None:
        logs.set_context(**logs.ids_from(kwargs))

    def unbind(**_: Any) -> None:
        logs.clear()

    signals.setup_logging.connect(setup, weak=False, dispatch_uid="echo.logging")
    signals.task_prerun.connect(bind, weak=False, dispatch_uid="echo.log-context")
    signals.task_postrun.connect(unbind, weak=False, dispatch_uid="echo.log-context-end")
