"""The API's settings, read once from the environment (the only module of ``api`` that reads it).

Storage, Redis and job-retention settings are the shared ones of :mod:`jobs.settings`, so both sides
agree on the bucket, the key layout and the TTL. A missing or malformed setting raises
:class:`SettingsError` naming it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from jobs.logs import FORMATS as LOG_FORMATS
from jobs.logs import LEVELS as LOG_LEVELS
from jobs.settings import (
    DEFAULT_BOOK_TTL_S,
    DEFAULT_JOB_TTL_S,
    MiB,
    SettingsError,
    StorageSettings,
    WebhookSettings,
    bounded_int,
    choice,
    environ,
    get,
    positive,
    positive_int,
    read_book_ttl_s,
    read_job_ttl_s,
    read_redis_url,
)

__all__ = ["ApiSettings", "SettingsError", "parse_api_keys"]


_MAX_QUOTA = 10_000
_KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


_HASHED_KEY = re.compile(r"^sha256:[0-9a-fA-F]{64}$")


def parse_api_keys(raw: str) -> dict[str, str]:
    """``name:token,name:token`` → ``{token: name}``; names are the owners of jobs and voices. A token
    may be given hashed, ``name:sha256:<64 hex>`` (``python -m api hash-key``): it is kept as
    ``sha256:<hex>`` and :mod:`api.auth` compares the presented token's SHA-256 with it."""
    keys: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in raw.split(","))):
        name, sep, token = pair.partition(":")
        if token.startswith("sha256:"):
            if not _HASHED_KEY.match(token):
                raise SettingsError(
                    f"ECHO_API_KEYS: the hashed key of {name[:16]!r} must be sha256: and 64 hex digits "
                    "(python -m api hash-key)"
                )
            token = token.lower()
        if not sep or not _KEY_NAME.match(name) or len(token) < 8 or any(c.isspace() for c in token):
            raise SettingsError(
                "ECHO_API_KEYS must be comma-separated name:token pairs (name: letters, digits, "
                f"_.@-; token: 8+ characters without spaces); bad pair starts with {name[:16]!r}"
            )
        if token in keys:
            raise SettingsError(f"ECHO_API_KEYS gives the same token to {keys[token]!r} and {name!r}")
        keys[token] = name
    for token, name in keys.items():  # one token given both plain and hashed: two owners for one secret
        twin = keys.get("sha256:" + hashlib.sha256(token.encode()).hexdigest())
        if not token.startswith("sha256:") and twin is not None:
            raise SettingsError(f"ECHO_API_KEYS gives the same token to {twin!r} (hashed) and {name!r} (plain)")
    if not keys:
        raise SettingsError("ECHO_API_KEYS is set but holds no name:token pair")
    return keys


def parse_voice_aliases(raw: str) -> dict[str, str]:
    """``alloy=narrator,nova=voice_…`` → ``{"alloy": "narrator", ...}`` (aliases compared without case)."""
    aliases: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in raw.split(","))):
        alias, sep, target = (part.strip() for part in pair.partition("="))
        if not sep or not alias or not target or any(c.isspace() for c in alias):
            raise SettingsError(
                f"ECHO_VOICE_ALIASES must be comma-separated alias=voice pairs (e.g. alloy=narrator); bad pair {pair!r}"
            )
        aliases[alias.casefold()] = target
    return aliases


def _queue_timeout(env: Mapping[str, str], job_ttl_s: int) -> float:
    """ECHO_QUEUE_TIMEOUT_S: the queue deadline; it must not outlive the record that reports it."""
    value = positive(env, "ECHO_QUEUE_TIMEOUT_S", ApiSettings.queue_timeout_s)
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
    job_ttl_s: int = DEFAULT_JOB_TTL_S  # record retention; the worker reads the same ECHO_JOB_TTL_S
    queue_timeout_s: float = 3600.0  # a job still queued this long after submission expires unrendered
    book_ttl_s: int = DEFAULT_BOOK_TTL_S  # audiobook record retention; the workers read the same setting
    voice_aliases: dict[str, str] = field(default_factory=dict)  # lower-case alias -> voice id or name
    default_voice: str | None = None  # what unknown OpenAI voice names use; None: they are 404
    max_book_chars: int = 2_000_000  # characters of text in one book (about 35 hours of speech)
    speech_timeout_s: float = 120.0  # how long POST /v1/audio/speech waits for its job before 504
    # per-key quotas (api/quotas.py), 0 = off: requests per minute; jobs / books queued or running
    rate_limit_per_min: int = 0
    max_queued_jobs: int = 0
    max_queued_books: int = 0
    log_format: str = "json"  # ECHO_LOG_FORMAT: json (one object per line) or text
    log_level: str = "INFO"  # ECHO_LOG_LEVEL
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)  # the secret, private addresses

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiSettings:
        e = environ(env)
        voices = get(e, "ECHO_VOICES_DIR")
        if voices and not Path(voices).is_dir():
            raise SettingsError(f"ECHO_VOICES_DIR={voices!r} is not a directory")
        keys = get(e, "ECHO_API_KEYS")
        ttl = read_job_ttl_s(e)
        return cls(
            redis_url=read_redis_url(e),
            storage=StorageSettings.from_env(e),
            api_keys=parse_api_keys(keys) if keys else None,
            voices_dir=Path(voices).resolve() if voices else None,
            max_text_chars=positive_int(e, "ECHO_MAX_TEXT_CHARS", cls.max_text_chars),
            max_upload_bytes=positive_int(e, "ECHO_MAX_UPLOAD_BYTES", cls.max_upload_bytes),
            max_reference_seconds=positive(e, "ECHO_MAX_REFERENCE_SECONDS", cls.max_reference_seconds),
            max_metadata_bytes=positive_int(e, "ECHO_MAX_METADATA_BYTES", cls.max_metadata_bytes),
            job_ttl_s=ttl,
            queue_timeout_s=_queue_timeout(e, ttl),
            speech_timeout_s=positive(e, "ECHO_SPEECH_TIMEOUT_S", cls.speech_timeout_s),
            book_ttl_s=read_book_ttl_s(e),
            max_book_chars=positive_int(e, "ECHO_MAX_BOOK_CHARS", cls.max_book_chars),
            voice_aliases=parse_voice_aliases(get(e, "ECHO_VOICE_ALIASES") or ""),
            default_voice=get(e, "ECHO_DEFAULT_VOICE"),
            rate_limit_per_min=bounded_int(e, "ECHO_RATE_LIMIT_PER_MIN", 0, low=0, high=1_000_000),
            # a submission walks the key's active records (one Lua step): keep that walk short
            max_queued_jobs=bounded_int(e, "ECHO_MAX_QUEUED_JOBS", 0, low=0, high=_MAX_QUOTA),
            max_queued_books=bounded_int(e, "ECHO_MAX_QUEUED_BOOKS", 0, low=0, high=_MAX_QUOTA),
            log_format=choice(e, "ECHO_LOG_FORMAT", "json", LOG_FORMATS),
            log_level=choice(e, "ECHO_LOG_LEVEL", "INFO", LOG_LEVELS),
            webhooks=WebhookSettings.from_env(e),
        )
