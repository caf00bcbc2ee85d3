"""The API's settings, read once from the environment (the only module of ``api`` that reads it).

Storage settings are the worker's (:class:`worker.settings.StorageSettings`), so both sides agree on
the bucket and the key layout. A missing or malformed setting raises :class:`SettingsError` naming it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from worker.settings import SettingsError, StorageSettings

__all__ = ["ApiSettings", "SettingsError", "parse_api_keys"]

MiB = 1024 * 1024
_KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


def parse_api_keys(raw: str) -> dict[str, str]:
    """``name:token,name:token`` → ``{token: name}``; names are the owners of jobs and voices."""
    keys: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in raw.split(","))):
        name, sep, token = pair.partition(":")
        if not sep or not _KEY_NAME.match(name) or len(token) < 8 or any(c.isspace() for c in token):
            raise SettingsError("ECHO_API_KEYS must be comma-separated name:token pairs (name: letters, digits, "
                                f"_.@-; token: 8+ characters without spaces); bad pair starts with {name[:16]!r}")
        if token in keys:
            raise SettingsError(f"ECHO_API_KEYS gives the same token to {keys[token]!r} and {name!r}")
        keys[token] = name
    if not keys:
        raise SettingsError("ECHO_API_KEYS is set but holds no name:token pair")
    return keys


def _number(env: Mapping[str, str], name: str, default: float, *, integer: bool = True) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not {'an integer' if integer else 'a number'}") from None
    if value <= 0:
        raise SettingsError(f"{name}={raw!r} must be > 0")
    return value


def _queue_timeout(env: Mapping[str, str], job_ttl_s: int) -> float:
    """ECHO_QUEUE_TIMEOUT_S: the queue deadline; it must not outlive the record that reports it."""
    value = _number(env, "ECHO_QUEUE_TIMEOUT_S", ApiSettings.queue_timeout_s, integer=False)
    if value > job_ttl_s:
        raise SettingsError(f"ECHO_QUEUE_TIMEOUT_S={value:g} must not exceed ECHO_JOB_TTL_S={job_ttl_s}")
    return value


@dataclass(frozen=True)
class ApiSettings:
    """Everything the API process needs; built once by :meth:`from_env` in ``create_app``."""

    redis_url: str
    storage: StorageSettings
    api_keys: dict[str, str] | None = None  # token -> owner name; None: auth off (local use only)
    voices_dir: Path | None = None
    max_text_chars: int = 20_000  # long text is split by the worker, never truncated
    max_upload_bytes: int = 20 * MiB  # the whole request body (Flask MAX_CONTENT_LENGTH)
    max_reference_seconds: float = 300.0  # echo_tts reads at most 300 s of a reference
    max_metadata_bytes: int = 4096
    job_ttl_s: int = 86_400  # record retention; the worker reads the same ECHO_JOB_TTL_S
    queue_timeout_s: float = 3600.0  # a job still queued this long after submission expires unrendered
    speech_timeout_s: float = 120.0  # how long POST /v1/audio/speech waits for its job before 504

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiSettings:
        e = os.environ if env is None else env
        redis_url = e.get("ECHO_REDIS_URL", "").strip()
        if not redis_url:
            raise SettingsError("ECHO_REDIS_URL is required but not set")
        if urlparse(redis_url).scheme not in ("redis", "rediss", "unix"):
            raise SettingsError(f"ECHO_REDIS_URL={redis_url!r} is not a redis://, rediss:// or unix:// URL")
        voices = e.get("ECHO_VOICES_DIR", "").strip()
        if voices and not Path(voices).is_dir():
            raise SettingsError(f"ECHO_VOICES_DIR={voices!r} is not a directory")
        keys = e.get("ECHO_API_KEYS", "").strip()
        return cls(
            redis_url=redis_url,
            storage=StorageSettings.from_env(e),
            api_keys=parse_api_keys(keys) if keys else None,
            voices_dir=Path(voices).resolve() if voices else None,
            max_text_chars=int(_number(e, "ECHO_MAX_TEXT_CHARS", cls.max_text_chars)),
            max_upload_bytes=int(_number(e, "ECHO_MAX_UPLOAD_BYTES", cls.max_upload_bytes)),
            max_reference_seconds=_number(e, "ECHO_MAX_REFERENCE_SECONDS", cls.max_reference_seconds, integer=False),
            max_metadata_bytes=int(_number(e, "ECHO_MAX_METADATA_BYTES", cls.max_metadata_bytes)),
            job_ttl_s=int(_number(e, "ECHO_JOB_TTL_S", cls.job_ttl_s)),
            queue_timeout_s=_queue_timeout(e, int(_number(e, "ECHO_JOB_TTL_S", cls.job_ttl_s))),
            speech_timeout_s=_number(e, "ECHO_SPEECH_TIMEOUT_S", cls.speech_timeout_s, integer=False),
        )
