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
   median over ``--runs``, at the preset's default 40 steps and at ``--fast-steps``;
4. cross-job batching: ``--batch-jobs`` short jobs submitted at once, jobs per second from the first
   submit to the last success, with ``ECHO_JOB_BATCHING=false`` and ``true`` side by side (the worker
   restarted between, alternated over ``--runs``; ``--batch-steps``, default the preset's 40, so the
   sampler's share of a job is a real render's): ``job_batch_gain`` = on ÷ off.

    .venv/bin/python bench/bench_service.py [--idle-jobs 40] [--submits 400] [--concurrency 8] [--runs 3]
    ECHO_DEVICE=cuda ECHO_DTYPE=bfloat16 python bench/bench_service.py --worker-only   # a GPU box, no API

``--worker-only`` skips the API and S3 (submits go through Redis and Celery exactly as the API
sends them; storage is a local directory), so it runs where only the worker's extra is installed.

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
sys.path.insert(0, str(ROOT))  # `python bench/bench_service.py` from anywhere finds worker/
SENTENCE = "The quick brown fox jumps over the lazy dog."
LONG_TEXT = " ".join([SENTENCE] * 80)  # ~3,600 characters: five generations, split and stitched


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


def tiny_checkpoint(directory: Path) -> Path:
    """``directory`` holding the tiny random checkpoint (written there when it is not yet)."""
    if not (directory / "echo-tts-base").exists():
        subprocess.run(
            [PY, "-m", "echo_tts.testing", "make-checkpoint", str(directory), "--size", "tiny"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
    return directory


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


class Stack:
    """Redis, moto S3, the API and a worker as child processes of this script."""

    def __init__(self, workdir: Path, checkpoint: Path, *, with_api: bool = True) -> None:
        self.workdir, self.procs = workdir, []  # type: ignore[var-annotated]
        redis_port, s3_port, api_port = free_port(), free_port(), free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("ECHO_", "AWS_"))} | {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "HF_HUB_OFFLINE": "1",
            "ECHO_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "ECHO_MODEL_REPO": str(checkpoint / "echo-tts-base"),
            "ECHO_AE_REPO": str(checkpoint / "fish-s1-dac-min"),
            "ECHO_DEVICE": os.environ.get("ECHO_DEVICE", "cpu"),
            "ECHO_DTYPE": os.environ.get("ECHO_DTYPE", "float32"),
            "ECHO_STORAGE_DIR": str(workdir / "storage"),
        }
        if with_api:
            self.env |= {
                "ECHO_S3_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
                "ECHO_S3_BUCKET": "bench",
                "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench",
                "AWS_DEFAULT_REGION": "us-east-1",
            }
        self.api = f"http://127.0.0.1:{api_port}"
        self._start(
            [
                os.environ.get("REDIS_SERVER") or shutil.which("redis-server") or "redis-server",
                "--port",
                str(redis_port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
            ],
            "redis",
        )
        wait(lambda: self._listening(redis_port), 30, "redis")
        if with_api:
            self._start([PY, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)], "s3")
            wait(lambda: self._listening(s3_port), 30, "moto")
            self._start(
                [PY, "-m", "api", "--bind", f"127.0.0.1:{api_port}", "--workers", "2", "--log-level", "warning"], "api"
            )
            wait(lambda: self._healthy(), 60, "the API")
        self.worker: subprocess.Popen[bytes] | None = None

    def _start(self, args: list[str], name: str, **env: str) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("ab")
        proc = subprocess.Popen(args, cwd=ROOT, env=self.env | env, stdout=log, stderr=subprocess.STDOUT)
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

    def start_worker(self, **env: str) -> None:
        import redis

        self.worker = self._start([PY, "-m", "worker", "--loglevel", "WARNING"], "worker", **env)
        client = redis.Redis.from_url(self.env["ECHO_REDIS_URL"])
        wait(
            lambda: self.worker.poll() is None and list(client.scan_iter("echo:heartbeat:*")) or self.worker.poll(),
            300,
            "a ready worker",
            0.2,
        )
        if self.worker.poll() is not None:
            raise SystemExit(f"the worker exited; see {self.workdir / 'worker.log'}")
        beat = client.get(next(iter(client.scan_iter("echo:heartbeat:*"))))
        self.worker_info = json.loads(beat) if beat else {}

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


class HttpClient:
    """Talks to the API over HTTP, as a user would."""

    def __init__(self, stack: Stack) -> None:
        self.api, self.session = stack.api, requests.Session()

    def submit(self, **body: Any) -> dict[str, Any]:
        answer = self.session.post(self.api + "/v1/jobs", json={"text": SENTENCE, "seed": 1} | body, timeout=30)
        answer.raise_for_status()
        return dict(answer.json())

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.session.get(f"{self.api}/v1/jobs/{job_id}", timeout=30).json())

    def cancel(self, job_id: str) -> None:
        self.session.delete(f"{self.api}/v1/jobs/{job_id}", timeout=30)

    def download(self, job: dict[str, Any]) -> int:
        answer = self.session.get(job["result"]["url"], timeout=60)
        answer.raise_for_status()
        return len(answer.content)


