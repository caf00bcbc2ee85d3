"""A long job's rendered pieces, kept in storage until the job's audio is stored.

Why: a job whose delivery is repeated — its worker killed, or Redis gone long enough for the broker to
hand the message out again — used to render every piece again. With the pieces kept under
``jobs/{id}/pieces/{digest}.f32`` the next delivery renders only those not finished; the digest
(``contract.segment_digest``) covers the model revision, the voice, the sampler settings, the piece's
seed and text, so a piece is reused only where it would render the same.

Format: one JSON line ``{"sample_rate", "metadata"}``, then the samples as float32 little-endian. Exact,
not re-quantised: a job finished from kept pieces is bit for bit the job rendered in one go. Keeping is
best effort (a storage error only costs the reuse) and the runner deletes the pieces once the job is
final; the bucket's lifecycle rule for ``jobs/`` removes any left behind.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jobs.contract import SynthesisRequest, job_piece_key, job_pieces_prefix, segment_digest
from jobs.storage import Storage, StorageError

from .render import SynthResult, sampler_config

log = logging.getLogger(__name__)


@dataclass
class KeptPiece:
    """A piece read back from storage, shaped like the sampler's result."""

    samples: np.ndarray
    sample_rate: int
    metadata: dict[str, Any] = field(default_factory=dict)


class JobPieces:
    """The kept pieces of one job (``render(..., kept=JobPieces(...))`` reads and writes them)."""

    def __init__(self, storage: Storage, request: SynthesisRequest, model_revision: str) -> None:
        self.storage, self.job_id, self.model_revision = storage, request.job_id, model_revision
        self.voice = f"id:{request.voice_id}" if request.voice_id else ("upload" if request.speaker_key else "none")
        self.settings = dataclasses.asdict(sampler_config(request))
        self._stored: set[str] | None = None  # the keys kept so far, listed once per delivery

    def _key(self, text: str, seed: int) -> str:
        digest = segment_digest(
            model_revision=self.model_revision, voice=self.voice, settings=self.settings, seed=seed, text=text
        )
        return job_piece_key(self.job_id, digest)

    def _kept_keys(self) -> set[str]:
        """One listing per delivery instead of a lookup per piece: a first delivery finds nothing."""
        if self._stored is None:
            try:
                self._stored = set(self.storage.list_keys(job_pieces_prefix(self.job_id)))
            except StorageError as exc:
                log.warning("job %s: kept pieces could not be listed (%s); rendering them all", self.job_id, exc)
                self._stored = set()
        return self._stored

    def get(self, text: str, seed: int) -> KeptPiece | None:
        """The kept piece, or None (never kept, or unreadable: then it is rendered again)."""
        key = self._key(text, seed)
        if key not in self._kept_keys():
            return None
        try:
            data = self.storage.get_bytes(key)
        except StorageError as exc:  # ObjectNotFound included: deleted since the listing
            log.warning("job %s: a kept piece could not be read (%s); rendering it again", self.job_id, exc)
            return None
        header, _, body = data.partition(b"\n")
        described = json.loads(header)
        samples = np.frombuffer(body, dtype="<f4").astype(np.float32)
        return KeptPiece(samples, int(described["sample_rate"]), dict(described["metadata"]))

    def put(self, text: str, seed: int, result: SynthResult) -> None:
        header = json.dumps({"sample_rate": int(result.sample_rate), "metadata": result.metadata}).encode()
        body = np.asarray(result.samples, dtype="<f4").tobytes()
        try:
            self.storage.put_bytes(
                self._key(text, seed), header + b"\n" + body, content_type="application/octet-stream"
            )
        except StorageError as exc:
            log.warning("job %s: a rendered piece could not be kept (%s)", self.job_id, exc)


def clear_pieces(storage: Storage, job_id: str) -> None:
    """Delete a job's kept pieces (its audio is stored, or it ended otherwise); best effort."""
    try:
        storage.delete_prefix(job_pieces_prefix(job_id))
    except StorageError as exc:
        log.warning("job %s: kept pieces not deleted (%s); the jobs/ lifecycle rule will", job_id, exc)
