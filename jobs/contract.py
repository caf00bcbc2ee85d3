"""The contract between the API and the workers: names, states, the request and storage keys.

STDLIB ONLY (and ``jobs.errors``). The API imports this module in an image without torch, Celery or ``echo_tts``;
keep it that way (``tests/service/test_contract.py`` checks it in a subprocess).

Calling convention (the API enqueues by name, never by importing worker code)::

    celery.send_task(SYNTHESIZE, kwargs=request.to_dict(), queue=QUEUE_INTERACTIVE, task_id=request.job_id)
    celery.send_task(ENCODE_VOICE, kwargs={"voice_id": vid, "reference_key": key}, queue=QUEUE_INTERACTIVE)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from jobs.errors import ErrorCode, ServiceError

__all__ = ["ErrorCode"]  # re-exported: the contract names the codes, jobs.errors defines them

# --- task and queue names (strings defined once) -------------------------------------------
SYNTHESIZE = "echo.synthesize"  # kwargs: SynthesisRequest.to_dict()
ENCODE_VOICE = "echo.encode_voice"  # kwargs: {"voice_id": str, "reference_key": str | None}
# Audiobooks (jobs/books.py): planned and assembled on the CPU, their segment groups rendered on the GPU.
BOOK_PLAN = "echo.book.plan"  # kwargs: {"book_id": str}
BOOK_RENDER_GROUP = "echo.book.render_group"  # kwargs: {"book_id": str, "segments": [int, ...]}
BOOK_ASSEMBLE_CHAPTER = "echo.book.assemble_chapter"  # kwargs: {"book_id": str, "chapter": int}
BOOK_ASSEMBLE = "echo.book.assemble"  # kwargs: {"book_id": str}
QUEUE_INTERACTIVE = "tts"  # short interactive jobs; never waits behind a book
QUEUE_BULK = "tts-bulk"  # audiobook segment groups and other bulk work
QUEUE_ASSEMBLY = "tts-assembly"  # CPU work of books: planning, chapter and M4B assembly (no model)
# Webhooks (jobs/webhooks.py): one signed HTTP delivery of one event, retried with backoff by the task.
WEBHOOK_DELIVER = "echo.webhook.deliver"  # kwargs: {"kind", "record_id", "event", "message_id", "payload"}
QUEUE_WEBHOOKS = "tts-webhooks"  # webhook deliveries (assemblers, and render workers when idle)
QUEUES = (QUEUE_INTERACTIVE, QUEUE_BULK)  # what a GPU worker renders (it also delivers webhooks by default)
ALL_QUEUES = (*QUEUES, QUEUE_ASSEMBLY, QUEUE_WEBHOOKS)

# A task re-delivered more often than this (worker killed each time) fails the job instead of
# looping forever (celery's task_reject_on_worker_lost "can cause message loops").
MAX_DELIVERIES = 3


class JobState(StrEnum):
    """Job lifecycle, a str for JSON: queued -> running -> succeeded | failed | canceled (| expired)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED, JobState.EXPIRED})


class VoiceState(StrEnum):
    """Lifecycle of a stored voice: its speaker latents are encoded once by a worker."""

    PENDING = "pending"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class OutputFormat:
    """How an output format is stored and served; ``sample_rates`` None means any allowed rate."""

    extension: str
    content_type: str
    sample_rates: tuple[int, ...] | None = None


_MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
_AAC_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
# What wav, flac and pcm are offered at: the standard rates. The encoder could write any rate, but
# an odd one (22051, 85847) is nobody's playback rate and costs a resample with a filter per output
# sample; the contract accepts only these, on /v1/jobs, /v1/audio/speech and in the worker alike.
STANDARD_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000)
# Names, extensions and content types agree with echo_tts.audio.AUDIO_FORMATS, and every rate offered
# here is one the encoder takes (tests/service/test_contract.py checks both).
OUTPUT_FORMATS: dict[str, OutputFormat] = {
    "wav": OutputFormat("wav", "audio/wav", STANDARD_RATES),
    "flac": OutputFormat("flac", "audio/flac", STANDARD_RATES),
    "mp3": OutputFormat("mp3", "audio/mpeg", _MP3_RATES),
    "opus": OutputFormat("opus", "audio/ogg; codecs=opus", (48000,)),  # always written at 48 kHz
    "aac": OutputFormat("m4a", "audio/mp4", _AAC_RATES),  # AAC in an MP4 container
    "pcm": OutputFormat("pcm", "audio/L16", STANDARD_RATES),  # raw 16-bit little-endian mono
}
DEFAULT_FORMAT = "wav"
# Formats whose audio can be sent as it is rendered: raw samples (pcm, and wav behind a streaming
# header) and MP3 frames; the others need the whole track (FLAC's and M4A's headers, Ogg pages).
STREAM_FORMATS = ("pcm", "wav", "mp3")

# The six names of echo_tts.config.SAMPLER_PRESETS, in upstream order (a test checks equality).
PRESET_NAMES = (
    "Independent-High-Speaker-CFG",
    "Independent-High-Speaker-CFG-Flat",
    "Independent-High-CFG",
    "Independent-High-CFG-Flat",
    "Independent-Low-CFG",
    "Independent-Low-CFG-Flat",
)
DEFAULT_PRESET = "Independent-High-Speaker-CFG"


@dataclass(frozen=True)
class OverrideBound:
    """Inclusive range of one sampler override; ``nullable`` fields accept null to switch off."""

    name: str
    kind: type  # int or float
    minimum: float
    maximum: float
    nullable: bool = False

    def check(self, value: object) -> str | None:
        """An error message naming the field and its bounds, or None when the value is fine."""
        if value is None:
            return None if self.nullable else f"{self.name} must not be null"
        ok_type = isinstance(value, int) if self.kind is int else isinstance(value, int | float)
        if isinstance(value, bool) or not ok_type:
            return f"{self.name} must be {'an integer' if self.kind is int else 'a number'}"
        if not self.minimum <= value <= self.maximum:  # type: ignore[operator]
            return f"{self.name} must be between {self.minimum} and {self.maximum}, got {value}"
        return None


# Field names are SamplerConfig's; bounds are generous around the upstream UI's sliders.
OVERRIDE_BOUNDS: dict[str, OverrideBound] = {
    b.name: b
    for b in (
        OverrideBound("num_steps", int, 1, 100),
        OverrideBound("cfg_scale_text", float, 0.0, 20.0),
        OverrideBound("cfg_scale_speaker", float, 0.0, 20.0),
        OverrideBound("cfg_min_t", float, 0.0, 1.0),
        OverrideBound("cfg_max_t", float, 0.0, 1.0),
        OverrideBound("truncation_factor", float, 0.1, 2.0, nullable=True),
        OverrideBound("rescale_k", float, 0.1, 5.0, nullable=True),
        OverrideBound("rescale_sigma", float, 0.1, 10.0, nullable=True),
        OverrideBound("speaker_kv_scale", float, 0.1, 5.0, nullable=True),
        OverrideBound("speaker_kv_max_layers", int, 0, 64, nullable=True),
        OverrideBound("speaker_kv_min_t", float, 0.0, 1.0, nullable=True),
    )
}
OVERRIDE_NAMES = tuple(OVERRIDE_BOUNDS)

MIN_OUTPUT_SAMPLE_RATE, MAX_OUTPUT_SAMPLE_RATE = 8000, 96000
# How deeply a request's ``metadata`` may nest (objects and arrays); deeper JSON is refused by name
# before anything serialises it (pydantic's serialiser gives up past about 255 levels).
MAX_METADATA_DEPTH = 32