class DirectClient:
    """Bypasses the API (``--worker-only``): writes the record and sends the task as the API does."""

    def __init__(self, stack: Stack) -> None:
        from celery import Celery

        from jobs.jobstore import JobStore
        from jobs.storage import LocalStorage

        url = stack.env["ECHO_REDIS_URL"]
        self.store, self.storage = JobStore.from_url(url), LocalStorage(Path(stack.env["ECHO_STORAGE_DIR"]))
        self.celery = Celery("bench", broker=url, set_as_current=False)
        self.celery.conf.update(task_serializer="json", accept_content=["json"])

    def submit(self, **body: Any) -> dict[str, Any]:
        from jobs import contract

        record, _ = self.store.create("bench", {})
        request = contract.SynthesisRequest(**({"job_id": record.id, "text": SENTENCE, "seed": 1} | body))
        self.celery.send_task(
            contract.SYNTHESIZE, kwargs=request.to_dict(), queue=contract.QUEUE_INTERACTIVE, task_id=record.id
        )
        return {"id": record.id}

    def job(self, job_id: str) -> dict[str, Any]:
        record = self.store.get(job_id)
        assert record is not None
        return {
            "status": record.status.value,
            "created_ts": record.created_ts,
            "started_ts": record.started_ts,
            "result": record.result,
            "timings": record.timings,
            "error": record.error,
        }

    def cancel(self, job_id: str) -> None:
        self.store.request_cancel(job_id)

    def download(self, job: dict[str, Any]) -> int:
        return len(self.storage.get_bytes(job["result"]["key"]))


def bench_idle_start(client: Any, count: int) -> dict[str, float]:
    latencies = []
    for _ in range(count):
        job = client.submit(overrides={"num_steps": 100})
        running = wait(lambda j=job: (x := client.job(j["id"]))["started_ts"] and x, 60, "start", 0.005)
        latencies.append(running["started_ts"] - running["created_ts"])
        client.cancel(job["id"])
        wait(lambda j=job: client.job(j["id"])["status"] == "canceled", 60, "cancel", 0.01)
        time.sleep(0.2)  # the worker acks and goes back to waiting on the queue
    return {
        "p50_ms": 1000 * percentile(latencies, 50),
        "p99_ms": 1000 * percentile(latencies, 99),
        "mean_ms": 1000 * statistics.fmean(latencies),
        "n": count,
    }


def bench_submits(stack: Stack, total: int, concurrency: int) -> dict[str, float]:
    clients = [HttpClient(stack) for _ in range(concurrency)]

    def one(i: int) -> float:
        began = time.perf_counter()
        clients[i % concurrency].submit(overrides={"num_steps": 2})
        return time.perf_counter() - began

    clients[0].submit()  # connection set-up outside the clock
    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = list(pool.map(one, range(total)))
    elapsed = time.perf_counter() - began
    return {
        "submits_per_s": total / elapsed,
        "p50_ms": 1000 * percentile(latencies, 50),
        "p99_ms": 1000 * percentile(latencies, 99),
        "n": total,
        "concurrency": concurrency,
    }


def bench_downloadable(client: Any, runs: int, steps: int | None, text: str = SENTENCE) -> dict[str, float]:
    times, rtfs = [], []
    for seed in range(runs):
        began = time.perf_counter()
        job = client.submit(text=text, seed=seed, **({"overrides": {"num_steps": steps}} if steps else {}))
        done = wait(
            lambda j=job: (x := client.job(j["id"]))["status"] in ("succeeded", "failed") and x, 600, "a rendered job"
        )
        if done["status"] != "succeeded":
            raise SystemExit(f"job failed: {done['error']}")
        client.download(done)
        times.append(time.perf_counter() - began)
        rtfs.append(done["timings"]["rtf"])
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "rtf_median": statistics.median(rtfs),
        "steps": steps or 40,
        "n": runs,
    }


def bench_first_audio(stack: Stack, runs: int, steps: int | None) -> dict[str, Any]:
    """Time to the first audio byte of ``POST /v1/audio/speech`` for a long text: streamed (pcm: the first
    piece, cut short and rendered alone) ÷ whole-file (flac: after the last piece), side by side."""
    session = requests.Session()
    overrides = {"overrides": {"num_steps": steps}} if steps else {}

    def first_byte(fmt: str, seed: int) -> tuple[float, float]:
        body = {"input": LONG_TEXT, "voice": "none", "response_format": fmt, "seed": seed} | overrides
        began = time.perf_counter()
        with session.post(stack.api + "/v1/audio/speech", json=body, stream=True, timeout=600) as answer:
            answer.raise_for_status()
            chunks = answer.iter_content(chunk_size=None)
            next(chunks)
            first = time.perf_counter() - began
            for _ in chunks:
                pass
        return first, time.perf_counter() - began

    streamed, whole = [], []
    for seed in range(runs):  # alternated, so a change in the machine's load hits both alike
        streamed.append(first_byte("pcm", seed))
        whole.append(first_byte("flac", seed))
    first_streamed = statistics.median(f for f, _ in streamed)
    first_whole = statistics.median(f for f, _ in whole)
    return {
        "streamed_first_audio_s": first_streamed,
        "streamed_total_s": statistics.median(t for _, t in streamed),
        "whole_file_first_audio_s": first_whole,
        "first_audio_speedup": first_whole / first_streamed,
        "chars": len(LONG_TEXT),
        "steps": steps or 40,
        "n": runs,
    }


