"""The API restarted under load: gunicorn (``python -m api``, 2 processes) stopped with SIGTERM and, later,
SIGKILLed with all its processes, each time started again on the same port, while clients keep
submitting jobs.

Fault: SIGTERM of the gunicorn master (graceful: in-flight requests finish) and SIGKILL of its whole
process group (in-flight requests die with it), with 3 client threads submitting all the while; a
render worker keeps rendering.

What must survive: every answer a client gets is a 202 with a job id, a 503, or no answer at all
(connection refused or reset) — never a wrong answer (another status, or a 202 without an id); and
every job that got a 202 exists afterwards and ends ``succeeded`` (no accepted job lost).

``make test`` restarts it twice (one SIGTERM, one SIGKILL); ``make reliability`` 10 times, alternating.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
from fault_helpers import RELIABILITY, finish_job
from service_helpers import PYTHON, ROOT, free_port, process_env, wait_for

from jobs.contract import JobState
from jobs.jobstore import JobStore

pytestmark = [pytest.mark.slow, pytest.mark.reliability]  # short here, long with ECHO_RELIABILITY=1
RESTARTS = 10 if RELIABILITY else 2
CLIENTS = 3


class RestartableApi:
    """``python -m api`` on a fixed port, in a process group of its own (so SIGKILL takes every process)."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env, self.workdir, self.port = env, workdir, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.lives = 0

    def start(self) -> None:
        self.lives += 1
        with (self.workdir / f"api-{self.lives}.log").open("wb") as out:
            self.proc = subprocess.Popen(
                [PYTHON, "-m", "api", "--bind", f"127.0.0.1:{self.port}", "--workers", "2"],
                cwd=ROOT,
                env=process_env(self.env),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def up() -> bool:
            try:
                return requests.get(self.url + "/healthz", timeout=5).status_code == 200
            except requests.RequestException:
                return False

        wait_for(up, timeout=60, what="the API to come back", interval=0.05)

    def terminate(self) -> None:
        """SIGTERM to the master: gunicorn stops listening and lets in-flight requests finish."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)

    def kill(self) -> None:
        """SIGKILL to every process of the API at once (as when its container is killed)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("api-*.log")))


class Clients:
    """Threads that submit a short job every ~0.3 s each and sort every answer."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.accepted: list[str] = []
        self.answers: Counter[str] = Counter()
        self.wrong: list[str] = []
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(CLIENTS)]

    def _run(self, n: int) -> None:
        count = 0
        while not self.done.is_set():
            count += 1
            body = {"text": f"Client {n} job {count}.", "seed": count, "overrides": {"num_steps": 2}}
            try:
                answer = requests.post(f"{self.url}/v1/jobs", json=body, timeout=30)
            except requests.ConnectionError as exc:  # refused while down, or reset by the kill
                kind = "refused" if "refused" in str(exc).lower() else "no answer (reset)"
                with self.lock:
                    self.answers[kind] += 1
                time.sleep(0.05)
                continue
            with self.lock:
                self.answers[str(answer.status_code)] += 1
                if answer.status_code == 202 and _job_id(answer):
                    self.accepted.append(_job_id(answer))
                elif answer.status_code != 503:
                    self.wrong.append(f"{answer.status_code} {answer.text[:300]}")
            time.sleep(0.3)

    def __enter__(self) -> Clients:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.done.set()
        for thread in self.threads:
            thread.join(timeout=60)


def _job_id(answer: requests.Response) -> str:
    try:
        value = answer.json().get("id")
    except ValueError:
        return ""
    return value if isinstance(value, str) and value.startswith("job_") else ""


def test_the_api_restarted_under_load_answers_rightly_and_loses_no_accepted_job(
    service_env: dict[str, str], start_worker: Any, tmp_path: Path
) -> None:
    # Given the API and a render worker, and clients submitting jobs concurrently
    api = RestartableApi(service_env, tmp_path)
    api.start()
    start_worker(service_env)
    store = JobStore.from_url(service_env["ECHO_REDIS_URL"])
    downtimes: list[float] = []
    try:
        with Clients(api.url) as clients:
            time.sleep(1.5)
            for n in range(RESTARTS):
                # When the API is stopped (SIGTERM, then SIGKILL of every process, alternately) and started again
                down_at = time.monotonic()
                api.terminate() if n % 2 == 0 else api.kill()
                api.start()
                downtimes.append(time.monotonic() - down_at)
                time.sleep(1.5)
        # Then no client got a wrong answer: a 202 with a job id, a 503, or no answer
        assert clients.wrong == [], clients.wrong[:5]
        assert clients.accepted and clients.answers["202"] == len(clients.accepted)
        # And every accepted job exists and succeeds
        for job_id in clients.accepted:
            done = finish_job(api.url, job_id, timeout=300)
            assert done["status"] == "succeeded", done
        assert "Traceback" not in api.logs(), api.logs()[-3000:]
        # (records no client heard of: a SIGKILL between storing a job and answering; nobody holds their
        # ids, so they are not lost to anyone; the per-state counts say whether they ran)
        counts = {str(k): v for k, v in store.counts_by_state().items() if v}
        print(
            f"API restarts: {RESTARTS} ({(RESTARTS + 1) // 2} SIGTERM, {RESTARTS // 2} SIGKILL of every process); "
            f"answers: {dict(clients.answers)}; accepted {len(clients.accepted)}, succeeded {len(clients.accepted)}, "
            f"lost 0; down for median {sorted(downtimes)[len(downtimes) // 2]:.1f} s per restart; "
            f"records by state: {counts}"
        )
        assert all(store.get(job_id).status is JobState.SUCCEEDED for job_id in clients.accepted)  # type: ignore[union-attr]
    finally:
        api.stop()
