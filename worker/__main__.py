"""``python -m worker [--role render|assemble] [--queues tts,tts-bulk] [--loglevel INFO] [--hostname NAME]``

Starts one Celery worker process (``--pool=solo --concurrency=1``). Role ``render`` (the default)
loads the model and serves the tts and tts-bulk queues: run one per GPU, e.g. with
``CUDA_VISIBLE_DEVICES=N`` per process. Role ``assemble`` loads no model and serves tts-assembly:
it plans audiobooks and assembles their chapters and M4B on the CPU. Settings come from the
environment (``worker.settings``); a missing or malformed one stops the process with a message
naming it (exit status 2).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

from jobs import logs
from worker.settings import SettingsError, WorkerSettings


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__.split("\n\n")[1])
    parser.add_argument(
        "--role",
        choices=("render", "assemble"),
        help="render (default: ECHO_WORKER_ROLE or render) loads the model; assemble does books' CPU work without it",
    )
    parser.add_argument(
        "--queues",
        "-Q",
        help="comma-separated queues (default: ECHO_WORKER_QUEUES, else "
        "tts,tts-bulk for render and tts-assembly for assemble)",
    )
    parser.add_argument(
        "--loglevel", "-l", default=None, help="DEBUG, INFO, WARNING, ERROR (default: ECHO_LOG_LEVEL, else INFO)"
    )
    parser.add_argument("--hostname", "-n", default=None, help="worker name (default: echo-PID@HOST)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = WorkerSettings.from_env(role=args.role)
    except SettingsError as exc:
        print(f"python -m worker: bad setting: {exc}", file=sys.stderr)
        return 2
    loglevel = (args.loglevel or settings.log_level).upper()
    logs.configure(settings.log_format, loglevel)  # Celery keeps it (celery_app: setup_logging)
    from .celery_app import create_celery

    app = create_celery(settings)
    queues = args.queues or ",".join(settings.queues)
    name = args.hostname or f"echo-{os.getpid()}@%h"
    argv_worker = [
        "worker",
        "--pool=solo",
        "--concurrency=1",
        f"--queues={queues}",
        f"--loglevel={loglevel}",
        "--without-mingle",
        "--without-gossip",
        f"--hostname={name}",
    ]
    if settings.log_format == "json":  # Celery's banner is plain text on stdout: one JSON line says it instead
        argv_worker.insert(0, "--quiet")  # a global option of celery's, before the sub-command
        logging.getLogger("worker").info(
            "starting worker %s: role %s, queues %s, pool solo", name.replace("%h", socket.gethostname()),
            settings.role, queues,
        )  # fmt: skip
    app.worker_main(argv_worker)
    return 0


if __name__ == "__main__":
    sys.exit(main())
