"""Pydantic models: they validate requests and they generate ``/v1/openapi.json`` (one source).

Bounds come from :mod:`jobs.contract` so the API and the worker can never disagree. Limits that are
settings (text length, upload size, metadata size) are checked in the services and documented here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, create_model, field_validator

from api.webhook_schemas import Event, WebhookState, events_field, webhook_field
from jobs import contract

if TYPE_CHECKING:  # the literals below are built from the contract at run time
    Format: TypeAlias = str
    Preset: TypeAlias = str
    Status: TypeAlias = str
    VoiceStatus: TypeAlias = str
else:
    Format = Literal[tuple(contract.OUTPUT_FORMATS)]
    Preset = Literal[contract.PRESET_NAMES]
    Status = Literal[tuple(s.value for s in contract.JobState)]
    VoiceStatus = Literal[tuple(s.value for s in contract.VoiceState)]


def _override_field(bound: contract.OverrideBound) -> tuple[Any, Any]:
    kind: Any = int if bound.kind is int else float
    note = " (null switches it off)" if bound.nullable else ""
    field = Field(
        None,
        strict=True,  # true is not 1 (nor 1.0), "5" is not 5; an int is still a float
        ge=bound.minimum,
        le=bound.maximum,
        description=f"{bound.name}: {bound.minimum}..{bound.maximum}{note}; absent = the preset's value",
    )
    return (kind | None if bound.nullable else kind), field


def speakable(text: str, name: str) -> str:
    """Refuse text with nothing to speak: blank, or only control and format characters (as a book with
    no text is refused); emoji and punctuation alone are the model's to read."""
    if not any(char.isprintable() and not char.isspace() for char in text):
        raise ValueError(f"{name} must not be blank or only control characters")
    return text


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Sampler overrides, one optional field per contract.OVERRIDE_BOUNDS entry, bounds included.
if TYPE_CHECKING:
    Overrides = _Strict
else:
    Overrides = create_model(
        "Overrides", __base__=_Strict, **{name: _override_field(b) for name, b in contract.OVERRIDE_BOUNDS.items()}
    )


_RATES = (
    f"wav, flac and pcm take the standard rates {', '.join(map(str, contract.STANDARD_RATES))}; "
    "mp3 and aac their codecs' standard rates; opus is always 48000"
)


class JobCreate(_Strict):
    """POST /v1/jobs (a JSON body, or the same fields as multipart form fields plus ``speaker_audio``)."""

    text: str = Field(
        min_length=1,
        description="Text to speak; longer than one generation is split at "
        "sentence boundaries and stitched (limit: ECHO_MAX_TEXT_CHARS)",
    )
    voice: str | None = Field(
        None,
        max_length=128,
        description="A voice by id or name: the caller's, or an operator voice's id, name or file name; an alias "
        "(ECHO_VOICE_ALIASES, e.g. alloy); none for the model's own voice; an OpenAI voice name falls back "
        "to ECHO_DEFAULT_VOICE when set. GET /v1/voices lists them",
    )
    preset: Preset = Field(contract.DEFAULT_PRESET, description="An upstream sampler preset")
    overrides: Overrides = Field(default_factory=Overrides, description="Bounded sampler overrides")
    seed: int | None = Field(None, strict=True, ge=0, lt=2**63, description="Recorded; random when absent")
    format: Format = Field(contract.DEFAULT_FORMAT, description="Output audio format")
    sample_rate: int | None = Field(
        None,
        strict=True,
        ge=contract.MIN_OUTPUT_SAMPLE_RATE,
        le=contract.MAX_OUTPUT_SAMPLE_RATE,
        description=f"Output sample rate (Hz); default the model's 44100. {_RATES}",
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="Opaque, echoed back (limits: ECHO_MAX_METADATA_BYTES of JSON, "
        f"nested at most MAX_METADATA_DEPTH={contract.MAX_METADATA_DEPTH} levels)",
    )
    webhook: str | None = webhook_field()
    webhook_events: list[Event] | None = events_field()

    @field_validator("text")
    @classmethod
    def _not_blank(cls, text: str) -> str:
        return speakable(text, "text")

    @field_validator("metadata", mode="before")
    @classmethod
    def _shallow(cls, value: Any) -> Any:
        """Refuse deep nesting before pydantic walks (and later serialises) it."""
        if isinstance(value, dict) and contract.json_depth(value) > contract.MAX_METADATA_DEPTH:
            raise ValueError(f"nested more than MAX_METADATA_DEPTH={contract.MAX_METADATA_DEPTH} levels deep")
        return value


class JobProgress(BaseModel):
    fraction: float
    step: int
    total_steps: int
    segments_done: int
    segments_total: int


class JobResult(BaseModel):
    url: str = Field(description="Fresh presigned URL (or this API's /audio URL with local storage)")
    format: str
    content_type: str | None = None
    duration_s: float | None = None
    sample_rate: int | None = None
    bytes: int | None = None


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorEnvelope(BaseModel):
    error: ErrorBody


class RequestEcho(BaseModel):
    text: str
    voice: str | None
    speaker_audio: bool = Field(description="A one-shot reference was uploaded with the job")
    preset: str
    overrides: dict[str, Any]
    seed: int
    format: str
    sample_rate: int | None
    metadata: dict[str, Any]


