"""``python -m bench [--quick] [--device cpu|cuda]``: the benchmarks side by side in one run.

Runs each benchmark script as its own process (each prints one JSON object), prints a table of the
figures issue 10 tracks, and ends with one line ``RESULT {json}``:

- ``canvas_speedup_book``, ``canvas_speedup_short``: sampler time with the fixed 640-latent canvas ÷
  with fitted canvases, same segments and seeds (``bench_canvas.py``; mid width on the CPU);
- ``batch_throughput_gain``: book segments per second with ``ECHO_BOOK_GROUP_SIZE=4`` ÷ with 1,
  through the whole service on the tiny checkpoint (``bench_books.py``);
- ``book_audio_s_per_s``: audio seconds per wall second for that book, submit to M4B;
- ``voice_cache_speedup``: re-encoding a 30 s reference ÷ loading its stored latents;
- ``queue_overhead_p50_ms``, ``queue_overhead_p99_ms``: submit-to-start with an idle worker over real
  HTTP, Redis and Celery; ``api_submits_per_s``: accepted submits per second from concurrent clients;
  ``speech_first_audio_s``: time to the first audio byte of streamed speech for a ~3,600-character text,
  and ``speech_first_audio_speedup``: the whole-file answer's time to its first byte ÷ that;
  ``job_batch_gain``: short jobs per second with cross-job batching on ÷ off, a burst submitted at once,
  and ``mean_jobs_per_call`` with it on (``bench_service.py``);
- ``device`` and the model widths and batch sizes each figure was taken at.

``--quick`` samples fewer segments and jobs (about 10 minutes on 2 CPU cores); ``--device cuda`` runs
the canvas figures at full size (width 2048, 24 layers, bf16, 40 steps) on the GPU, and
``bench_gpu_efficiency.py`` there: ``fraction_of_peak_batch_{1,4,8,16}``, ``peak_memory_gib_batch_*``,
``gpu_batch_gain_8`` and ``ten_hour_book_sampling_min``. To spend a short device lease on those alone,
run ``python bench/bench_gpu_efficiency.py --device cuda``. Numbers depend on the machine and its load;
report them with the command line. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
TARGETS = {  # issue 10, on the 2-core CPU
    "canvas_speedup_book": (">=", 1.2),
    "canvas_speedup_short": (">=", 3.0),
    "batch_throughput_gain": (">=", 0.95),
    "voice_cache_speedup": (">=", 5.0),
    "queue_overhead_p50_ms": ("<=", 15.0),
    "queue_overhead_p99_ms": ("<=", 60.0),
    "api_submits_per_s": (">=", 300.0),
    # on a GPU (--device cuda), full size, bf16, random weights
    "fraction_of_peak_batch_8": (">=", 0.5),
    "gpu_batch_gain_8": (">=", 2.5),
    "ten_hour_book_sampling_min": ("<=", 6.0),
}


def run(script: str, *args: str) -> dict[str, Any]:
    """Run ``bench/{script}`` and return the JSON object it printed (its last top-level object)."""
    began = time.monotonic()
    done = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{script} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    start = done.stdout.find("{")
    result = json.loads(done.stdout[start:])
    result["_wall_s"] = round(time.monotonic() - began, 1)
    print(f"  {script}: {result['_wall_s']} s", file=sys.stderr)
    return dict(result)


def plans(quick: bool, device: str) -> dict[str, list[str]]:
    cuda = device == "cuda"
    canvas = ["--device", device]
    if cuda:
        canvas += ["--model-size", "2048", "--num-layers", "24", "--num-heads", "16", "--steps", "40", "--threads", "0"]
    if quick:
        canvas += ["--book-sample", "4", "--short-sample", "8", "--repeats", "1"]
    return {
        "bench_canvas.py": canvas,
        "bench_books.py": ["--paragraphs", "12" if quick else "24", "--probes", "2" if quick else "3"],
        "bench_voice_cache.py": ["--repeats", "1" if quick else "3"],
        **({"bench_gpu_efficiency.py": []} if cuda else {}),  # full size: FLOP/s share, memory, 10-hour book
        "bench_service.py": [
            "--idle-jobs",
            "20" if quick else "40",
            "--submits",
            "200" if quick else "400",
            "--runs",
            "1" if quick else "3",
        ],
    }


def summarise(raw: dict[str, dict[str, Any]], device: str) -> dict[str, Any]:
    canvas, books, voice, service = (
        raw[k] for k in ("bench_canvas.py", "bench_books.py", "bench_voice_cache.py", "bench_service.py")
    )
    grouped = next(v for k, v in books.items() if k.startswith("group_") and k != "group_1")
    return {
        **_gpu_figures(raw.get("bench_gpu_efficiency.py")),
        "canvas_speedup_book": canvas["canvas_speedup_book"],
        "canvas_speedup_short": canvas["canvas_speedup_short"],
        "batch_throughput_gain": books["batch_throughput_gain"],
        "book_audio_s_per_s": grouped["book_audio_s_per_s"],
        "book_interactive_start_delay_p50_s": (books["with_probes"]["probe_start_delay_s"] or {}).get("p50"),
        "voice_cache_speedup": voice["voice_cache_speedup"],
        "queue_overhead_p50_ms": round(service["submit_to_start_idle_worker"]["p50_ms"], 2),
        "queue_overhead_p99_ms": round(service["submit_to_start_idle_worker"]["p99_ms"], 2),
        "api_submits_per_s": round(service["api_submits"]["submits_per_s"], 1),
        "speech_first_audio_s": round(service["speech_first_audio"]["streamed_first_audio_s"], 3),
        "speech_first_audio_speedup": round(service["speech_first_audio"]["first_audio_speedup"], 2),
        "job_batch_gain": round(service["job_batching"]["job_batch_gain"], 3),
        "mean_jobs_per_call": round(service["job_batching"]["mean_jobs_per_call"], 2),
        "device": device,
        "taken_at": {
            "canvas": f"random EchoDiT width {canvas['model']['model_size']}, {canvas['model']['num_layers']} layers, "
            f"{canvas['dtype']}, {canvas['steps']} steps, batch 1, {canvas['device']}, {canvas['threads']} thread(s)",
            "books_service_voice": "tiny checkpoint through the real service, CPU, float32; book groups of 4 vs 1; "
            "job batching: bursts of 8 one-sentence jobs, ECHO_BATCH_SIZE 4, 40 steps, on vs off",
        },
    }


def _gpu_figures(gpu: dict[str, Any] | None) -> dict[str, Any]:
    """The full-size figures of ``bench_gpu_efficiency.py`` (only with ``--device cuda``)."""
    if gpu is None:
        return {}
    rows = gpu["batches"]
    figures: dict[str, Any] = {f"fraction_of_peak_batch_{b}": row["fraction_of_peak"] for b, row in rows.items()}
    figures |= {f"peak_memory_gib_batch_{b}": row["peak_memory_gib"] for b, row in rows.items()}
    if "8" in rows:
        figures["gpu_batch_gain_8"] = rows["8"]["batch_gain"]
    figures["ten_hour_book_sampling_min"] = gpu["ten_hour_book"]["projected_sampling_minutes"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples: about 10 minutes on 2 CPU cores")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the canvas figures run")
    args = parser.parse_args()
    began = time.monotonic()
    raw = {script: run(script, *script_args) for script, script_args in plans(args.quick, args.device).items()}
    result = summarise(raw, args.device)
    print(f"{'figure':<38} {'value':>12}  target")
    for key, value in result.items():
        if isinstance(value, int | float):
            sign, bound = TARGETS.get(key, ("", None))
            met = "" if bound is None else ("met" if (value >= bound if sign == ">=" else value <= bound) else "MISSED")
            print(f"{key:<38} {value:>12}  {sign}{bound if bound is not None else ''} {met}")
    result["wall_s"] = round(time.monotonic() - began, 1)
    print("RESULT " + json.dumps(result, separators=(",", ":")))


if __name__ == "__main__":
    main()
