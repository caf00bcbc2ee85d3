"""`make dev`: the whole service on one machine without Docker.

Starts `redis-server` from the system (on loopback, data under out/dev/redis), one worker
(`python -m worker`, on the machine's device: ECHO_DEVICE defaults to auto), one assembler for
audiobooks (`python -m worker --role assemble`, no model) and the API
(`python -m api --bind HOST:PORT`), then waits; Ctrl-C stops them all. The settings are the
same as in the compose stack and come from your environment; with no ECHO_S3_ENDPOINT_URL the
local directory ECHO_STORAGE_DIR (default out/dev/storage here) is the storage and the API
serves downloads itself. `--tiny` writes a tiny random checkpoint (checkpoints/tiny) and uses
it, so the whole path runs on a CPU without downloading weights (the audio is noise).

    python scripts/dev.py [--host 127.0.0.1] [--api-port 8000] [--redis-port 6379] [--tiny]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY_DIR = ROOT / "checkpoints" / "tiny"


def log(message: str) -> None:
    print(f"[dev] {message}", flush=True)


def wait_for_port(host: str, port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"[dev] {proc.args[0]} exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"[dev] nothing listens on {host}:{port} after {timeout:.0f} s")


def wait_for_health(url: str, procs: list[subprocess.Popen], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            raise SystemExit(f"[dev] {dead[0].args} exited with {dead[0].returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"[dev] {url} did not answer 200 after {timeout:.0f} s")


def tiny_checkpoint(env: dict[str, str], directory: Path) -> None:
    """Write the tiny random checkpoint once and point the model settings at it."""
    if not (directory / "echo-tts-base" / "config.json").exists():
        log(f"writing a tiny random checkpoint to {directory}")
        subprocess.run(
            [sys.executable, "-m", "echo_tts.testing", "make-checkpoint", str(directory), "--size", "tiny"],
            cwd=ROOT,
            env=env,
            check=True,
        )
    env["ECHO_MODEL_REPO"] = str(directory / "echo-tts-base")
    env["ECHO_AE_REPO"] = str(directory / "fish-s1-dac-min")
    env.setdefault("ECHO_DTYPE", "float32")  # the tiny model is for any machine; CPUs emulate bfloat16 slowly


def environment(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("ECHO_REDIS_URL", f"redis://{args.host}:{args.redis_port}/0")
    if not env.get("ECHO_S3_ENDPOINT_URL"):
        env.setdefault("ECHO_STORAGE_DIR", str(args.state_dir / "storage"))
    # The repository root on the path, as the images have the packages installed.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    # Webhooks on, to receivers on this machine too (the API listens on loopback); a dev secret only.
    env.setdefault("ECHO_WEBHOOK_SECRET", "echo-dev-webhook-master-secret-0123456789")
    env.setdefault("ECHO_WEBHOOK_ALLOW_PRIVATE", "1")
    if args.tiny:
        tiny_checkpoint(env, args.tiny_dir)
    return env


def start_redis(args: argparse.Namespace) -> subprocess.Popen:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("[dev] redis-server is not installed (make redis-server installs it)")
    data = args.state_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            binary,
            "--bind",
            args.host,
            "--port",
            str(args.redis_port),
            "--dir",
            str(data),
            "--appendonly",
            "yes",
            "--save",
            "",
        ],
        stdout=subprocess.DEVNULL,
    )
    wait_for_port(args.host, args.redis_port, proc, timeout=20)
    return proc


def stop_all(procs: list[subprocess.Popen]) -> None:
    """Stop in reverse start order, each before the next: API, workers (warm shutdown), Redis last."""
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(args: argparse.Namespace) -> int:
    env = environment(args)
    procs: list[subprocess.Popen] = []
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        if "ECHO_REDIS_URL" not in os.environ:
            procs.append(start_redis(args))
            log(f"redis-server on {args.host}:{args.redis_port}")
        procs.append(subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=env))
        assembler_env = env | {"ECHO_WORKER_QUEUES": "tts-assembly,tts-webhooks"}
        procs.append(
            subprocess.Popen([sys.executable, "-m", "worker", "--role", "assemble"], cwd=ROOT, env=assembler_env)
        )
        procs.append(
            subprocess.Popen([sys.executable, "-m", "api", "--bind", f"{args.host}:{args.api_port}"], cwd=ROOT, env=env)
        )
        base = f"http://{args.host}:{args.api_port}"
        wait_for_health(f"{base}/healthz", procs, timeout=args.start_timeout)
        storage = env.get("ECHO_S3_ENDPOINT_URL") or env["ECHO_STORAGE_DIR"]
        log(f"API on {base} (storage: {storage}); Ctrl-C stops everything")
        while not stopping:
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                log(f"{dead[0].args} exited with {dead[0].returncode}; stopping")
                return 1
            time.sleep(0.5)
        return 0
    finally:
        stop_all(procs)
        log("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run Redis, one worker, one assembler and the API on this machine.")
    parser.add_argument("--host", default="127.0.0.1", help="address for the API and Redis (default 127.0.0.1)")
    parser.add_argument("--api-port", type=int, default=8000)
    parser.add_argument("--redis-port", type=int, default=6379, help="ignored when ECHO_REDIS_URL is set")
    parser.add_argument("--state-dir", type=Path, default=ROOT / "out" / "dev", help="Redis data and local storage")
    parser.add_argument("--tiny", action="store_true", help="use a tiny random checkpoint (no download, noise audio)")
    parser.add_argument("--tiny-dir", type=Path, default=TINY_DIR, help="where --tiny keeps its checkpoint")
    parser.add_argument("--start-timeout", type=float, default=120.0, help="seconds to wait for the API's /healthz")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