def json_depth(value: object) -> int:
    """How many objects and arrays ``value`` nests (0 for a scalar), counted up to MAX_METADATA_DEPTH + 1
    (enough to refuse it); iterative, so any depth is safe to ask about."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list | tuple) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if depth <= MAX_METADATA_DEPTH:  # enough to know it is too deep: stop walking
            stack.extend((child, depth + 1) for child in children)
    return deepest


def metadata_errors(metadata: object) -> list[str]:
    """Problems with a request's ``metadata``: not an object, or nested deeper than MAX_METADATA_DEPTH."""
    if not isinstance(metadata, dict):
        return ["metadata must be a JSON object"]
    if json_depth(metadata) > MAX_METADATA_DEPTH:
        return [f"metadata is nested more than MAX_METADATA_DEPTH={MAX_METADATA_DEPTH} levels deep"]
    return []


class ContractError(ServiceError, ValueError):
    """Raised when a request does not satisfy the contract (the message names the field)."""

    code = ErrorCode.INVALID_INPUT


def override_errors(overrides: dict[str, Any]) -> list[str]:
    """Every problem with ``overrides`` (unknown names, wrong types, out of bounds)."""
    problems = [f"unknown override {name!r}" for name in overrides if name not in OVERRIDE_BOUNDS]
    for name, value in overrides.items():
        bound = OVERRIDE_BOUNDS.get(name)
        message = bound.check(value) if bound else None
        if message:
            problems.append(message)
    return problems


def sample_rate_errors(fmt: str, rate: object) -> list[str]:
    """Problems with an output ``sample_rate`` for ``fmt`` (opus ignores it: always 48 kHz); a
    refused rate's message lists the format's valid rates."""
    if isinstance(rate, bool) or not isinstance(rate, int):
        return ["sample_rate must be an integer"]
    spec = OUTPUT_FORMATS.get(fmt)
    valid = spec.sample_rates if spec and fmt != "opus" else None
    if valid and rate not in valid:
        return [f"{fmt} cannot be written at {rate} Hz (sample_rate); valid rates: {', '.join(map(str, valid))}"]
    if not MIN_OUTPUT_SAMPLE_RATE <= rate <= MAX_OUTPUT_SAMPLE_RATE:
        return [f"sample_rate must be between {MIN_OUTPUT_SAMPLE_RATE} and {MAX_OUTPUT_SAMPLE_RATE}, got {rate}"]
    return []


@dataclass(frozen=True)
class SynthesisRequest:
    """One synthesis job as the worker receives it (JSON through the broker: no audio bytes).

    ``voice_id`` names a stored voice (its latents are loaded, never re-encoded);
    ``speaker_key`` names a one-shot reference upload (``uploads/{job_id}/…``) encoded for
    this job only. At most one of them is set; neither means the unconditional speaker.
    """

    job_id: str
    text: str
    seed: int
    format: str = DEFAULT_FORMAT
    preset: str = DEFAULT_PRESET
    overrides: dict[str, Any] = field(default_factory=dict)
    voice_id: str | None = None
    speaker_key: str | None = None
    sample_rate: int | None = None
    owner: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    # publish each piece's audio as it is rendered (jobs/audio_stream.py) for a streamed speech answer
    stream: bool = False

    def validate(self) -> None:
        """Raise ContractError naming the first field that breaks the contract."""
        problems: list[str] = []
        if not self.job_id:
            problems.append("job_id must not be empty")
        if not self.text or not self.text.strip():
            problems.append("text must not be empty")
        if self.format not in OUTPUT_FORMATS:
            problems.append(f"format must be one of {', '.join(OUTPUT_FORMATS)}, got {self.format!r}")
        if self.preset not in PRESET_NAMES:
            problems.append(f"preset must be one of {', '.join(PRESET_NAMES)}, got {self.preset!r}")
        if self.voice_id and self.speaker_key:
            problems.append("give either voice_id or speaker_key, not both")
        if self.sample_rate is not None:
            problems += sample_rate_errors(self.format, self.sample_rate)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            problems.append("seed must be an integer in [0, 2**63)")
        problems += override_errors(self.overrides)
        problems += metadata_errors(self.metadata)
        stream: object = self.stream  # from JSON: anything
        if not isinstance(stream, bool):
            problems.append("stream must be true or false")
        elif self.stream and self.format not in STREAM_FORMATS:
            problems.append(f"only {', '.join(STREAM_FORMATS)} can be streamed, not {self.format!r}")
        if problems:
            raise ContractError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; ``from_dict(to_dict())`` round-trips."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SynthesisRequest:
        """Build and validate; unknown or missing fields raise ContractError naming them."""
        return build_request(cls, data, "request")


