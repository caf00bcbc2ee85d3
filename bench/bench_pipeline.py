"""End-to-end time for one sentence on the tiny checkpoint (text -> cropped waveform), as JSON.

Writes the tiny checkpoint (``echo_tts.testing.make_checkpoint``) to a temporary directory,
loads it with ``Pipeline.from_pretrained`` and times ``synthesize`` (40 steps, 640 latents,
the default preset, no reference) and, separately, encoding the result to MP3. Reports the
best of ``--repeats`` runs per thread count, with the real-time factor (render seconds per
second of audio).

    .venv/bin/python bench/bench_pipeline.py --threads 1 2 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from echo_tts.audio import encode_audio
from echo_tts.config import DEFAULT_PRESET, sampler_preset
from echo_tts.pipeline import Pipeline
from echo_tts.testing import AE_SUBDIR, MODEL_SUBDIR, make_checkpoint

SENTENCE = "The quick brown fox jumps over the lazy dog, then takes a well-earned nap in the sun."


def _best(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def run(threads: int, repeats: int, dtype: str, root: Path) -> dict:
    torch.set_num_threads(threads)
    start = time.perf_counter()
    pipe = Pipeline.from_pretrained(root / MODEL_SUBDIR, root / AE_SUBDIR, dtype=dtype)
    load_s = time.perf_counter() - start
    pipe.synthesize("Warm up.", None, DEFAULT_PRESET, seed=0)
    synth_s, result = _best(lambda: pipe.synthesize(SENTENCE, None, DEFAULT_PRESET, seed=0), repeats)
    mp3_s, _ = _best(lambda: encode_audio(result.samples, result.sample_rate, "mp3"), repeats)
    audio_s = result.metadata["duration_s"]
    return {
        "threads": threads,
        "dtype": dtype,
        "load_s": round(load_s, 3),
        "synthesize_s": round(synth_s, 3),
        "encode_mp3_s": round(mp3_s, 3),
        "audio_s": round(audio_s, 3),
        "real_time_factor": round(synth_s / audio_s, 4) if audio_s else None,
        "num_latents": result.metadata["num_latents"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="echo-tts-bench-") as tmp:
        root = make_checkpoint(tmp, size="tiny", seed=0)
        runs = [run(n, args.repeats, args.dtype, Path(root)) for n in args.threads]
    report = {
        "bench": "pipeline_tiny_one_sentence",
        "sentence_chars": len(SENTENCE),
        "preset": DEFAULT_PRESET,
        "steps": sampler_preset(DEFAULT_PRESET).num_steps,
        "sequence_length": sampler_preset(DEFAULT_PRESET).sequence_length,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpus": len(os.sched_getaffinity(0)),
        "runs": runs,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
