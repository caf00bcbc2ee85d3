"""Encode/decode speed of the full-size Fish S1-DAC with random weights, as a JSON report.

Speed is "seconds of audio per second of wall time" (above 1 = faster than real time).
Random weights cost the same arithmetic as the published ones, so no download is needed.

    PYTHONPATH=. python bench/bench_autoencoder.py --device cpu --seconds 5 --dtype float32 bfloat16
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from _common import DTYPES, device_name, synchronize

from echo_tts.autoencoder import FishS1DAC
from echo_tts.config import AUTOENCODER_PRESETS, SAMPLE_RATE


def _timed(fn, device: torch.device, repeats: int) -> tuple[float, float]:
    """Best (wall, process CPU) time of ``repeats`` calls, in seconds."""
    best, cpu = float("inf"), float("inf")
    for _ in range(repeats):
        synchronize(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        synchronize(device)
        best, cpu = min(best, time.perf_counter() - start), min(cpu, time.process_time() - start_cpu)
    return best, cpu


def bench_dtype(ae: FishS1DAC, audio: torch.Tensor, repeats: int) -> dict:
    device = audio.device
    frame = ae.config.frame_length
    ae.decode_zq(ae.encode_zq(audio[..., :frame]))  # warm-up: kernels, allocator
    z_q = ae.encode_zq(audio)
    encode_s, encode_cpu = _timed(lambda: ae.encode_zq(audio), device, repeats)
    decode_s, decode_cpu = _timed(lambda: ae.decode_zq(z_q), device, repeats)
    seconds = z_q.shape[-1] * frame / SAMPLE_RATE
    result = {
        "latents": z_q.shape[-1],
        "audio_seconds": round(seconds, 3),
        "encode_wall_s": round(encode_s, 3),
        "decode_wall_s": round(decode_s, 3),
        "encode_process_cpu_s": round(encode_cpu, 3),
        "decode_process_cpu_s": round(decode_cpu, 3),
        "encode_audio_s_per_s": round(seconds / encode_s, 3),
        "decode_audio_s_per_s": round(seconds / decode_s, 3),
    }
    if device.type == "cuda":
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the random test audio")
    parser.add_argument("--dtype", nargs="+", choices=sorted(DTYPES), default=["float32", "bfloat16"])
    parser.add_argument("--size", choices=sorted(AUTOENCODER_PRESETS), default="fish-s1-dac-min")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per measurement (best is kept)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    samples = int(args.seconds * SAMPLE_RATE)
    audio = (0.1 * torch.randn(1, 1, samples)).to(device)
    started = time.perf_counter()
    with torch.device(device):
        ae = FishS1DAC(AUTOENCODER_PRESETS[args.size]).eval().requires_grad_(False)
    report: dict = {
        "bench": "autoencoder",
        "size": args.size,
        "device": str(device),
        "device_name": device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "build_s": round(time.perf_counter() - started, 2),
        "results": {},
    }
    for name in args.dtype:
        ae = ae.to(DTYPES[name])  # RoPE tables stay bf16-valued: bf16 -> f32 is exact
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        report["results"][name] = bench_dtype(ae, audio, args.repeats)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
