"""Small helpers shared by the Redis record stores (:mod:`jobs.jobstore`, :mod:`jobs.voicestore`)."""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import UTC, datetime
from typing import Any


def iso(ts: float | None) -> str | None:
    """Epoch seconds → ISO-8601 UTC with a ``Z`` (None stays None)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fingerprint(body: Any) -> str:
    """A stable sha256 of a JSON-able body (key order does not matter)."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def new_id(prefix: str) -> str:
    """An unguessable id: ``prefix_`` + 128 random bits in hex."""
    return f"{prefix}_{secrets.token_hex(16)}"


def opt_float(value: str | None) -> float | None:
    """A float read back from a Redis hash field, None when absent or empty."""
    return None if value in (None, "") else float(value)


def loads(value: str | None) -> Any:
    """JSON read back from a Redis hash field, None when absent or empty."""
    return json.loads(value) if value else None


class RecordTimes:
    """The ISO-8601 views of a record's epoch timestamps (job and book records alike)."""

    created_ts: float
    started_ts: float | None
    finished_ts: float | None

    @property
    def created_at(self) -> str:
        return iso(self.created_ts) or ""

    @property
    def started_at(self) -> str | None:
        return iso(self.started_ts)

    @property
    def finished_at(self) -> str | None:
        return iso(self.finished_ts)
