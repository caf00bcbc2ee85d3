"""Service latency and throughput on this machine, on the tiny checkpoint (CPU unless ECHO_DEVICE says).

Starts its own stack on loopback: ``redis-server``, moto's S3 server (standing in for MinIO), the
API (``python -m api --bind``, gunicorn, 2 processes x 4 threads) and one ``python -m worker``.
Measures:

1. submit-to-start latency with an idle worker: POST a job, wait until the record says running,
   cancel it, wait until the worker is idle again; latency = started_ts - created_ts from the
   job record (the same machine's clock), p50/p99 over ``--idle-jobs``;
2. submits per second the API accepts: ``--submits`` POSTs from ``--concurrency`` threads while
   the worker is stopped (so only the API, Redis and the broker are measured);
3. submit-to-downloadable for one sentence: POST, poll every 20 ms, GET the presigned URL;
   median over ``--runs``, at the preset's default 40 steps and at ``--fast-steps``.

    .venv/bin/python bench/bench_service.py [--idle-jobs 40] [--submits 400] [--concurrency 8] [--runs 3]

Numbers depend on the machine; report them with the command line. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
SENTENCE = "The quick brown fox jumps over the lazy dog."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait(check: Any, timeout: float, what: str, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"timed out waiting for {what}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


class Stack:
    """Redis, moto S3, the API and a worker as child processes of this script."""

    def __init__(self, workdir: Path, checkpoint: Path) -> None:
        self.workdir, self.procs = workdir, []  # type: ignore[var-annotated]
        redis_port, s3_port, api_port = free_port(), free_port(), free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("ECHO_", "AWS_"))} | {
            "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
            "ECHO_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "ECHO_S3_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}", "ECHO_S3_BUCKET": "bench",
            "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
            "ECHO_MODEL_REPO": str(checkpoint / "echo-tts-base"), "ECHO_AE_REPO": str(checkpoint / "fish-s1-dac-min"),
            "ECHO_DEVICE": os.environ.get("ECHO_DEVICE", "cpu"), "ECHO_DTYPE": os.environ.get("ECHO_DTYPE", "float32"),
        }
        self.api = f"http://127.0.0.1:{api_port}"
        self._start([shutil.which("redis-server") or "redis-server", "--port", str(redis_port), "--save", "",
                     "--appendonly", "no", "--dir", str(workdir)], "redis")
        self._start([PY, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)], "s3")
        wait(lambda: self._listening(s3_port), 30, "moto")
        self._start([PY, "-m", "api", "--bind", f"127.0.0.1:{api_port}", "--workers", "2", "--log-level", "warning"],
                    "api")
        wait(lambda: self._healthy(), 60, "the API")
        self.worker: subprocess.Popen[bytes] | None = None

    def _start(self, args: list[str], name: str) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("ab")
        proc = subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    @staticmethod
    def _listening(port: int) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    def _healthy(self) -> bool:
        try:
            return requests.get(self.api + "/healthz", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    def start_worker(self) -> None:
        self.worker = self._start([PY, "-m", "worker", "--loglevel", "WARNING"], "worker")
        wait(lambda: requests.get(self.api + "/readyz", timeout=5).status_code == 200, 180, "a ready worker", 0.2)

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.terminate()
            self.worker.wait(timeout=60)
            self.worker = None

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()

    # --- client calls ---------------------------------------------------------------------
    def submit(self, session: requests.Session, **body: Any) -> dict[str, Any]:
        answer = session.post(self.api + "/v1/jobs", json={"text": SENTENCE, "seed": 1} | body, timeout=30)
        answer.raise_for_status()
        return dict(answer.json())

    def job(self, session: requests.Session, job_id: str) -> dict[str, Any]:
        return dict(session.get(f"{self.api}/v1/jobs/{job_id}", timeout=30).json())


def bench_idle_start(stack: Stack, count: int) -> dict[str, float]:
    session, latencies = requests.Session(), []
    for _ in range(count):
        job = stack.submit(session, overrides={"num_steps": 100})
        running = wait(lambda j=job: (x := stack.job(session, j["id"]))["started_ts"] and x, 60, "start", 0.005)
        latencies.append(running["started_ts"] - running["created_ts"])
        session.delete(f"{stack.api}/v1/jobs/{job['id']}", timeout=30)
        wait(lambda j=job: stack.job(session, j["id"])["status"] == "canceled", 60, "cancel", 0.01)
        time.sleep(0.2)  # the worker acks and goes back to waiting on the queue
    return {"p50_ms": 1000 * percentile(latencies, 50), "p99_ms": 1000 * percentile(latencies, 99),
            "mean_ms": 1000 * statistics.fmean(latencies), "n": count}


def bench_submits(stack: Stack, total: int, concurrency: int) -> dict[str, float]:
    sessions = [requests.Session() for _ in range(concurrency)]

    def one(i: int) -> float:
        began = time.perf_counter()
        stack.submit(sessions[i % concurrency], overrides={"num_steps": 2})
        return time.perf_counter() - began

    stack.submit(sessions[0])  # connection set-up outside the clock
    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = list(pool.map(one, range(total)))
    elapsed = time.perf_counter() - began
    return {"submits_per_s": total / elapsed, "p50_ms": 1000 * percentile(latencies, 50),
            "p99_ms": 1000 * percentile(latencies, 99), "n": total, "concurrency": concurrency}


def bench_downloadable(stack: Stack, runs: int, steps: int | None) -> dict[str, float]:
    session, times, rtfs = requests.Session(), [], []
    for seed in range(runs):
        began = time.perf_counter()
        job = stack.submit(session, seed=seed, **({"overrides": {"num_steps": steps}} if steps else {}))
        done = wait(lambda j=job: (x := stack.job(session, j["id"]))["status"] in ("succeeded", "failed") and x,
                    600, "a rendered job")
        if done["status"] != "succeeded":
            raise SystemExit(f"job failed: {done['error']}")
        session.get(done["result"]["url"], timeout=60).raise_for_status()
        times.append(time.perf_counter() - began)
        rtfs.append(done["timings"]["rtf"])
    return {"median_s": statistics.median(times), "min_s": min(times), "rtf_median": statistics.median(rtfs),
            "steps": steps or 40, "n": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle-jobs", type=int, default=40)
    parser.add_argument("--submits", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fast-steps", type=int, default=4)
    parser.add_argument("--checkpoint", type=Path, default=None, help="tiny checkpoint dir (made when absent)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-service-"))
    checkpoint = args.checkpoint or workdir / "ckpt"
    if not (checkpoint / "echo-tts-base").exists():
        subprocess.run([PY, "-m", "echo_tts.testing", "make-checkpoint", str(checkpoint), "--size", "tiny"],
                       cwd=ROOT, check=True, capture_output=True)
    stack = Stack(workdir, checkpoint)
    try:
        submits = bench_submits(stack, args.submits, args.concurrency)
        redis_url = stack.env["ECHO_REDIS_URL"]
        subprocess.run(["redis-cli", "-u", redis_url, "FLUSHALL"], check=True, capture_output=True)
        stack.start_worker()
        results = {
            "submit_to_start_idle_worker": bench_idle_start(stack, args.idle_jobs),
            "api_submits": submits,
            "submit_to_downloadable_default_steps": bench_downloadable(stack, args.runs, None),
            "submit_to_downloadable_fast": bench_downloadable(stack, args.runs, args.fast_steps),
        }
    finally:
        stack.close()
    print(json.dumps(results, indent=2))
    print(f"(logs in {workdir})", file=sys.stderr)


if __name__ == "__main__":
    main()
