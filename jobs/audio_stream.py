"""A streamed job's audio, chunk by chunk, from the worker that renders it to the API that answers with it.

Why Redis: the worker has no channel to the API but the job store, and a chunk must reach whichever API
process holds the client's connection. One Redis stream per job (``contract.job_audio_stream_key``); each
entry is one chunk of the finished track, in order:

    seq    0, 1, 2, …: the chunk's place in the track (one chunk per rendered piece)
    rate   the chunk's sample rate (Hz)
    audio  the chunk's bytes, base64 (the stores' clients decode replies as text): 16-bit little-endian
           samples for pcm and wav, bare MPEG frames for mp3 (no ID3 tag or Xing header, so chunks
           simply follow each other)
    end    "1" on the last entry, which carries no audio: the track is complete

Concatenated in ``seq`` order the chunks are the whole track. A re-delivered job (its worker died) renders
again from the first piece and appends the same chunks again (same seeds, same samples): readers skip a
``seq`` they already have, so nothing is sent twice and nothing is missed. The stream expires
``STREAM_TTL_S`` after its last write; nobody has to delete it.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from typing import Any

import redis

from jobs.contract import job_audio_stream_key

STREAM_TTL_S = 600  # a reader that has not caught up within ten minutes reads the stored file instead


@dataclass(frozen=True)
class AudioChunk:
    """One entry of a job's audio stream (``end``: the track is complete, ``data`` is empty)."""

    entry_id: str
    seq: int
    rate: int
    data: bytes
    end: bool


class AudioStream:
    """Appends and reads the chunks of streamed jobs on the job store's Redis connection."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def publish(self, job_id: str, seq: int, data: bytes, rate: int) -> None:
        """Append chunk ``seq`` (and push the stream's expiry back)."""
        self._append(job_id, {"seq": seq, "rate": rate, "audio": base64.b64encode(data).decode("ascii")})

    def finish(self, job_id: str, chunks: int, rate: int) -> None:
        """Mark the track complete after ``chunks`` chunks."""
        self._append(job_id, {"seq": chunks, "rate": rate, "audio": "", "end": "1"})

    def _append(self, job_id: str, fields: dict[str, str | int]) -> None:
        key = job_audio_stream_key(job_id)
        pipe = self.r.pipeline(transaction=False)
        pipe.xadd(key, fields)  # type: ignore[arg-type]
        pipe.expire(key, STREAM_TTL_S)
        pipe.execute()

    def read(self, job_id: str, after: str = "0-0", *, block_ms: int = 250) -> list[AudioChunk]:
        """The entries after entry id ``after``, waiting up to ``block_ms`` for the first one."""
        reply: Any = self.r.xread({job_audio_stream_key(job_id): after}, block=block_ms or None, count=64)
        chunks: list[AudioChunk] = []
        for _key, entries in reply or []:
            for entry_id, fields in entries:
                chunks.append(
                    AudioChunk(
                        entry_id=_text(entry_id),
                        seq=int(fields["seq"]),
                        rate=int(fields["rate"]),
                        data=base64.b64decode(fields.get("audio") or ""),
                        end=fields.get("end") == "1",
                    )
                )
        return chunks


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def streaming_wav_header(sample_rate: int) -> bytes:
    """A 44-byte RIFF/WAVE header for 16-bit mono PCM of unknown length: both sizes are 0xFFFFFFFF, the
    convention players and ffmpeg read as "until the stream ends"."""
    unknown = 0xFFFFFFFF
    return (
        b"RIFF"
        + struct.pack("<I", unknown)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", unknown)
    )
