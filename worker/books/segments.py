"""A book's segments as the workers see them: the stored plan, and each segment's cache digest.

The digest (``cache/segments/{digest}.flac``) covers the model revision, the voice (its reference's
sha256, or ``none``), the sampler settings after preset and overrides, the segment's seed and text.
"""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict
from typing import Any

from echo_tts.config import SamplerConfig, sampler_preset
from jobs.books import BookRequest, PlannedSegment
from jobs.contract import book_plan_key, segment_digest
from jobs.storage import Storage
from jobs.voicestore import VoiceStore

_PLANS: OrderedDict[str, list[PlannedSegment]] = OrderedDict()
_PLANS_KEPT = 4  # plans held in memory per process (a long book's plan is a few MB of JSON)


def sampler_config(request: BookRequest) -> SamplerConfig:
    """The book's sampler settings: the named preset with its overrides."""
    return sampler_preset(request.preset).replace(**request.overrides)


def voice_identity(voices: VoiceStore, request: BookRequest) -> str:
    """What names the voice in a digest: the reference audio's sha256 (the same upload under another
    id shares the cache), else its id; ``none`` for the unconditioned voice."""
    if not request.voice_id:
        return "none"
    record = voices.get(request.voice_id)
    return f"sha256:{record.sha256}" if record is not None and record.sha256 else f"id:{request.voice_id}"


def digest_of(segment: PlannedSegment, *, model_revision: str, voice: str, settings: dict[str, Any]) -> str:
    return segment_digest(
        model_revision=model_revision, voice=voice, settings=settings, seed=segment.seed, text=segment.text
    )


def settings_of(request: BookRequest) -> dict[str, Any]:
    return dataclasses.asdict(sampler_config(request))


def store_plan(storage: Storage, book_id: str, segments: list[PlannedSegment]) -> None:
    body = json.dumps([s.to_dict() for s in segments], separators=(",", ":")).encode()
    storage.put_bytes(book_plan_key(book_id), body, content_type="application/json")
    _remember(book_id, segments)


def load_plan(storage: Storage, book_id: str) -> list[PlannedSegment]:
    """The book's segments by index (from memory when this process read or wrote them lately)."""
    if book_id in _PLANS:
        _PLANS.move_to_end(book_id)
        return _PLANS[book_id]
    segments = [PlannedSegment.from_dict(d) for d in json.loads(storage.get_bytes(book_plan_key(book_id)))]
    _remember(book_id, segments)
    return segments


def _remember(book_id: str, segments: list[PlannedSegment]) -> None:
    _PLANS[book_id] = segments
    _PLANS.move_to_end(book_id)
    while len(_PLANS) > _PLANS_KEPT:
        _PLANS.popitem(last=False)