def bench_job_batching(stack: Stack, client: Any, jobs: int, runs: int, steps: int) -> dict[str, Any]:
    """Jobs per second for ``jobs`` short jobs submitted at once, cross-job batching off and on."""

    def burst(batching: bool, round_: int) -> tuple[float, float]:
        stack.stop_worker()
        stack.start_worker(ECHO_JOB_BATCHING="true" if batching else "false")
        began = time.perf_counter()
        texts = [f"Short request number {i} of round {round_}." for i in range(jobs)]
        submitted = [client.submit(text=t, seed=i, overrides={"num_steps": steps}) for i, t in enumerate(texts)]
        done = [
            wait(lambda j=job: (x := client.job(j["id"]))["status"] in ("succeeded", "failed") and x, 600, "a job")
            for job in submitted
        ]
        if any(job["status"] != "succeeded" for job in done):
            raise SystemExit(f"a job failed: {[job['error'] for job in done if job['error']]}")
        sizes = [float((job.get("timings") or {}).get("batch_jobs", 1)) for job in done]
        return jobs / (time.perf_counter() - began), statistics.mean(sizes)

    off, on = [], []
    for round_ in range(runs):  # alternated, so a change in the machine's load hits both alike
        off.append(burst(False, round_))
        on.append(burst(True, round_))
    rate_off, rate_on = statistics.median(r for r, _ in off), statistics.median(r for r, _ in on)
    return {
        "jobs_per_s_alone": rate_off,
        "jobs_per_s_batched": rate_on,
        "job_batch_gain": rate_on / rate_off,
        "mean_jobs_per_call": statistics.mean(size for _, size in on),
        "jobs": jobs,
        "steps": steps,
        "n": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle-jobs", type=int, default=40)
    parser.add_argument("--submits", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fast-steps", type=int, default=4)
    parser.add_argument("--batch-jobs", type=int, default=8, help="short jobs per burst (cross-job batching)")
    parser.add_argument("--batch-steps", type=int, default=40, help="diffusion steps of those jobs")
    parser.add_argument("--checkpoint", type=Path, default=None, help="tiny checkpoint dir (made when absent)")
    parser.add_argument(
        "--worker-only",
        action="store_true",
        help="no API and no S3: submit through Redis + Celery as the API does, local storage",
    )
    parser.add_argument("--batching-only", action="store_true", help="only the cross-job batching measurement")
    parser.add_argument(
        "--first-audio-only",
        action="store_true",
        help="only the streamed-speech measurement (time to first audio, streamed vs whole file)",
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-service-"))
    checkpoint = tiny_checkpoint(args.checkpoint or workdir / "ckpt")
    stack = Stack(workdir, checkpoint, with_api=not args.worker_only)
    results: dict[str, Any] = {}
    try:
        if args.batching_only:
            stack.start_worker()
            results["job_batching"] = bench_job_batching(
                stack, HttpClient(stack), args.batch_jobs, args.runs, args.batch_steps
            )
            print(json.dumps(results, indent=2))
            return
        if args.first_audio_only:
            stack.start_worker()
            results["speech_first_audio"] = bench_first_audio(stack, args.runs, args.fast_steps)
            print(json.dumps(results, indent=2))
            return
        if not args.worker_only:
            results["api_submits"] = bench_submits(stack, args.submits, args.concurrency)
            import redis

            redis.Redis.from_url(stack.env["ECHO_REDIS_URL"]).flushall()
        stack.start_worker()
        results["worker"] = {k: stack.worker_info.get(k) for k in ("device", "model_revision", "load_s")}
        client = DirectClient(stack) if args.worker_only else HttpClient(stack)
        results["submit_to_start_idle_worker"] = bench_idle_start(client, args.idle_jobs)
        results["submit_to_downloadable_default_steps"] = bench_downloadable(client, args.runs, None)
        results["submit_to_downloadable_fast"] = bench_downloadable(client, args.runs, args.fast_steps)
        results["long_text_3600_chars_default_steps"] = bench_downloadable(client, 1, None, LONG_TEXT)
        if not args.worker_only:
            results["speech_first_audio"] = bench_first_audio(stack, args.runs, args.fast_steps)
        results["job_batching"] = bench_job_batching(stack, client, args.batch_jobs, args.runs, args.batch_steps)
    finally:
        stack.close()
    print(json.dumps(results, indent=2))
    print(f"(logs in {workdir})", file=sys.stderr)


if __name__ == "__main__":
    main()
