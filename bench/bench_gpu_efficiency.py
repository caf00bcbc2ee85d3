"""The sampler's share of the device's peak FLOP/s at batch 1, 4, 8 and 16 with the peak memory of each, and
the projected sampling time of a 10-hour book on one device (issue 10, item 4 and its 6-minute target),
as one JSON report. Made to run as one short device check.

- FLOPs: torch's ``FlopCounterMode`` over one whole ``sample`` call per batch size (the CFG steps count
  what they run); random weights cost the same arithmetic as trained ones.
- Fraction of peak: FLOPs ÷ best wall seconds ÷ ``--peak-tflops`` (989.4: the dense BF16 peak of an
  H100 or H200 SXM; give the card's own). Peak memory: ``torch.cuda.max_memory_allocated`` over the
  timed call (0 on the CPU). With ``--cuda-graphs`` (default on CUDA) the timed calls replay graphs.
- Batch gain: items per second at each batch size ÷ at batch 1.
- 10-hour book: the book path's segments of ``--words`` words of prose (``bench_canvas.book_text``, split at
  300 bytes) give the share of each fitted canvas length (``ECHO_CANVAS=auto``); one batch of
  ``--book-batch`` segments is timed at each length. A segment speaks its spoken bytes ÷ 15 seconds (the
  canvas module's rate), so 36,000 s of speech is that many segments, and the projection is
  Σ over lengths of (segments at that length ÷ batch) × the batch's time. Sampling only: decoding is in
  ``bench_full_pipeline.py``; retries at a longer canvas are not counted (random weights never end).

    python bench/bench_gpu_efficiency.py --device cuda            # full size, bf16
    .venv/bin/python bench/bench_gpu_efficiency.py --device cpu --model-size 128 --num-layers 2 \\
        --num-heads 2 --steps 2 --batches 1,2 --book-batch 2 --words 300     # a check of the script
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter

import torch
from _common import DTYPES, device_name, timed
from bench_canvas import book_text
from bench_sampler import dit_config
from torch.utils.flop_counter import FlopCounterMode

from echo_tts.canvas import SPEECH_BYTES_PER_SECOND, CanvasPolicy, spoken_bytes
from echo_tts.config import DEFAULT_PRESET, LATENT_DIM, MAX_SEQUENCE_LENGTH, SamplerConfig, sampler_preset
from echo_tts.model import EchoDiT
from echo_tts.sampler import encode_conditioning, sample
from echo_tts.text import encode_texts, normalize_text, split_text

H100_BF16_DENSE_TFLOPS = 989.4
BOOK_SECONDS = 10 * 3600


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=DTYPES, help="model dtype (default: bfloat16 on CUDA, float32 on CPU)")
    parser.add_argument("--model-size", type=int, default=2048, help="DiT width (the published model: 2048)")
    parser.add_argument("--num-layers", type=int, default=24)
    parser.add_argument("--num-heads", type=int, default=16)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batches", default="1,4,8,16", help="batch sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per batch size; the best counts")
    parser.add_argument("--peak-tflops", type=float, default=H100_BF16_DENSE_TFLOPS)
    parser.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--book-batch", type=int, default=8, help="segments per sampler call for the book")
    parser.add_argument("--words", type=int, default=3000, help="words of prose whose segments are counted")
    return parser.parse_args(argv)


def _significant(value: float) -> float:
    """Four significant digits: full-size figures read as usual, a tiny CPU check's are not rounded to 0."""
    return float(f"{value:.4g}")


def _conditioning(model: EchoDiT, texts: list[str]):  # -> Conditioning
    speaker = torch.randn((len(texts), MAX_SEQUENCE_LENGTH, LATENT_DIM))
    mask = torch.ones((len(texts), MAX_SEQUENCE_LENGTH), dtype=torch.bool)
    return encode_conditioning(model, encode_texts(texts), speaker, mask)