R = TypeVar("R")


def build_request(cls: type[R], data: dict[str, Any], what: str) -> R:
    """``cls(**data)`` for a request dataclass, then its ``validate()``; unknown or missing fields raise
    ContractError naming them (``what`` names the kind of request in the message)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ContractError(f"unknown {what} fields: {', '.join(unknown)}")
    try:
        request = cls(**data)
    except TypeError as exc:
        raise ContractError(f"bad {what}: {exc}") from None
    request.validate()  # type: ignore[attr-defined]
    return request


# --- storage keys (DESIGN §4); one bucket, same layout on S3 and on local disk -------------
def job_audio_key(job_id: str, fmt: str) -> str:
    """``jobs/{id}/audio.{ext}``: deterministic, so a re-delivered task finds its own result."""
    return f"jobs/{job_id}/audio.{OUTPUT_FORMATS[fmt].extension}"


def job_result_key(job_id: str) -> str:
    """``jobs/{id}/result.json``: the result description, written just before the audio, so a
    re-delivered task that finds the audio can finish the record without rendering again."""
    return f"jobs/{job_id}/result.json"


def job_pieces_prefix(job_id: str) -> str:
    """``jobs/{id}/pieces/``: a long job's rendered pieces, kept until its audio is stored."""
    return f"jobs/{job_id}/pieces/"


def job_piece_key(job_id: str, digest: str) -> str:
    """One kept piece, named by its ``segment_digest`` (model, voice, settings, seed, text)."""
    return f"{job_pieces_prefix(job_id)}{digest}.f32"


def upload_key(job_id: str, filename: str) -> str:
    """``uploads/{id}/{filename}`` for a one-shot reference (filename is ours, not the client's)."""
    return f"uploads/{job_id}/{filename}"


def voice_reference_key(voice_id: str, extension: str) -> str:
    """``voices/{id}/reference.{ext}``: the reference audio as uploaded."""
    return f"voices/{voice_id}/reference.{extension.lstrip('.')}"


def voice_prefix(voice_id: str) -> str:
    """``voices/{id}/``: everything stored for a voice (deleted with it)."""
    return f"voices/{voice_id}/"


def voice_reference_prefix(voice_id: str) -> str:
    return f"voices/{voice_id}/reference."


def voice_latents_key(voice_id: str) -> str:
    """``voices/{id}/latents.safetensors``: the speaker latents, encoded once."""
    return f"voices/{voice_id}/latents.safetensors"


def segment_cache_key(digest: str) -> str:
    """``cache/segments/{sha256}.flac``: a content-addressed rendered segment."""
    return f"cache/segments/{digest}.flac"


def segment_digest(*, model_revision: str, voice: str, settings: dict[str, Any], seed: int, text: str) -> str:
    """sha256 over everything that decides a segment's samples (normalised text included)."""
    payload = {"model": model_revision, "voice": voice, "settings": settings, "seed": seed, "text": text}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def book_prefix(book_id: str) -> str:
    """``books/{id}/``: everything stored for a book (deleted with it)."""
    return f"books/{book_id}/"


def book_source_key(book_id: str, extension: str) -> str:
    """``books/{id}/source.{ext}``: the book file as uploaded (or the JSON chapters as sent)."""
    return f"books/{book_id}/source.{extension.lstrip('.')}"


