"""Typed settings read once from the environment (the only module of ``worker`` that reads it).

``StorageSettings`` is torch- and Celery-free so the API can reuse it. A missing or malformed
setting raises :class:`SettingsError` naming the variable; entry points turn that into a
non-zero exit with the message.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

from .contract import QUEUES

T = TypeVar("T")
DTYPES = ("float32", "bfloat16")  # what echo_tts.pipeline.as_dtype takes
DEVICE_PREFIXES = ("auto", "cpu", "cuda", "mps")
MiB = 1024 * 1024

MAX_PIECE_BYTES = 762  # one generation: 768 tokens - BOS - "[S1] " (echo_tts.text.DEFAULT_SPLIT_BYTES)


class SettingsError(ValueError):
    """Raised when an environment setting is missing or malformed; the message names it."""


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def _get(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    value = env.get(name, "").strip()
    return value or default


def _required(env: Mapping[str, str], name: str) -> str:
    value = _get(env, name)
    if value is None:
        raise SettingsError(f"{name} is required but not set")
    return value


def _parsed(env: Mapping[str, str], name: str, default: T, parse: Callable[[str], T], what: str) -> T:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        return parse(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not {what}") from None


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    value = _parsed(env, name, default, float, "a number")
    if value <= 0:
        raise SettingsError(f"{name}={value} must be > 0")
    return value


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = _parsed(env, name, default, int, "an integer")
    if value <= 0:
        raise SettingsError(f"{name}={value} must be > 0")
    return value


def _bounded_int(env: Mapping[str, str], name: str, default: int, *, low: int, high: int) -> int:
    value = _parsed(env, name, default, int, "an integer")
    if not low <= value <= high:
        raise SettingsError(f"{name}={value} must be between {low} and {high}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (_get(env, name) or "").lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean (true/false)")


def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...], *, required: bool) -> str | None:
    value = _required(env, name) if required else _get(env, name)
    if value is not None:
        parsed = urlparse(value)
        if parsed.scheme not in schemes or not (parsed.netloc or (parsed.scheme == "unix" and parsed.path)):
            raise SettingsError(f"{name}={value!r} is not a URL ({'/'.join(schemes)}://host[:port])")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = _get(env, name, default) or default
    if value not in choices:
        raise SettingsError(f"{name}={value!r} must be one of {', '.join(choices)}")
    return value


@dataclass(frozen=True)
class StorageSettings:
    """Where job audio, uploads and voices live: an S3 bucket, or a local directory.

    S3 is used whenever ``ECHO_S3_ENDPOINT_URL`` is set; otherwise ``ECHO_STORAGE_DIR``
    (default ``./var/storage``) holds the same key layout and the API streams downloads.
    """

    endpoint_url: str | None
    public_endpoint_url: str | None
    bucket: str
    access_key_id: str | None
    secret_access_key: str | None
    region: str
    local_dir: Path
    presign_expires_s: int = 3600
    multipart_threshold: int = 8 * MiB
    multipart_chunksize: int = 8 * MiB

    @property
    def backend(self) -> str:
        return "s3" if self.endpoint_url else "local"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StorageSettings:
        e = _env(env)
        endpoint = _url(e, "ECHO_S3_ENDPOINT_URL", ("http", "https"), required=False)
        key_id, secret = _get(e, "AWS_ACCESS_KEY_ID"), _get(e, "AWS_SECRET_ACCESS_KEY")
        if endpoint and (key_id is None) != (secret is None):
            missing = "AWS_SECRET_ACCESS_KEY" if secret is None else "AWS_ACCESS_KEY_ID"
            raise SettingsError(f"{missing} is required when the other AWS key is set")
        expires = _positive_int(e, "ECHO_PRESIGN_EXPIRES_S", 3600)
        if expires > 604_800:
            raise SettingsError(f"ECHO_PRESIGN_EXPIRES_S={expires} exceeds the SigV4 maximum of 604800 s")
        chunk = _positive_int(e, "ECHO_S3_MULTIPART_CHUNKSIZE", 8 * MiB)
        if chunk < 5 * MiB:
            raise SettingsError(f"ECHO_S3_MULTIPART_CHUNKSIZE={chunk} is below the S3 minimum part size of 5 MiB")
        return cls(
            endpoint_url=endpoint,
            public_endpoint_url=_url(e, "ECHO_S3_PUBLIC_ENDPOINT_URL", ("http", "https"), required=False),
            bucket=_get(e, "ECHO_S3_BUCKET", "echo-tts") or "echo-tts",
            access_key_id=key_id,
            secret_access_key=secret,
            region=_get(e, "AWS_DEFAULT_REGION", "us-east-1") or "us-east-1",
            local_dir=Path(_get(e, "ECHO_STORAGE_DIR", "var/storage") or "var/storage").resolve(),
            presign_expires_s=expires,
            multipart_threshold=_positive_int(e, "ECHO_S3_MULTIPART_THRESHOLD", 8 * MiB),
            multipart_chunksize=chunk,
        )


def _queues(raw: str) -> tuple[str, ...]:
    names = tuple(q.strip() for q in raw.split(",") if q.strip())
    if not names:
        raise ValueError(raw)
    return names


@dataclass(frozen=True)
class WorkerSettings:
    """Everything a worker process needs, read once at start by ``from_env``.

    Celery's own time limits only work on the prefork pool; our workers run ``--pool=solo``,
    so the render loop also enforces ``time_limit_s`` itself between diffusion steps.
    """

    redis_url: str
    storage: StorageSettings
    model_repo: str = "jordand/echo-tts-base"
    ae_repo: str = "jordand/fish-s1-dac-min"
    device: str = "auto"
    dtype: str = "bfloat16"
    ae_dtype: str = "float32"
    hf_token: str | None = None
    queues: tuple[str, ...] = QUEUES
    soft_time_limit_s: float = 600.0
    time_limit_s: float = 660.0
    visibility_timeout_s: float = 3600.0
    job_ttl_s: int = 86_400
    batch_size: int = 4
    # Long text is split into pieces of at most this many UTF-8 bytes. The model fits whatever text
    # it gets into one ~30 s generation (longer text is spoken faster), so a piece should hold
    # ~20 s of speech: 300 bytes is ~20 s of English at ~15 characters/s. The ceiling is the
    # token limit: 768 tokens - BOS - the 5-byte "[S1] " prefix = 762 bytes.
    max_piece_bytes: int = 300
    segment_pause_s: float = 0.25
    latents_cache_size: int = 8
    warmup: bool = True
    storage_retries: int = 5
    restore_interval_s: float = 10.0  # how often a worker re-queues deliveries older than the visibility timeout

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerSettings:
        e = _env(env)
        soft = _positive(e, "ECHO_TASK_SOFT_TIME_LIMIT_S", 600.0)
        hard = _positive(e, "ECHO_TASK_TIME_LIMIT_S", max(660.0, soft + 30))
        if hard <= soft:
            raise SettingsError(f"ECHO_TASK_TIME_LIMIT_S={hard} must exceed ECHO_TASK_SOFT_TIME_LIMIT_S={soft}")
        visibility = _positive(e, "ECHO_VISIBILITY_TIMEOUT_S", max(3600.0, hard * 2))
        if visibility <= hard:
            raise SettingsError(f"ECHO_VISIBILITY_TIMEOUT_S={visibility} must exceed ECHO_TASK_TIME_LIMIT_S={hard}")
        device = _get(e, "ECHO_DEVICE", "auto") or "auto"
        if not device.startswith(DEVICE_PREFIXES):
            raise SettingsError(f"ECHO_DEVICE={device!r} must be auto, cpu, cuda, cuda:N or mps")
        return cls(
            redis_url=_url(e, "ECHO_REDIS_URL", ("redis", "rediss", "unix"), required=True) or "",
            storage=StorageSettings.from_env(e),
            model_repo=_get(e, "ECHO_MODEL_REPO", cls.model_repo) or cls.model_repo,
            ae_repo=_get(e, "ECHO_AE_REPO", cls.ae_repo) or cls.ae_repo,
            device=device,
            dtype=_choice(e, "ECHO_DTYPE", "bfloat16", DTYPES),
            ae_dtype=_choice(e, "ECHO_AE_DTYPE", "float32", DTYPES),
            hf_token=_get(e, "HF_TOKEN"),
            queues=_parsed(e, "ECHO_WORKER_QUEUES", QUEUES, _queues, "a comma-separated list of queue names"),
            soft_time_limit_s=soft,
            time_limit_s=hard,
            visibility_timeout_s=visibility,
            job_ttl_s=_positive_int(e, "ECHO_JOB_TTL_S", 86_400),
            batch_size=_positive_int(e, "ECHO_BATCH_SIZE", 4),
            max_piece_bytes=_bounded_int(e, "ECHO_MAX_PIECE_BYTES", 300, low=32, high=MAX_PIECE_BYTES),
            segment_pause_s=_parsed(e, "ECHO_SEGMENT_PAUSE_S", 0.25, float, "a number"),
            latents_cache_size=_positive_int(e, "ECHO_LATENTS_CACHE_SIZE", 8),
            warmup=_bool(e, "ECHO_WARMUP", True),
            storage_retries=_positive_int(e, "ECHO_STORAGE_RETRIES", 5),
            restore_interval_s=_positive(e, "ECHO_UNACKED_RESTORE_INTERVAL_S", 10.0),
        )