def _best(model: EchoDiT, cond, config: SamplerConfig, batch: int, repeats: int, graphs: bool) -> tuple[float, int]:
    """Best wall seconds of ``repeats`` calls, and the peak memory of the device over them (bytes)."""
    device, seeds = model.device, list(range(batch))
    sample(model, cond, config, seeds=seeds, cuda_graphs=graphs)  # warm-up: kernels, graphs, allocator
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    best = min(
        timed(lambda: sample(model, cond, config, seeds=seeds, cuda_graphs=graphs), device) for _ in range(repeats)
    )
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    return best, peak


def batch_efficiency(
    model: EchoDiT, config: SamplerConfig, batches: list[int], args: argparse.Namespace, graphs: bool
) -> dict:
    text = "[S1] " + "The quick brown fox jumps over the lazy dog. " * 6  # ~275 bytes: a full piece
    rows, single = {}, None
    for batch in batches:
        cond = _conditioning(model, [text] * batch)
        counter = FlopCounterMode(display=False)
        with counter:
            sample(model, cond, config, seeds=list(range(batch)))
        flops = counter.get_total_flops()
        seconds, peak = _best(model, cond, config, batch, args.repeats, graphs)
        per_item = seconds / batch
        single = single or per_item
        rows[str(batch)] = {
            "seconds_per_call": round(seconds, 4),
            "tflop_per_call": _significant(flops / 1e12),
            "achieved_tflops": _significant(flops / seconds / 1e12),
            "fraction_of_peak": _significant(flops / seconds / (args.peak_tflops * 1e12)),
            "peak_memory_gib": round(peak / 2**30, 2),
            "items_per_s": round(1 / per_item, 3),
            "batch_gain": round(single / per_item, 3),
        }
    return rows


def ten_hour_book(model: EchoDiT, config: SamplerConfig, args: argparse.Namespace, graphs: bool) -> dict:
    policy = CanvasPolicy(mode="auto")
    segments = split_text(book_text(args.words, 0), 300)
    canvases = [policy.first_canvas(normalize_text(s)) for s in segments]
    speech_s = sum(spoken_bytes(s) / SPEECH_BYTES_PER_SECOND for s in segments) / len(segments)
    count = BOOK_SECONDS / speech_s
    per_length, total = {}, 0.0
    for length, n in sorted(Counter(canvases).items()):
        texts = [s for s, c in zip(segments, canvases, strict=True) if c == length]
        batch = [texts[i % len(texts)] for i in range(args.book_batch)]
        seconds, _ = _best(
            model, _conditioning(model, batch), config.replace(sequence_length=length), len(batch), args.repeats, graphs
        )
        calls = count * n / len(segments) / args.book_batch
        per_length[str(length)] = {"share": round(n / len(segments), 3), "seconds_per_batch": round(seconds, 4)}
        total += calls * seconds
    return {
        "segments_per_10h": round(count),
        "mean_speech_s_per_segment": round(speech_s, 2),
        "batch": args.book_batch,
        "canvas_lengths": per_length,
        "projected_sampling_minutes": round(total / 60, 2),
        "target_minutes": 6,
    }


def main(argv: list[str] | None = None) -> dict:
    args = _parse(argv)
    began = time.perf_counter()
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype] if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    graphs = device.type == "cuda" if args.cuda_graphs is None else args.cuda_graphs
    torch.manual_seed(0)
    with device:  # random init straight on the device (the full model is 2.4 B parameters)
        model = EchoDiT(dit_config(args.model_size, args.num_layers, args.num_heads), blockwise=False)
    model = model.to(dtype).eval().requires_grad_(False)
    config = sampler_preset(DEFAULT_PRESET).replace(num_steps=args.steps)
    batches = [int(b) for b in args.batches.split(",")]
    rows = batch_efficiency(model, config, batches, args, graphs)
    return {
        "bench": "gpu_efficiency",
        "device": str(device),
        "device_name": device_name(device),
        "torch": torch.__version__,
        "dtype": str(dtype).removeprefix("torch."),
        "model": {"model_size": args.model_size, "num_layers": args.num_layers, "num_heads": args.num_heads},
        "steps": args.steps,
        "cuda_graphs": graphs,
        "peak_tflops": args.peak_tflops,
        "batches": rows,
        "ten_hour_book": ten_hour_book(model, config, args, graphs),
        "wall_s": round(time.perf_counter() - began, 1),
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