def book_content_key(book_id: str) -> str:
    """``books/{id}/book.json``: the parsed book (title, author, chapters of paragraphs)."""
    return f"books/{book_id}/book.json"


def book_cover_key(book_id: str) -> str:
    """``books/{id}/cover``: the cover image bytes (its media type is in book.json)."""
    return f"books/{book_id}/cover"


def book_plan_key(book_id: str) -> str:
    """``books/{id}/plan.json``: the segments the book was split into (text, seed, chapter, pause)."""
    return f"books/{book_id}/plan.json"


def book_chapter_master_key(book_id: str, chapter: int) -> str:
    """``books/{id}/chapters/{nn}.master.flac``: the assembled, normalised chapter (the M4B's source)."""
    return f"books/{book_id}/chapters/{chapter:03d}.master.flac"


def book_chapter_key(book_id: str, chapter: int, fmt: str) -> str:
    """``books/{id}/chapters/{nn}.{ext}``: the chapter file in the book's format."""
    return f"books/{book_id}/chapters/{chapter:03d}.{OUTPUT_FORMATS[fmt].extension}"


def book_m4b_key(book_id: str) -> str:
    """``books/{id}/book.m4b``: the whole book, AAC in MP4 with chapter markers."""
    return f"books/{book_id}/book.m4b"


# --- the broker's own keys (kombu's Redis transport), read for queue depths -------------------
# A queue is one list per priority level: the bare name for the default, then name + sep + level.
_KOMBU_PRIORITY_SEP, _KOMBU_PRIORITIES = "\x06\x16", ("3", "6", "9")
BROKER_UNACKED_KEY = "unacked"  # hash of messages a worker took and has not acknowledged


def broker_queue_keys(queue: str) -> tuple[str, ...]:
    """The Redis lists that hold ``queue``'s waiting messages (every priority level)."""
    return (queue, *(queue + _KOMBU_PRIORITY_SEP + p for p in _KOMBU_PRIORITIES))


# --- worker heartbeats (for /readyz) -------------------------------------------------------
HEARTBEAT_PREFIX = "echo:heartbeat:"
HEARTBEAT_PATTERN = HEARTBEAT_PREFIX + "*"  # SCAN MATCH pattern for live workers
HEARTBEAT_TTL_S = 30  # a worker that stops writing for this long counts as gone
HEARTBEAT_INTERVAL_S = 10


def heartbeat_key(worker_name: str) -> str:
    """Redis key a live worker refreshes; its value is JSON {name, queues, pid, model_revision, ts}."""
    return HEARTBEAT_PREFIX + worker_name


# --- messages in flight per worker (dead-worker recovery, worker/recovery.py) ----------------------
INFLIGHT_PREFIX = "echo:inflight:"
INFLIGHT_PATTERN = INFLIGHT_PREFIX + "*"


def inflight_key(worker_name: str) -> str:
    """Hash of the messages ``worker_name`` is working on: delivery tag -> JSON {task, task_id, ids, since}."""
    return INFLIGHT_PREFIX + worker_name


# a job another job's worker took into its sampler call (jobs/company.py) is held by an entry under this
# tag instead of a delivery tag: the sweep re-sends the job's message instead of restoring one
CLAIM_TAG_PREFIX = "claim:"


def inflight_worker(key: str) -> str:
    return key[len(INFLIGHT_PREFIX) :]


def sweep_lock_key(worker_name: str) -> str:
    """Held (briefly) by the worker that re-queues a dead worker's messages."""
    return f"echo:inflight_sweep:{worker_name}"


# --- streamed speech: a job's audio chunks as they are rendered (jobs/audio_stream.py) -------------
def job_audio_stream_key(job_id: str) -> str:
    """Redis stream of a streamed job's audio chunks, in order."""
    return f"echo:audio-stream:{job_id}"
