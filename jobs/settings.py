"""Settings both sides share, and the parsing helpers every settings module uses.

``api/settings.py`` and ``worker/settings.py`` build their typed settings with these helpers, so a
variable is parsed (and its error worded) the same way everywhere. A missing or malformed setting
raises :class:`SettingsError` naming the variable; entry points turn that into exit status 2.
Only the three settings modules read the environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

from jobs.errors import ErrorCode, ServiceError

T = TypeVar("T")
MiB = 1024 * 1024


class SettingsError(ServiceError, ValueError):
    """Raised when an environment setting is missing or malformed; the message names it."""

    code = ErrorCode.INVALID_SETTING


def environ(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def get(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    value = env.get(name, "").strip()
    return value or default


def require(env: Mapping[str, str], name: str) -> str:
    value = get(env, name)
    if value is None:
        raise SettingsError(f"{name} is required but not set")
    return value


def parsed(env: Mapping[str, str], name: str, default: T, parse: Callable[[str], T], what: str) -> T:
    raw = get(env, name)
    if raw is None:
        return default
    try:
        return parse(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not {what}") from None


def positive(env: Mapping[str, str], name: str, default: float) -> float:
    value = parsed(env, name, default, float, "a number")
    if value <= 0:
        raise SettingsError(f"{name}={value} must be > 0")
    return value


def positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = parsed(env, name, default, int, "an integer")
    if value <= 0:
        raise SettingsError(f"{name}={value} must be > 0")
    return value


def bounded_int(env: Mapping[str, str], name: str, default: int, *, low: int, high: int) -> int:
    value = parsed(env, name, default, int, "an integer")
    if not low <= value <= high:
        raise SettingsError(f"{name}={value} must be between {low} and {high}")
    return value


def boolean(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (get(env, name) or "").lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean (true/false)")


def url(env: Mapping[str, str], name: str, schemes: tuple[str, ...], *, required: bool) -> str | None:
    value = require(env, name) if required else get(env, name)
    if value is not None:
        parsed = urlparse(value)
        if parsed.scheme not in schemes or not (parsed.netloc or (parsed.scheme == "unix" and parsed.path)):
            raise SettingsError(f"{name}={value!r} is not a URL ({'/'.join(schemes)}://host[:port])")
    return value


def choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = get(env, name, default) or default
    if value not in choices:
        raise SettingsError(f"{name}={value!r} must be one of {', '.join(choices)}")
    return value


DEFAULT_JOB_TTL_S = 86_400  # result retention: a job record lives this long after its last change
DEFAULT_BOOK_TTL_S = 7 * 86_400  # a book's record lives this long after its last change
REDIS_SCHEMES = ("redis", "rediss", "unix")


def read_redis_url(env: Mapping[str, str]) -> str:
    """ECHO_REDIS_URL: the broker and the job store (required on both sides)."""
    return url(env, "ECHO_REDIS_URL", REDIS_SCHEMES, required=True) or ""


def read_job_ttl_s(env: Mapping[str, str]) -> int:
    """ECHO_JOB_TTL_S: how long job records (and their idempotency keys) are kept; API and worker agree."""
    return positive_int(env, "ECHO_JOB_TTL_S", DEFAULT_JOB_TTL_S)


def read_book_ttl_s(env: Mapping[str, str]) -> int:
    """ECHO_BOOK_TTL_S: how long audiobook records (and their progress counters) are kept."""
    return positive_int(env, "ECHO_BOOK_TTL_S", DEFAULT_BOOK_TTL_S)


# S3 bucket naming rules (general purpose buckets): 3-63 characters of lowercase letters, digits, dots
# and hyphens, starting and ending with a letter or digit; no "..", not an IPv4 address, and none of
# the prefixes and suffixes S3 reserves.
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4 = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", "--x-s3", "--table-s3", ".mrap")


def bucket_name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid S3 bucket name, or None when it is."""
    if not 3 <= len(name) <= 63:
        return f"must be 3 to 63 characters long, not {len(name)}"
    if not _BUCKET_NAME.fullmatch(name):
        return "may hold only lowercase letters, digits, '.' and '-', and must start and end with a letter or digit"
    if ".." in name:
        return "must not hold two adjacent dots"
    if _IPV4.fullmatch(name):
        return "must not be formatted as an IP address"
    if name.startswith(_RESERVED_PREFIXES) or name.endswith(_RESERVED_SUFFIXES):
        return "uses a prefix or suffix that S3 reserves"
    return None


