"""The clients one API process holds (``app.extensions["echo"]``), built once in ``create_app``."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from api.queue import TaskQueue
from api.quotas import RateLimiter
from api.settings import ApiSettings
from jobs.bookstore import BookStore
from jobs.company import WaitingRoom
from jobs.jobstore import JobStore
from jobs.request_counts import RequestCounts
from jobs.storage import Storage
from jobs.voicestore import VoiceStore


@dataclass(frozen=True)
class Services:
    settings: ApiSettings
    store: JobStore
    waiting: WaitingRoom  # on the job store's Redis: where jobs wait to be batched together
    voices: VoiceStore
    books: BookStore
    request_counts: RequestCounts
    storage: Storage
    queue: TaskQueue
    rate_limiter: RateLimiter


def services() -> Services:
    """The current app's clients (inside a request or app context)."""
    return current_app.extensions["echo"]  # type: ignore[no-any-return]
