"""Fitted canvases (``canvas="auto"``, echo_tts.canvas) against the fixed 640-latent canvas: sampler
seconds with 640 frames ÷ seconds with each text's fitted bucket, on the same segments and seeds.

Two workloads, both made here from plain English written for this script:

* **book**: the pieces ``echo_tts.split_text(text, 300)`` makes of ~3,000 words of prose (the
  book path's 300-byte pieces, ~20 s each);
* **short**: 100 interactive texts of one to three sentences.

The DiT is a random-weight EchoDiT at a mid width on the CPU (as ``bench_sampler.py``): random
weights cost the same arithmetic as trained ones. To stay within a few minutes on 2 cores the
script times an evenly spaced sample of each workload's segments (every segment's bucket is still
reported) with few steps (``--steps 2``: one CFG step and one plain one, the same 1:1 mix as the
default 40 with CFG on 20) on one torch thread (on a shared 2-core CPU two OpenMP threads that
fight other processes made short canvases 2-4x slower and the times erratic); each (segment,
canvas) takes the best of ``--repeats`` calls, alternating fixed and fitted so that load from
other processes hits both alike.

Retries are not timed: random weights have no end of speech. ``retry_rate_break_even`` says
what fraction of segments could need one retry (at the next bucket) before the fitted canvas
costs as many frames as the fixed one; ``retry_rate_at_target`` likewise for the issue's target.

    .venv/bin/python bench/bench_canvas.py [--model-size 512 --num-layers 8 --steps 2 --threads 1]

Prints one JSON object with ``canvas_speedup_book`` and ``canvas_speedup_short``.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from collections import Counter
from collections.abc import Sequence

import torch
from _common import DTYPES, device_name, timed
from bench_sampler import dit_config

from echo_tts.canvas import CanvasPolicy
from echo_tts.config import DEFAULT_PRESET, LATENT_DIM, MAX_SEQUENCE_LENGTH, SamplerConfig, sampler_preset
from echo_tts.model import EchoDiT
from echo_tts.sampler import Conditioning, encode_conditioning, sample
from echo_tts.text import encode_texts, normalize_text, split_text

TARGETS = {"book": 1.2, "short": 3.0}  # issue 10, on a 2-core CPU

# --- the texts ---------------------------------------------------------------------------------
PARAGRAPHS = (
    "The village of {town} lay at the bottom of a long valley, where the river bent twice before it "
    "reached the sea. In the mornings a thin mist rose from the water and hung over the roofs until the "
    "sun was high enough to burn it away. Most of the houses were built of grey stone, and their gardens "
    "ran down to the bank in narrow strips, each one fenced with willow and planted with beans.",
    "{name} had lived there all her life. She knew every family by name and most of their quarrels by "
    "heart, and she liked to say that nothing happened in the valley without her hearing of it before "
    "supper. Her father had kept the mill, and when he died she kept it after him, grinding corn for the "
    "farms on both sides of the river and keeping the accounts in a thick brown book.",
    "One autumn a stranger came down the road from the hills. He carried a leather case on his back and "
    "walked with the slow, careful step of a man who has come a long way and expects to go further. He "
    "stopped at the inn, asked for a room and a hot meal, and paid for both in coins that nobody in the "
    "village had seen before.",
    "By the next morning everyone was talking about him. Some said he was a surveyor sent by the "
    "government to measure the land for a new railway. Others said he was a painter, or a collector of "
    "old songs, or simply a man running away from his debts. {name} listened to all of it and said "
    "nothing, which was unusual enough that her neighbours began to wonder what she knew.",
    "The truth was that she knew very little. She had seen him only once, standing on the bridge at dusk "
    "with his hands in his pockets, looking down at the water as though he were reading it. When he "
    "noticed her watching, he raised his hat politely and walked on. It was a small thing, but it stayed "
    "with her through the evening and into the night.",
    "The weather turned cold early that year. The first frost came in the middle of October, and by the "
    "end of the month the river ran high and brown with rain from the hills. The farmers brought their "
    "last loads of grain to the mill before the roads turned to mud, and for two weeks the wheel turned "
    "from dawn until long after dark.",
    "It was during those weeks that the stranger began to visit the mill. At first he came only to watch, "
    "standing in the doorway with his collar turned up against the wind. Later he asked questions about "
    "the wheel, the gears and the height of the water, and wrote the answers in a small notebook that he "
    "kept in his coat.",
    "{name} answered him patiently, though she could not see why a traveller should care how a country "
    "mill was built. When she finally asked him, he smiled and said that he had been sent to find out "
    "whether the river could be made to carry boats as far as {town}. If it could, he said, the valley "
    "would never be the same again.",
    "She thought about that for a long time after he had gone. The valley had always been a quiet place, "
    "a little behind the rest of the world, and most of the people in it liked it that way. Boats would "
    "bring trade and money, but they would also bring noise, and strangers, and changes that no one could "
    "foresee.",
    "In the spring the stranger came back with three other men and a wagon full of instruments. They "
    "spent a month walking up and down the banks, driving stakes into the ground and arguing over maps in "
    "the evenings at the inn. Then, as suddenly as they had arrived, they packed their things and left, "
    "and for a long while nobody heard anything more about the boats.",
)
TOWNS = ("Ashford", "Millbrook", "Eastwick", "Harrow Green", "Lowmead", "Stonebridge")
NAMES = ("Margaret", "Eleanor", "Alice", "Martha", "Clara", "Ruth")

SHORT_SENTENCES = (
    "Sure, I can help with that.",
    "Your order has shipped and should arrive on Tuesday.",
    "The meeting has been moved to three o'clock.",
    "I'm sorry, I didn't catch that.",
    "Could you say it again a little more slowly?",
    "It looks like it will rain this afternoon, so take an umbrella.",
    "Your next appointment is on Friday at ten in the morning.",
    "I've added milk, eggs and bread to your shopping list.",
    "The train to the city leaves from platform four in twelve minutes.",
    "Welcome back!",
    "Here is a quick summary of today's news.",
    "The museum is open from nine until five, except on Mondays.",
    "I found three restaurants nearby that are open now.",
    "Turn left at the next corner and continue for about two hundred meters.",
    "Your package was left at the front door.",
    "Good morning, it's a bright and sunny day outside.",
    "I've set a timer for twenty minutes.",
    "That sounds like a great idea.",
    "Let me check that for you.",
    "The battery is running low, so please plug in your device soon.",
    "You have two new messages and one missed call.",
    "The library book you borrowed is due back next Wednesday.",
    "Thank you for waiting, your table is ready.",
    "Please remember to bring your ticket and a photo ID.",
    "The temperature will drop below freezing tonight.",
    "I couldn't find any flights before noon, but there is one at half past two.",
    "Your password was changed successfully.",
    "Would you like me to read it back to you?",
    "The store closes in fifteen minutes.",
    "Congratulations on finishing the course!",
)


def book_text(words: int, seed: int) -> str:
    """~``words`` words of prose: the paragraphs in a shuffled order with names and places varied."""
    rng = random.Random(seed)
    paragraphs: list[str] = []
    count = 0
    while count < words:
        order = list(PARAGRAPHS)
        rng.shuffle(order)
        for template in order:
            paragraph = template.format(name=rng.choice(NAMES), town=rng.choice(TOWNS))
            paragraphs.append(paragraph)
            count += len(paragraph.split())
            if count >= words:
                break
    return "\n\n".join(paragraphs) + "\n"


def short_texts(count: int, seed: int) -> list[str]:
    """``count`` texts of one to three sentences."""
    rng = random.Random(seed)
    return [" ".join(rng.sample(SHORT_SENTENCES, rng.randint(1, 3))) for _ in range(count)]


# --- timing ------------------------------------------------------------------------------------
def evenly_spaced(n: int, k: int) -> list[int]:
    """``k`` indices spread over ``range(n)`` (all of them if k >= n)."""
    if k >= n:
        return list(range(n))
    return [round(i * (n - 1) / (k - 1)) for i in range(k)] if k > 1 else [n // 2]


def time_workload(
    model,
    texts: Sequence[str],
    policy: CanvasPolicy,
    sampler: SamplerConfig,
    speaker: tuple[torch.Tensor, torch.Tensor],
    sample_size: int,
    repeats: int,
    target: float,
) -> dict:
    device = model.device
    canvases = [policy.first_canvas(normalize_text(t)) for t in texts]
    picked = evenly_spaced(len(texts), sample_size)
    fixed_s, fitted_s = 0.0, 0.0
    for index in picked:
        cond: Conditioning = encode_conditioning(model, encode_texts([texts[index]]), *speaker)
        runs = {MAX_SEQUENCE_LENGTH: [], canvases[index]: []}
        for r in range(repeats):
            lengths = [MAX_SEQUENCE_LENGTH, canvases[index]]
            for length in lengths if r % 2 == 0 else lengths[::-1]:
                config = sampler.replace(sequence_length=length)
                runs[length].append(timed(lambda c=config, k=cond, i=index: sample(model, k, c, seeds=[i]), device))
        fixed_s += min(runs[MAX_SEQUENCE_LENGTH])
        fitted_s += min(runs[canvases[index]])
    total = sum(canvases)
    retry_frames = sum(policy.next_canvas(c) or c for c in canvases)  # one retry for every segment
    fixed_frames = MAX_SEQUENCE_LENGTH * len(canvases)
    nbytes = [len(t.encode("utf-8")) for t in texts]
    return {
        "segments": len(texts),
        "bytes_mean": round(sum(nbytes) / len(nbytes), 1),
        "bytes_max": max(nbytes),
        "buckets": {str(k): v for k, v in sorted(Counter(canvases).items())},
        "canvas_mean_latents": round(total / len(canvases), 1),
        "frames_ratio_all_segments": round(fixed_frames / total, 3),
        "timed_segments": len(picked),
        "timed_canvas_mean_latents": round(sum(canvases[i] for i in picked) / len(picked), 1),
        "fixed_s": round(fixed_s, 3),
        "fitted_s": round(fitted_s, 3),
        "speedup": round(fixed_s / fitted_s, 3),
        "retry_rate_break_even": round((fixed_frames - total) / retry_frames, 3),
        "retry_rate_at_target": round((fixed_frames / target - total) / retry_frames, 3),
    }


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=DTYPES, help="model dtype (default: bfloat16 on CUDA, float32 on CPU)")
    parser.add_argument("--model-size", type=int, default=512, help="DiT width (full model: 2048)")
    parser.add_argument("--num-layers", type=int, default=8, help="DiT blocks (full model: 24)")
    parser.add_argument("--num-heads", type=int, default=8, help="DiT heads (full model: 16)")
    parser.add_argument("--steps", type=int, default=2, help="sampler steps per call (half of them CFG)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--words", type=int, default=3000, help="words of prose for the book workload")
    parser.add_argument("--short", type=int, default=100, help="number of short interactive texts")
    parser.add_argument("--book-sample", type=int, default=8, help="book segments timed (evenly spaced)")
    parser.add_argument("--short-sample", type=int, default=14, help="short texts timed (evenly spaced)")
    parser.add_argument("--repeats", type=int, default=2, help="calls per (segment, canvas); the best counts")
    parser.add_argument("--speaker-frames", type=int, default=640, help="reference latents (640 = 29.7 s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the texts and the random weights")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = _parse(argv)
    started = time.perf_counter()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype] if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    torch.manual_seed(args.seed)
    with device:
        model = EchoDiT(dit_config(args.model_size, args.num_layers, args.num_heads), blockwise=False)
    model = model.to(dtype).eval().requires_grad_(False)
    sampler = sampler_preset(DEFAULT_PRESET).replace(num_steps=args.steps)
    speaker = (
        torch.randn((1, args.speaker_frames, LATENT_DIM), generator=torch.Generator().manual_seed(args.seed)),
        torch.ones((1, args.speaker_frames), dtype=torch.bool),
    )
    policy = CanvasPolicy(mode="auto")
    book = split_text(book_text(args.words, args.seed), 300)
    short = short_texts(args.short, args.seed)

    warm = encode_conditioning(model, encode_texts(["Warm up."]), *speaker)
    for length in (policy.buckets[0], MAX_SEQUENCE_LENGTH):
        sample(model, warm, sampler.replace(num_steps=2, sequence_length=length), seeds=[0])

    results = {
        name: time_workload(model, texts, policy, sampler, speaker, size, args.repeats, TARGETS[name])
        for name, texts, size in (("book", book, args.book_sample), ("short", short, args.short_sample))
    }
    return {
        "bench": "canvas",
        "canvas_speedup_book": results["book"]["speedup"],
        "canvas_speedup_short": results["short"]["speedup"],
        "targets": TARGETS,
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
        },
        "policy": {
            "bytes_per_second": policy.bytes_per_second,
            "margin": policy.margin,
            "buckets": list(policy.buckets),
        },
        "steps": args.steps,
        "batch": 1,
        "speaker_frames": args.speaker_frames,
        "repeats": args.repeats,
        "book_words": len(re.findall(r"\S+", "".join(book))),
        "book": results["book"],
        "short": results["short"],
        "retries": "not timed (random weights have no end of speech): speedups assume none",
        "note": "a sample of each workload's segments is timed (see timed_segments) at few steps",
        "wall_s": round(time.perf_counter() - started, 1),
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
