"""The book tasks: thin wrappers that give the :mod:`worker.books` steps this process's engine and a
``send`` over the app. Planning and assembly run on the CPU queue, segment groups on the bulk queue.

Transient storage and Redis errors retry with backoff; when the retries run out, or on any other
error, the book fails with a code and a message (its done segments stay in the cache, and
``POST /v1/audiobooks/{id}/retry`` carries on from there).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Celery, Task

from jobs.contract import BOOK_ASSEMBLE, BOOK_ASSEMBLE_CHAPTER, BOOK_PLAN, BOOK_RENDER_GROUP
from jobs.errors import ErrorCode, ServiceError

from .engine import Engine, get_engine
from .settings import WorkerSettings
from .webhook_tasks import notify, progress

log = logging.getLogger(__name__)


def _guarded(
    task: Task,
    settings: WorkerSettings,
    transient: tuple[type[Exception], ...],
    book_id: str,
    step: Callable[[Engine], dict[str, Any]],
) -> dict[str, Any]:
    engine = get_engine()
    try:
        return step(engine)
    except transient as exc:
        if task.request.retries >= settings.storage_retries:
            engine.books.fail(book_id, ErrorCode.STORAGE_UNAVAILABLE, f"storage or Redis kept failing: {exc}")
        raise
    except ServiceError as exc:
        engine.books.fail(book_id, exc.code, exc.message)
        return {"book_id": book_id, "status": "failed", "code": exc.code.value}
    except Exception as exc:
        log.exception("book %s: %s failed", book_id, task.name)
        engine.books.fail(book_id, ErrorCode.RENDER_FAILED, f"{task.name} failed: {type(exc).__name__}: {exc}")
        return {"book_id": book_id, "status": "failed", "code": ErrorCode.RENDER_FAILED.value}
    finally:  # webhooks: started once planned, progress (throttled), completed once finished
        notify(engine, "book", book_id)
        progress(engine, "book", book_id)


def register_book_tasks(
    app: Celery, settings: WorkerSettings, retry: dict[str, Any], transient: tuple[type[Exception], ...]
) -> None:
    from .books.assemble import assemble_book, assemble_chapter
    from .books.plan import plan_book
    from .books.render import render_group

    def send(name: str, kwargs: dict[str, Any], queue: str) -> None:
        app.send_task(name, kwargs=kwargs, queue=queue)

    @app.task(name=BOOK_PLAN, bind=True, **retry)
    def plan(self: Task, book_id: str) -> dict[str, Any]:
        return _guarded(self, settings, transient, book_id, lambda e: plan_book(e, send, book_id))

    @app.task(name=BOOK_RENDER_GROUP, bind=True, **retry)
    def group(self: Task, book_id: str, segments: list[int]) -> dict[str, Any]:
        return _guarded(self, settings, transient, book_id, lambda e: render_group(e, send, book_id, segments))

    @app.task(name=BOOK_ASSEMBLE_CHAPTER, bind=True, **retry)
    def chapter(self: Task, book_id: str, chapter: int) -> dict[str, Any]:
        return _guarded(self, settings, transient, book_id, lambda e: assemble_chapter(e, send, book_id, chapter))

    @app.task(name=BOOK_ASSEMBLE, bind=True, **retry)
    def book(self: Task, book_id: str) -> dict[str, Any]:
        return _guarded(self, settings, transient, book_id, lambda e: assemble_book(e, book_id))