class JobWorker(BaseModel):
    name: str
    last_heartbeat_at: str | None = Field(description="null: the worker's heartbeat has expired (it is gone)")


class Job(BaseModel):
    id: str
    status: Status
    created_at: str
    started_at: str | None
    finished_at: str | None
    created_ts: float
    started_ts: float | None
    finished_ts: float | None
    progress: JobProgress
    cancel_requested: bool
    request: RequestEcho
    result: JobResult | None
    error: ErrorBody | None
    timings: dict[str, float] | None = Field(
        description="queue_s, render_s, rtf (render time / audio time); the worker's model_s, encode_s, upload_s; "
        "batch_jobs when other jobs shared the sampler call"
    )
    worker: JobWorker | None = Field(None, description="While running: the worker holding it and its last heartbeat")
    webhook: WebhookState | None = Field(None, description="The job's webhook and its deliveries; null: none")
    links: dict[str, str]


class JobList(BaseModel):
    jobs: list[Job]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page")


class JobListQuery(_Strict):
    status: list[Status] | None = None
    limit: int = Field(20, ge=1, le=100)
    cursor: str | None = None


class VoiceCreate(_Strict):
    """POST /v1/voices: multipart with a ``file`` (the reference audio) and an optional ``name``."""

    name: str | None = Field(None, max_length=128)


class Voice(BaseModel):
    id: str
    name: str
    status: VoiceStatus
    operator: bool = Field(description="Operator voices (ECHO_VOICES_DIR) are read-only and shared by all keys")
    created_at: str
    updated_at: str
    error: ErrorBody | None
    info: dict[str, Any] | None


class VoiceList(BaseModel):
    voices: list[Voice]


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, Any]


class Health(BaseModel):
    status: Literal["ok"]


class SpeechCreate(_Strict):
    """POST /v1/audio/speech: OpenAI's request body, plus the extensions ``seed``, ``preset``,
    ``overrides`` and ``sample_rate`` (the same as for POST /v1/jobs)."""

    model: str = Field(
        "echo-tts",
        min_length=1,
        max_length=64,
        description="Accepted and recorded (job metadata.model); any name, e.g. echo-tts or tts-1",
    )
    input: str = Field(
        min_length=1,
        description="Text to speak (limit: ECHO_MAX_TEXT_CHARS); long text is split "
        "at sentence boundaries and stitched, never truncated",
    )
    instructions: str | None = Field(
        None,
        max_length=4096,
        description="Accepted and recorded (job metadata.instructions) so OpenAI clients that send it work; "
        "Echo-TTS has no instruction input, so it does not change the audio",
    )
    voice: str = Field(
        min_length=1,
        max_length=128,
        description="A voice by id or name: the caller's, or an operator voice's id, name or file name; an alias "
        "(ECHO_VOICE_ALIASES, e.g. alloy); none for the model's own voice; an OpenAI voice name falls back "
        'to ECHO_DEFAULT_VOICE when set. GET /v1/voices lists them; {"id": ...} is accepted too',
    )
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = Field(
        "mp3", description="aac is AAC in MP4 (.m4a); pcm is raw 16-bit LE mono at 24000 Hz unless sample_rate"
    )
    speed: float = Field(
        1.0, description="Only 1.0: Echo-TTS has no speaking-rate control and the service does not time-stretch"
    )
    stream_format: Literal["audio", "sse"] = Field(
        "audio",
        description="audio: the audio bytes; pcm, wav and mp3 are sent as they are rendered (chunked), the other "
        "formats once complete. sse: server-sent events speech.audio.delta (base64 audio) then speech.audio.done "
        "(pcm, wav or mp3 only)",
    )
    seed: int | None = Field(
        None, strict=True, ge=0, lt=2**63, description="Extension: recorded; random when absent (answered in X-Seed)"
    )
    preset: Preset = Field(contract.DEFAULT_PRESET, description="Extension: an upstream sampler preset")
    overrides: Overrides = Field(default_factory=Overrides, description="Extension: bounded sampler overrides")
    sample_rate: int | None = Field(
        None,
        strict=True,
        ge=contract.MIN_OUTPUT_SAMPLE_RATE,
        le=contract.MAX_OUTPUT_SAMPLE_RATE,
        description=f"Extension: output rate (Hz), as for POST /v1/jobs. {_RATES}",
    )

    @field_validator("voice", mode="before")
    @classmethod
    def _voice_object(cls, value: Any) -> Any:
        return value.get("id") if isinstance(value, dict) else value  # OpenAI's {"id": "voice_..."} form

    @field_validator("input")
    @classmethod
    def _not_blank(cls, text: str) -> str:
        return speakable(text, "input")

    @field_validator("speed")
    @classmethod
    def _unit_speed(cls, speed: float) -> float:
        if speed != 1.0:
            raise ValueError(
                "only 1.0 is supported: Echo-TTS has no speaking-rate control and the service "
                "does not time-stretch audio"
            )
        return speed

    @field_validator("stream_format")
    @classmethod
    def _streamable(cls, stream_format: str, info: ValidationInfo) -> str:
        fmt = info.data.get("response_format")  # validated before: it is declared first
        if stream_format == "sse" and fmt is not None and fmt not in contract.STREAM_FORMATS:
            raise ValueError(
                f"sse carries {', '.join(contract.STREAM_FORMATS)} audio only; response_format {fmt} needs "
                'stream_format "audio"'
            )
        return stream_format
