"""Seconds per sampler call (default: 40 steps, 640 latents, one item) of a random-weight EchoDiT
at a chosen width, as a JSON report.

Random weights cost the same arithmetic as trained ones. The full model is ``--model-size 2048
--num-layers 24 --num-heads 16``; the default is a mid width that runs on a CPU. The text and
speaker encoders are scaled with the width; they run once per call, outside the timed loop.

    .venv/bin/python bench/bench_sampler.py --device cpu --model-size 512 --num-layers 8
"""

from __future__ import annotations

import argparse
import json

import torch
from _common import DTYPES, device_name
from _common import timed as _timed

from echo_tts.config import (
    AE_DOWNSAMPLE_FACTOR,
    DEFAULT_PRESET,
    LATENT_DIM,
    MAX_SEQUENCE_LENGTH,
    SAMPLE_RATE,
    EchoDiTConfig,
    sampler_preset,
)
from echo_tts.model import EchoDiT
from echo_tts.sampler import cfg_active, encode_conditioning, sample, timestep_schedule
from echo_tts.text import encode_texts


def dit_config(model_size: int, num_layers: int, num_heads: int) -> EchoDiTConfig:
    """EchoDiT at another width, keeping the published proportions (MLP 2.875x, encoders 5/8 wide)."""
    full = EchoDiTConfig()  # the published sizes
    head_dim = model_size // num_heads
    encoder_heads = max(1, (model_size * full.text_model_size // full.model_size) // head_dim)
    encoder_size = encoder_heads * head_dim
    encoder_layers = max(1, round(num_layers * full.text_num_layers / full.num_layers))
    return EchoDiTConfig(
        model_size=model_size,
        num_layers=num_layers,
        num_heads=num_heads,
        intermediate_size=round(model_size * full.intermediate_size / full.model_size),
        text_model_size=encoder_size,
        text_num_layers=encoder_layers,
        text_num_heads=encoder_heads,
        text_intermediate_size=round(encoder_size * full.text_intermediate_size / full.text_model_size),
        speaker_model_size=encoder_size,
        speaker_num_layers=encoder_layers,
        speaker_num_heads=encoder_heads,
        speaker_intermediate_size=round(encoder_size * full.speaker_intermediate_size / full.speaker_model_size),
        adaln_rank=max(8, model_size // 8),
    )


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=DTYPES, help="model dtype (default: bfloat16 on CUDA, float32 on CPU)")
    parser.add_argument("--model-size", type=int, default=512, help="DiT width (full model: 2048)")
    parser.add_argument("--num-layers", type=int, default=8, help="DiT blocks (full model: 24)")
    parser.add_argument("--num-heads", type=int, default=8, help="DiT heads (full model: 16)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--frames", type=int, default=MAX_SEQUENCE_LENGTH, help="latents to generate (640 = 29.7 s)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--text-bytes", type=int, default=300, help="prompt length in UTF-8 bytes")
    parser.add_argument("--speaker-frames", type=int, default=640, help="reference latents (640 = 29.7 s)")
    parser.add_argument("--preset", default=DEFAULT_PRESET)
    parser.add_argument("--repeats", type=int, default=1, help="timed calls; the best is reported")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = _parse(argv)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype] if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    torch.manual_seed(0)
    config = dit_config(args.model_size, args.num_layers, args.num_heads)
    with device:  # random init straight on the device (the full model is 2.4 B parameters)
        model = EchoDiT(config, blockwise=False).to(dtype).eval().requires_grad_(False)
    sampler = sampler_preset(args.preset).replace(num_steps=args.steps, sequence_length=args.frames)

    text = encode_texts(["[S1] " + "a" * (args.text_bytes - 5)] * args.batch)
    speaker = torch.randn((args.batch, args.speaker_frames, LATENT_DIM))
    speaker_mask = torch.ones((args.batch, args.speaker_frames), dtype=torch.bool)
    seeds = list(range(args.batch))

    encode_s = _timed(lambda: encode_conditioning(model, text, speaker, speaker_mask), device)
    cond = encode_conditioning(model, text, speaker, speaker_mask)
    sample(model, cond, sampler.replace(num_steps=2), seeds=seeds)  # warm-up: kernels, allocator
    best = min(_timed(lambda: sample(model, cond, sampler, seeds=seeds), device) for _ in range(args.repeats))
    graphs = _cuda_graphs_side_by_side(model, cond, sampler, seeds, args.repeats) if device.type == "cuda" else {}

    cfg_steps = sum(cfg_active(t, sampler) for t in timestep_schedule(args.steps)[:-1])
    audio_s = args.frames * AE_DOWNSAMPLE_FACTOR / SAMPLE_RATE
    return {
        "bench": "sampler",
        "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "dtype": str(dtype).removeprefix("torch."),
        "model": {
            "model_size": args.model_size,
            "num_layers": args.num_layers,
            "num_heads": args.num_heads,
            "parameters": sum(p.numel() for p in model.parameters()),
        },  # fmt: skip
        "preset": args.preset,
        "steps": args.steps,
        "cfg_steps": int(cfg_steps),
        "frames": args.frames,
        "batch": args.batch,
        "text_tokens": text.input_ids.shape[1],
        "speaker_frames": args.speaker_frames,
        "encode_conditioning_s": round(encode_s, 4),
        "seconds_per_call": round(best, 4),
        "seconds_per_step": round(best / args.steps, 5),
        "audio_seconds_per_item": round(audio_s, 3),
        "realtime_factor": round(audio_s * args.batch / best, 3),
        **graphs,
    }


def _cuda_graphs_side_by_side(model, cond, sampler, seeds, repeats: int) -> dict:
    """The same call replayed from CUDA graphs, timed in the same run, plus whether the latents
    match the eager ones bit for bit and the peak memory of a graphed call."""
    device = model.device
    eager = sample(model, cond, sampler, seeds=seeds)
    torch.cuda.reset_peak_memory_stats(device)
    graphed = sample(model, cond, sampler, seeds=seeds, cuda_graphs=True)
    peak = torch.cuda.max_memory_allocated(device)
    best = min(
        _timed(lambda: sample(model, cond, sampler, seeds=seeds, cuda_graphs=True), device) for _ in range(repeats)
    )
    return {
        "cuda_graphs_seconds_per_call": round(best, 4),
        "cuda_graphs_latents_bit_equal": bool(torch.equal(eager, graphed)),
        "cuda_graphs_peak_memory_gib": round(peak / 2**30, 2),
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
