"""Seconds per 30 s of audio for the full-size pipeline with random weights, side by side with
and without CUDA-graph replay, and the peak GPU memory.

One "render" is what a worker does for one generation: encode the text and a reference voice's
latents into the conditioning caches, sample 640 latents (29.7 s) at 40 steps with the default
preset, and decode all 640 frames with the S1-DAC (random weights would make the end-of-speech
crop arbitrary, so the whole buffer is decoded: the worst case). The reference is encoded once
beforehand (a stored voice), as the service does. Random weights cost the same arithmetic as the
published ones; no download is needed.

    python bench/bench_full_pipeline.py --device cuda            # needs ~12 GiB of GPU memory
    python bench/bench_full_pipeline.py --device cuda --ae-dtype bfloat16 --frames 576   # the 8 GB profile
"""

from __future__ import annotations

import argparse
import json

import torch
from _common import device_name, synchronize, timed

from echo_tts.autoencoder import FishS1DAC
from echo_tts.config import (
    AE_DOWNSAMPLE_FACTOR,
    AE_LATENT_DIM,
    AUTOENCODER_PRESETS,
    DEFAULT_PRESET,
    LATENT_DIM,
    MAX_SEQUENCE_LENGTH,
    SAMPLE_RATE,
    EchoDiTConfig,
    sampler_preset,
)
from echo_tts.model import EchoDiT
from echo_tts.pca import PCAState
from echo_tts.pipeline import Pipeline
from echo_tts.sampler import encode_conditioning, sample
from echo_tts.text import encode_texts

TEXT = "[S1] " + "This is a sentence of an ordinary length, read at an ordinary pace. " * 4


def _random_pipeline(device: torch.device, dtype: torch.dtype, ae_dtype: torch.dtype) -> Pipeline:
    torch.manual_seed(0)
    with device:  # random init straight on the device
        model = EchoDiT(EchoDiTConfig(), blockwise=False).to(dtype).eval().requires_grad_(False)
        autoencoder = FishS1DAC(AUTOENCODER_PRESETS["fish-s1-dac-min"]).to(ae_dtype).eval().requires_grad_(False)
        components = torch.linalg.qr(torch.randn(AE_LATENT_DIM, LATENT_DIM))[0].T.contiguous()  # (80, 1024)
        pca = PCAState(components, torch.zeros(AE_LATENT_DIM), 1 / 18)
    return Pipeline(model, autoencoder, pca)


def _render(pipe: Pipeline, voice, *, steps: int, frames: int, cuda_graphs: bool) -> torch.Tensor:
    config = sampler_preset(DEFAULT_PRESET).replace(num_steps=steps, sequence_length=frames)
    cond = encode_conditioning(pipe.model, encode_texts([TEXT]), voice.latents, voice.mask)
    latents = sample(pipe.model, cond, config, seeds=[0], cuda_graphs=cuda_graphs)
    return pipe.decode_latents(latents)  # (1, frames * 2048) float32 on the CPU


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"], help="DiT dtype")
    parser.add_argument("--ae-dtype", default="float32", choices=["bfloat16", "float32"])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--reference-seconds", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=3, help="timed renders per mode; the best is reported")
    parser.add_argument(
        "--frames", type=int, default=MAX_SEQUENCE_LENGTH, help="canvas (640 = 29.7 s; the 8 GB profile: 576)"
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    pipe = _random_pipeline(device, getattr(torch, args.dtype), getattr(torch, args.ae_dtype))
    reference = 0.1 * torch.randn(1, int(args.reference_seconds * SAMPLE_RATE))
    encode_s = timed(lambda: pipe.encode_speaker(reference), device)
    voice = pipe.encode_speaker(reference)
    report: dict = {"bench": "full_pipeline", "device": device_name(device), "torch": torch.__version__,
                    "dit_dtype": args.dtype, "ae_dtype": args.ae_dtype, "steps": args.steps,
                    "reference_seconds": args.reference_seconds, "encode_reference_s": round(encode_s, 3),
                    "frames": args.frames,
                    "audio_seconds": round(args.frames * AE_DOWNSAMPLE_FACTOR / SAMPLE_RATE, 3)}  # fmt: skip
    outputs = {}
    for mode, graphs in (("eager", False), ("cuda_graphs", True)):
        if graphs and device.type != "cuda":
            continue
        outputs[mode] = _render(pipe, voice, steps=args.steps, frames=args.frames, cuda_graphs=graphs)  # warm-up
        if device.type == "cuda":
            synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        best = min(timed(lambda g=graphs: _render(pipe, voice, steps=args.steps, frames=args.frames, cuda_graphs=g),
                         device) for _ in range(args.repeats))  # fmt: skip
        report[f"{mode}_seconds_per_render"] = round(best, 3)
        if device.type == "cuda":
            report[f"{mode}_peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    if "cuda_graphs" in outputs:
        report["speedup"] = round(report["eager_seconds_per_render"] / report["cuda_graphs_seconds_per_render"], 2)
        report["same_audio"] = bool(torch.equal(outputs["eager"], outputs["cuda_graphs"]))
    return report


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
