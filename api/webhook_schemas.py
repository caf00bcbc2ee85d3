"""Pydantic models of webhooks: the request fields of POST /v1/jobs and /v1/audiobooks, the state shown
on a job or book, and GET /v1/webhooks/secret. Names and defaults come from :mod:`jobs.webhooks`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from pydantic import BaseModel, Field

from jobs import webhooks

if TYPE_CHECKING:
    Event: TypeAlias = str
else:
    Event = Literal[webhooks.EVENTS]


def webhook_field() -> Any:
    return Field(
        None,
        max_length=webhooks.MAX_URL_LENGTH,
        description="An http(s) URL that gets a signed POST (Standard Webhooks) for each event in webhook_events. "
        "Private, loopback, link-local and reserved addresses are refused unless ECHO_WEBHOOK_ALLOW_PRIVATE",
    )


def events_field() -> Any:
    return Field(
        None,
        min_length=1,
        description=f"Events to send to webhook: {', '.join(webhooks.EVENTS)} (completed: any terminal state). "
        "Default: completed only. In a form: comma-separated or a JSON array",
    )


class WebhookDelivery(BaseModel):
    event: Event
    message_id: str = Field(description="The webhook-id header; the same on every retry of this message")
    state: Literal["pending", "retrying", "delivered", "failed", "dropped"]
    attempts: int
    status_code: int | None = Field(description="The receiver's last answer; null when none (network error)")
    last_error: str | None
    last_attempt_at: str | None
    delivered_at: str | None
    next_attempt_at: str | None = Field(description="When state is retrying")


class WebhookState(BaseModel):
    url: str
    events: list[Event]
    deliveries: list[WebhookDelivery] = Field(description="The latest message of each event sent so far")


class WebhookSecret(BaseModel):
    secret: str = Field(description="whsec_…: the signing secret of this API key (Standard Webhooks)")
    owner: str = Field(description="The API key's name the secret belongs to")
    events: list[Event]
    default_events: list[Event]