def read_bucket(env: Mapping[str, str], *, s3: bool) -> str:
    """ECHO_S3_BUCKET (default echo-tts); checked against S3's naming rules when S3 is used."""
    bucket = get(env, "ECHO_S3_BUCKET", "echo-tts") or "echo-tts"
    problem = bucket_name_problem(bucket) if s3 else None
    if problem:
        raise SettingsError(f"ECHO_S3_BUCKET={bucket!r} is not a valid S3 bucket name: it {problem}")
    return bucket


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
        e = environ(env)
        endpoint = url(e, "ECHO_S3_ENDPOINT_URL", ("http", "https"), required=False)
        key_id, secret = get(e, "AWS_ACCESS_KEY_ID"), get(e, "AWS_SECRET_ACCESS_KEY")
        if endpoint and (key_id is None) != (secret is None):
            missing = "AWS_SECRET_ACCESS_KEY" if secret is None else "AWS_ACCESS_KEY_ID"
            raise SettingsError(f"{missing} is required when the other AWS key is set")
        expires = positive_int(e, "ECHO_PRESIGN_EXPIRES_S", 3600)
        if expires > 604_800:
            raise SettingsError(f"ECHO_PRESIGN_EXPIRES_S={expires} exceeds the SigV4 maximum of 604800 s")
        chunk = positive_int(e, "ECHO_S3_MULTIPART_CHUNKSIZE", 8 * MiB)
        if chunk < 5 * MiB:
            raise SettingsError(f"ECHO_S3_MULTIPART_CHUNKSIZE={chunk} is below the S3 minimum part size of 5 MiB")
        return cls(
            endpoint_url=endpoint,
            public_endpoint_url=url(e, "ECHO_S3_PUBLIC_ENDPOINT_URL", ("http", "https"), required=False),
            bucket=read_bucket(e, s3=endpoint is not None),
            access_key_id=key_id,
            secret_access_key=secret,
            region=get(e, "AWS_DEFAULT_REGION", "us-east-1") or "us-east-1",
            local_dir=Path(get(e, "ECHO_STORAGE_DIR", "var/storage") or "var/storage").resolve(),
            presign_expires_s=expires,
            multipart_threshold=positive_int(e, "ECHO_S3_MULTIPART_THRESHOLD", 8 * MiB),
            multipart_chunksize=chunk,
        )


WEBHOOK_SECRET_MIN_CHARS = 32


@dataclass(frozen=True)
class WebhookSettings:
    """Webhooks (``jobs/webhooks.py``), read by the API (secret, private addresses) and the workers (all).

    ``secret`` is the operator's master secret ``ECHO_WEBHOOK_SECRET``: each API key's signing secret is
    derived from it (HMAC over the key's name). Unset: webhooks are off (a submission naming one is 422).
    """

    secret: str | None = None
    allow_private: bool = False  # deliver to private, loopback, link-local and reserved addresses too
    progress_interval_s: float = 5.0  # at most one progress event per job or book this often
    attempts: int = 6  # deliveries of one event before it is given up (progress: always 1)
    retry_base_s: float = 5.0  # first retry after this; each next one after 3x the previous
    timeout_s: float = 10.0  # connect + read timeout of one delivery

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WebhookSettings:
        e = environ(env)
        secret = get(e, "ECHO_WEBHOOK_SECRET")
        if secret is not None and len(secret) < WEBHOOK_SECRET_MIN_CHARS:
            raise SettingsError(
                f"ECHO_WEBHOOK_SECRET has {len(secret)} characters; it needs at least {WEBHOOK_SECRET_MIN_CHARS} "
                "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return cls(
            secret=secret,
            allow_private=boolean(e, "ECHO_WEBHOOK_ALLOW_PRIVATE", False),
            progress_interval_s=positive(e, "ECHO_WEBHOOK_PROGRESS_INTERVAL_S", cls.progress_interval_s),
            attempts=bounded_int(e, "ECHO_WEBHOOK_ATTEMPTS", cls.attempts, low=1, high=20),
            retry_base_s=positive(e, "ECHO_WEBHOOK_RETRY_BASE_S", cls.retry_base_s),
            timeout_s=positive(e, "ECHO_WEBHOOK_TIMEOUT_S", cls.timeout_s),
        )
