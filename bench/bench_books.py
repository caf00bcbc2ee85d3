"""Audiobook throughput through the whole service, on the tiny checkpoint (CPU unless ECHO_DEVICE says).

Starts its own stack on loopback (``redis-server``, moto's S3, the API, one rendering worker, one
assembling worker: see ``bench_service.Stack``) and measures, side by side in one run:

1. segments per second with ``ECHO_BOOK_GROUP_SIZE=1`` and with the group size given (default 4):
   the same book (``--paragraphs`` short paragraphs, one segment each) with a fresh seed per run so
   nothing comes from the cache; from the first segment counted to the last;
2. audio seconds per wall second for the whole book (submit to M4B) in both runs;
3. in a third run (grouped), the delay before a single interactive job starts while the book
   renders: ``--probes`` jobs submitted one after another, ``started_ts - created_ts`` of each.

    .venv/bin/python bench/bench_books.py [--paragraphs 24] [--group-size 4] [--steps 40] [--probes 3]

Prints one JSON object. Numbers depend on the machine; report them with the command line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_service import PY, ROOT, Stack, percentile, tiny_checkpoint, wait  # noqa: E402

SENTENCES = (
    "The lamp burned low as the storm rolled in from the sea.",
    "She counted the waves and waited for the morning light.",
    "Nobody had climbed the tower in years, yet the door stood open.",
)


class BookStack(Stack):
    """The service stack with a rendering worker of a chosen group size and an assembler."""

    def start_workers(self, group_size: int) -> None:
        self.env["ECHO_BOOK_GROUP_SIZE"] = str(group_size)
        self.start_worker()
        env = self.env | {"ECHO_WORKER_ROLE": "assemble", "ECHO_WORKER_QUEUES": "tts-assembly"}
        log = (self.workdir / "assembler.log").open("ab")
        self.assembler = subprocess.Popen(
            [PY, "-m", "worker", "--loglevel", "WARNING"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        self.procs.append(self.assembler)

    def stop_workers(self) -> None:
        self.stop_worker()
        self.assembler.terminate()
        self.assembler.wait(timeout=60)


def book_json(paragraphs: int, seed: int, steps: int) -> dict[str, Any]:
    text = "\n\n".join(f"{SENTENCES[i % len(SENTENCES)]} ({i})" for i in range(paragraphs))
    return {
        "title": "Bench",
        "seed": seed,
        "overrides": {"num_steps": steps},
        "chapters": [{"title": "One", "text": text}],
    }


def run_book(stack: BookStack, paragraphs: int, seed: int, steps: int, probes: int) -> dict[str, Any]:
    session = requests.Session()
    submitted_at = time.time()
    book = session.post(stack.api + "/v1/audiobooks", json=book_json(paragraphs, seed, steps), timeout=30).json()

    def view() -> dict[str, Any]:
        return dict(session.get(f"{stack.api}/v1/audiobooks/{book['id']}", timeout=30).json())

    wait(lambda: view()["segments_done"] >= 1, 600, "the first segment", 0.05)
    started = time.monotonic()
    delays = []
    for _ in range(probes):
        job = session.post(stack.api + "/v1/jobs", json={"text": "Quick.", "overrides": {"num_steps": 4}}, timeout=30)
        job_id = job.json()["id"]
        record = wait(
            lambda j=job_id: (r := session.get(f"{stack.api}/v1/jobs/{j}", timeout=30).json())["started_ts"] and r,
            600,
            "the probe job to start",
            0.02,
        )
        delays.append(record["started_ts"] - record["created_ts"])
        wait(
            lambda j=job_id: session.get(f"{stack.api}/v1/jobs/{j}", timeout=30).json()["status"] == "succeeded",
            600,
            "the probe job",
            0.05,
        )
    done = wait(lambda: (v := view())["segments_done"] >= v["segments_total"] > 0 and v, 1800, "the book", 0.05)
    rendered_s = time.monotonic() - started
    finished = wait(lambda: (v := view())["status"] in ("succeeded", "failed") and v, 600, "the M4B", 0.1)
    wall = time.time() - submitted_at
    counted = done["segments_done"] - 1  # from the first segment counted to the last
    return {
        "status": finished["status"],
        "segments": done["segments_total"],
        "segments_per_s": round(max(counted, 1) / rendered_s, 3),
        "probe_start_delay_s": {"p50": round(percentile(delays, 50), 3), "max": round(max(delays), 3)}
        if delays
        else None,
        "book_audio_s": finished.get("result", {}) and finished["result"]["duration_s"],
        "book_audio_s_per_s": round(finished["result"]["duration_s"] / wall, 3) if finished.get("result") else None,
        "wall_s": round(wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paragraphs", type=int, default=24)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--probes", type=int, default=3)
    parser.add_argument("--checkpoint", type=Path, default=None, help="tiny checkpoint dir (made when absent)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-books-"))
    checkpoint = tiny_checkpoint(args.checkpoint or workdir / "ckpt")
    stack = BookStack(workdir, checkpoint)
    results: dict[str, Any] = {"paragraphs": args.paragraphs, "steps": args.steps}
    try:
        grouped = f"group_{args.group_size}"
        runs = (
            ("group_1", 1, 101, 0),
            (grouped, args.group_size, 202, 0),
            ("with_probes", args.group_size, 303, args.probes),
        )
        for label, size, seed, probes in runs:
            stack.start_workers(size)
            results[label] = run_book(stack, args.paragraphs, seed, args.steps, probes)
            stack.stop_workers()
        results["worker"] = {k: stack.worker_info.get(k) for k in ("device", "model_revision")}
        one, many = results["group_1"]["segments_per_s"], results[grouped]["segments_per_s"]
        results["batch_throughput_gain"] = round(many / one, 3)
    finally:
        stack.close()
    print(json.dumps(results, indent=2))
    print(f"(logs in {workdir})", file=sys.stderr)


if __name__ == "__main__":
    main()
