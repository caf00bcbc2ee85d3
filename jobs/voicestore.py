"""Stored voices in Redis (torch-free, Celery-free): a reference clip whose speaker latents a worker
encodes once.

Layout: ``{p}:voice:{id}`` hash (no TTL: voices live until deleted) · ``{p}:voices:{owner}`` sorted set
by created time. Operator voices (files in ``ECHO_VOICES_DIR``) belong to :data:`OPERATOR_OWNER`, a name
no API key can have, and are visible to every key by their id (the file's stem).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import redis

from jobs.contract import VoiceState
from jobs.records import iso, loads, new_id, opt_float

OPERATOR_OWNER = ":operator"  # key names come from "name:token" pairs, so none contains ':'

# Write a fresh pending record unless the same content (ARGV[1]) is already pending or ready.
_REGISTER = """
local sha = redis.call('HGET', KEYS[1], 'sha256')
local status = redis.call('HGET', KEYS[1], 'status')
if sha == ARGV[1] and status ~= 'failed' then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[4])
return 1
"""
# Update an existing voice only (never resurrect a deleted one as a partial hash).
_UPDATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""


@dataclass(frozen=True)
class VoiceRecord:
    id: str
    owner: str
    name: str
    status: VoiceState
    reference_key: str
    created_ts: float
    updated_ts: float
    latents_key: str | None = None
    sha256: str | None = None
    error: dict[str, Any] | None = None
    info: dict[str, Any] | None = None

    @property
    def operator(self) -> bool:
        return self.owner == OPERATOR_OWNER

    @property
    def created_at(self) -> str:
        return iso(self.created_ts) or ""

    @property
    def updated_at(self) -> str:
        return iso(self.updated_ts) or ""

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> VoiceRecord:
        return cls(
            id=h["id"],
            owner=h["owner"],
            name=h.get("name", ""),
            status=VoiceState(h["status"]),
            reference_key=h["reference_key"],
            created_ts=float(h["created_ts"]),
            updated_ts=opt_float(h.get("updated_ts")) or float(h["created_ts"]),
            latents_key=h.get("latents_key") or None,
            sha256=h.get("sha256") or None,
            error=loads(h.get("error")),
            info=loads(h.get("info")),
        )


class VoiceStore:
    """Voice records; ``client`` must use ``decode_responses=True``."""

    def __init__(self, client: redis.Redis, *, prefix: str = "echo", clock: Callable[[], float] = time.time) -> None:
        self.r: Any = client  # redis-py's stubs ignore decode_responses: values are str here
        self.prefix, self.clock = prefix, clock
        self._register = client.register_script(_REGISTER)
        self._update = client.register_script(_UPDATE)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> VoiceStore:
        return cls(redis.Redis.from_url(url, decode_responses=True), **kwargs)

    def _key(self, voice_id: str) -> str:
        return f"{self.prefix}:voice:{voice_id}"

    def _index(self, owner: str) -> str:
        return f"{self.prefix}:voices:{owner}"

    def _fields(self, voice_id: str, owner: str, name: str, reference_key: str, sha256: str | None) -> dict[str, str]:
        now = repr(self.clock())
        return {
            "id": voice_id,
            "owner": owner,
            "name": name,
            "status": VoiceState.PENDING.value,
            "reference_key": reference_key,
            "sha256": sha256 or "",
            "created_ts": now,
            "updated_ts": now,
        }

    def create(
        self, owner: str, name: str, reference_key: str, *, voice_id: str | None = None, sha256: str | None = None
    ) -> VoiceRecord:
        """A new pending voice owned by ``owner`` (the caller enqueues the encode task)."""
        voice_id = voice_id or new_id("voice")
        fields = self._fields(voice_id, owner, name, reference_key, sha256)
        pipe = self.r.pipeline()
        pipe.hset(self._key(voice_id), mapping=fields)
        pipe.zadd(self._index(owner), {voice_id: float(fields["created_ts"])})
        pipe.execute()
        return VoiceRecord.from_hash(fields)

    def register_operator(self, voice_id: str, name: str, reference_key: str, sha256: str) -> tuple[VoiceRecord, bool]:
        """Register an operator voice; returns ``(record, changed)``. Unchanged content that is pending
        or ready is left alone (``changed`` False), so many API processes may register at once and only
        one of them enqueues the encode task."""
        fields = self._fields(voice_id, OPERATOR_OWNER, name, reference_key, sha256)
        pairs = [x for kv in fields.items() for x in kv]
        changed = bool(
            self._register(
                keys=[self._key(voice_id), self._index(OPERATOR_OWNER)], args=[sha256, fields["created_ts"], *pairs]
            )
        )
        record = self.get(voice_id)
        assert record is not None  # just written, and operator voices are never deleted
        return record, changed

    def get(self, voice_id: str, *, owner: str | None = None) -> VoiceRecord | None:
        """The voice, or None when unknown or neither ``owner``'s nor an operator voice."""
        h = self.r.hgetall(self._key(voice_id))
        if not h:
            return None
        record = VoiceRecord.from_hash(h)
        if owner is not None and record.owner != owner and not record.operator:
            return None
        return record

    def find(self, voice: str, *, owner: str) -> VoiceRecord | None:
        """The voice a request names: ``owner``'s or an operator voice by id, or an operator voice by its
        file name (``narrator.wav`` names ``narrator``). None when nothing matches."""
        return self.get(voice, owner=owner) or (self.get(PurePath(voice).stem, owner=owner) if "." in voice else None)

    def find_by_name(self, name: str, *, owner: str) -> VoiceRecord | None:
        """``owner``'s voice, else an operator voice, whose name (or file name without extension) is
        ``name``, ignoring case; the newest of the owner's wins."""
        wanted = name.casefold()
        for record in self.list_voices(owner):  # the owner's first, newest first, then the operator's
            if wanted in (record.name.casefold(), PurePath(record.name).stem.casefold()):
                return record
        return None

    def list_voices(self, owner: str) -> list[VoiceRecord]:
        """``owner``'s voices, newest first, then the operator voices."""
        ids = self.r.zrevrange(self._index(owner), 0, -1) + self.r.zrange(self._index(OPERATOR_OWNER), 0, -1)
        pipe = self.r.pipeline(transaction=False)
        for voice_id in ids:
            pipe.hgetall(self._key(voice_id))
        return [VoiceRecord.from_hash(h) for h in pipe.execute() if h]

    def delete(self, voice_id: str) -> bool:
        """Remove the record (the caller removes its storage objects). False when it did not exist."""
        h = self.r.hgetall(self._key(voice_id))
        if not h:
            return False
        pipe = self.r.pipeline()
        pipe.delete(self._key(voice_id))
        pipe.zrem(self._index(h["owner"]), voice_id)
        pipe.execute()
        return True

    def mark_ready(self, voice_id: str, latents_key: str, info: dict[str, Any] | None = None) -> bool:
        """pending → ready once the worker stored the latents (``info``: e.g. duration_s, num_latents)."""
        return self._set(
            voice_id,
            {"status": VoiceState.READY.value, "latents_key": latents_key, "info": json.dumps(info or {}), "error": ""},
        )

    def mark_failed(self, voice_id: str, code: str, message: str) -> bool:
        """pending → failed with an error code and message (e.g. the reference is not audio)."""
        return self._set(
            voice_id, {"status": VoiceState.FAILED.value, "error": json.dumps({"code": code, "message": message})}
        )

    def _set(self, voice_id: str, fields: dict[str, str]) -> bool:
        fields = {**fields, "updated_ts": repr(self.clock())}
        return bool(self._update(keys=[self._key(voice_id)], args=[x for kv in fields.items() for x in kv]))
