"""Speaker conditioning with a stored voice vs re-encoding its reference, on the tiny checkpoint.

A stored voice is encoded once (``Pipeline.encode_speaker``: read, resample, S1-DAC encode, PCA) and
its latents kept (``SpeakerLatents.to_bytes``); every later job loads them (``from_bytes``). Times both
for a ``--seconds`` reference (default 30 s of audio, the model's reference window is up to 300 s),
best of ``--repeats``, and prints JSON with ``voice_cache_speedup`` = re-encode ÷ load.

    .venv/bin/python bench/bench_voice_cache.py [--seconds 30] [--repeats 3] [--checkpoint DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from echo_tts.pipeline import Pipeline
from echo_tts.speaker import SpeakerLatents
from echo_tts.testing import AE_SUBDIR, MODEL_SUBDIR, make_checkpoint


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def reference_wav(seconds: float, rate: int = 44_100) -> bytes:
    """A voiced-sounding test signal: a few harmonics with a slow vibrato, as WAV bytes."""
    t = np.arange(int(seconds * rate)) / rate
    pitch = 140 + 20 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    signal = sum(0.2 / k * np.sin(k * phase) for k in range(1, 6))
    out = io.BytesIO()
    sf.write(out, signal.astype(np.float32), rate, format="WAV")
    return out.getvalue()


def measure(checkpoint: Path, seconds: float, repeats: int) -> dict[str, Any]:
    pipe = Pipeline.from_pretrained(
        str(checkpoint / MODEL_SUBDIR), str(checkpoint / AE_SUBDIR), device="cpu", dtype="float32"
    )
    wav = reference_wav(seconds)
    encode_s, latents = best_of(lambda: pipe.encode_speaker(wav), repeats)
    stored = latents.to_bytes()
    load_s, _ = best_of(lambda: SpeakerLatents.from_bytes(stored), max(repeats, 5))
    return {
        "reference_s": seconds,
        "encode_s": round(encode_s, 4),
        "load_stored_s": round(load_s, 6),
        "stored_bytes": len(stored),
        "voice_cache_speedup": round(encode_s / load_s, 1),
        "model": "tiny checkpoint, cpu, float32",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoint", type=Path, default=None, help="tiny checkpoint dir (made when absent)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or Path(tmp)
        if not (checkpoint / MODEL_SUBDIR).exists():
            make_checkpoint(checkpoint, size="tiny")
        print(json.dumps(measure(checkpoint, args.seconds, args.repeats), indent=2))


if __name__ == "__main__":
    main()
