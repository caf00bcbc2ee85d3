"""Enqueue worker tasks by name (Celery ``send_task``); the API never imports worker task code."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from celery import Celery

from jobs import contract


class TaskQueue(Protocol):
    def send_synthesis(self, request: contract.SynthesisRequest, *, expires: float | None = None) -> None: ...
    def send_encode_voice(self, voice_id: str, reference_key: str) -> None: ...
    def revoke(self, task_id: str) -> None: ...
    def send_book_plan(self, book_id: str) -> None: ...
    def send_webhook(self, kwargs: dict[str, Any]) -> None: ...


class CeleryQueue:
    """A producer-only Celery app on the broker: JSON messages, routed to the interactive queue."""

    def __init__(self, broker_url: str) -> None:
        self.celery = Celery("echo-api", broker=broker_url, set_as_current=False)
        self.celery.conf.update(
            task_serializer="json",
            accept_content=["json"],
            broker_connection_retry=False,
            broker_connection_timeout=5,
            broker_transport_options={"socket_timeout": 5},
        )

    def send_synthesis(self, request: contract.SynthesisRequest, *, expires: float | None = None) -> None:
        """task_id is the job id, so a cancel can revoke it and logs line up. ``expires`` (epoch seconds,
        the job's queue deadline) becomes Celery's ``expires``: a worker drops the message after it."""
        when = datetime.fromtimestamp(expires, UTC) if expires is not None else None
        self._send(contract.SYNTHESIZE, request.to_dict(), task_id=request.job_id, expires=when)

    def send_encode_voice(self, voice_id: str, reference_key: str) -> None:
        self._send(contract.ENCODE_VOICE, {"voice_id": voice_id, "reference_key": reference_key})

    def send_book_plan(self, book_id: str) -> None:
        """A book is planned on the CPU queue; its segment groups go to the bulk queue from there."""
        self._send(contract.BOOK_PLAN, {"book_id": book_id}, queue=contract.QUEUE_ASSEMBLY)

    def send_webhook(self, kwargs: dict[str, Any]) -> None:
        """One webhook message (jobs.webhooks.message) for the workers that deliver them."""
        self._send(contract.WEBHOOK_DELIVER, kwargs, queue=contract.QUEUE_WEBHOOKS)

    def _send(
        self,
        name: str,
        kwargs: dict[str, Any],
        task_id: str | None = None,
        expires: datetime | None = None,
        queue: str = contract.QUEUE_INTERACTIVE,
    ) -> None:
        self.celery.send_task(name, kwargs=kwargs, queue=queue, task_id=task_id, expires=expires)

    def revoke(self, task_id: str) -> None:
        """Tell the workers to drop the message (our store already says canceled; this saves a pickup)."""
        self.celery.control.revoke(task_id)


class RecordingQueue:
    """An in-memory stand-in for unit tests: remembers what would have been sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.revoked: list[str] = []
        self.expires: dict[str, float | None] = {}  # job id -> the deadline it was sent with

    def send_synthesis(self, request: contract.SynthesisRequest, *, expires: float | None = None) -> None:
        self.sent.append((contract.SYNTHESIZE, request.to_dict()))
        self.expires[request.job_id] = expires

    def send_encode_voice(self, voice_id: str, reference_key: str) -> None:
        self.sent.append((contract.ENCODE_VOICE, {"voice_id": voice_id, "reference_key": reference_key}))

    def revoke(self, task_id: str) -> None:
        self.revoked.append(task_id)

    def send_book_plan(self, book_id: str) -> None:
        self.sent.append((contract.BOOK_PLAN, {"book_id": book_id}))

    def send_webhook(self, kwargs: dict[str, Any]) -> None:
        self.sent.append((contract.WEBHOOK_DELIVER, kwargs))
