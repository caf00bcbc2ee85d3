"""Enqueue worker tasks by name (Celery ``send_task``); the API never imports worker task code."""

from __future__ import annotations

from typing import Any, Protocol

from celery import Celery

from worker import contract


class TaskQueue(Protocol):
    def send_synthesis(self, request: contract.SynthesisRequest) -> None: ...
    def send_encode_voice(self, voice_id: str, reference_key: str) -> None: ...
    def revoke(self, task_id: str) -> None: ...


class CeleryQueue:
    """A producer-only Celery app on the broker: JSON messages, routed to the interactive queue."""

    def __init__(self, broker_url: str) -> None:
        self.celery = Celery("echo-api", broker=broker_url, set_as_current=False)
        self.celery.conf.update(task_serializer="json", accept_content=["json"], broker_connection_retry=False,
                                broker_connection_timeout=5, broker_transport_options={"socket_timeout": 5})

    def send_synthesis(self, request: contract.SynthesisRequest) -> None:
        """task_id is the job id, so a cancel can revoke it and logs line up."""
        self._send(contract.SYNTHESIZE, request.to_dict(), task_id=request.job_id)

    def send_encode_voice(self, voice_id: str, reference_key: str) -> None:
        self._send(contract.ENCODE_VOICE, {"voice_id": voice_id, "reference_key": reference_key})

    def _send(self, name: str, kwargs: dict[str, Any], task_id: str | None = None) -> None:
        self.celery.send_task(name, kwargs=kwargs, queue=contract.QUEUE_INTERACTIVE, task_id=task_id)

    def revoke(self, task_id: str) -> None:
        """Tell the workers to drop the message (our store already says canceled; this saves a pickup)."""
        self.celery.control.revoke(task_id)


class RecordingQueue:
    """An in-memory stand-in for unit tests: remembers what would have been sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.revoked: list[str] = []

    def send_synthesis(self, request: contract.SynthesisRequest) -> None:
        self.sent.append((contract.SYNTHESIZE, request.to_dict()))

    def send_encode_voice(self, voice_id: str, reference_key: str) -> None:
        self.sent.append((contract.ENCODE_VOICE, {"voice_id": voice_id, "reference_key": reference_key}))

    def revoke(self, task_id: str) -> None:
        self.revoked.append(task_id)
