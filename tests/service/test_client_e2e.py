"""``echo-tts book`` and ``echo-tts submit`` (echo_client) as subprocesses against the real stack: the API,
a rendering worker and an assembling worker (real ``python -m worker`` processes on the tiny checkpoint),
a real Redis and an S3 server on loopback. The exit statuses without a stack are in tests/client/.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests
from service_helpers import PYTHON, ROOT, ApiProcess, process_env

from echo_client import EchoClient, book_idempotency_key
from jobs.settings import StorageSettings
from jobs.storage import open_storage
from worker.assembly import read_chapters

pytestmark = pytest.mark.slow
BOOK = b"# T\n\n## One\n\nHello.\n"
FAST = ["--seed", "5", "--steps", "2", "--poll", "0.2"]
FAST_OPTIONS = {"seed": 5, "overrides": {"num_steps": 2}}  # what FAST makes of the book's options


@pytest.fixture
def book_env(service_env: dict[str, str]) -> dict[str, str]:
    return service_env | {"ECHO_BOOK_GROUP_SIZE": "2"}


def start_workers(start_worker: Any, env: dict[str, str]) -> None:
    start_worker(env)
    start_worker(env | {"ECHO_WORKER_ROLE": "assemble"})


@pytest.fixture
def stack(book_env: dict[str, str], start_api: Any, start_worker: Any) -> ApiProcess:
    """The API, one rendering worker and one assembling worker."""
    api = start_api(book_env)
    start_workers(start_worker, book_env)
    return api


def echo_tts(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = process_env({"PYTHONPATH": str(ROOT)})
    command = [PYTHON, "-m", "echo_tts.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd, env=env, check=False)


def books_of(api: ApiProcess) -> list[dict[str, Any]]:
    answer = requests.get(f"{api.url}/v1/audiobooks", timeout=10)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["books"])


def test_book_writes_an_m4b_and_a_second_run_finds_the_same_book_and_renders_nothing(
    stack: ApiProcess, tmp_path: Path
) -> None:
    # Given a Markdown book
    (tmp_path / "tale.md").write_bytes(BOOK)
    # When `echo-tts book` renders it on the stack
    first = echo_tts("book", "tale.md", "--server", stack.url, *FAST, "-o", "tale.m4b", cwd=tmp_path)
    # Then it exits 0, prints the path, showed its progress, and the M4B has the book's chapter
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "tale.m4b" and "segments" in first.stderr
    assert [title for title, _, _ in read_chapters(tmp_path / "tale.m4b").chapters] == ["One"]
    [book] = books_of(stack)
    assert book["status"] == "succeeded" and book["segments_rendered"] == book["segments_total"] >= 1
    # When the same command runs again into another file
    second = echo_tts("book", "tale.md", "--server", stack.url, *FAST, "-o", "again.m4b", cwd=tmp_path)
    # Then it finds the first book: no second book, nothing rendered again, the same M4B written
    assert second.returncode == 0, second.stderr
    assert f"found audiobook {book['id']} from an earlier run (succeeded)" in second.stderr
    [again] = books_of(stack)
    assert again["id"] == book["id"] and again["segments_rendered"] == book["segments_rendered"]
    assert (tmp_path / "again.m4b").read_bytes() == (tmp_path / "tale.m4b").read_bytes()


def test_a_book_canceled_before_it_rendered_is_retried_by_the_next_run(
    book_env: dict[str, str], storage_settings: StorageSettings, start_api: Any, start_worker: Any, tmp_path: Path
) -> None:
    # Given the book of an interrupted run, canceled while no worker was running (the bucket made, as a
    # worker would have made it)
    open_storage(storage_settings).ensure_bucket()
    api = start_api(book_env)
    source = tmp_path / "tale.md"
    source.write_bytes(BOOK)
    with EchoClient(api.url) as client:
        key = book_idempotency_key(BOOK, "tale.md", FAST_OPTIONS)
        canceled = client.cancel_book(client.submit_book(source, idempotency_key=key, **FAST_OPTIONS)["id"])
    assert canceled["status"] == "canceled"
    start_workers(start_worker, book_env)
    # When `echo-tts book --json` runs with the same file and options
    done = echo_tts("book", "tale.md", "--server", api.url, *FAST, "-o", "tale.m4b", "--json", cwd=tmp_path)
    # Then it retried that book to success, printed its JSON, and wrote the M4B
    assert done.returncode == 0, done.stderr
    assert f"retrying audiobook {canceled['id']}" in done.stderr
    final = json.loads(done.stdout)
    assert final["id"] == canceled["id"] and final["status"] == "succeeded" and final["result"]["m4b_url"]
    assert [book["id"] for book in books_of(api)] == [canceled["id"]]
    assert len(read_chapters(tmp_path / "tale.m4b").chapters) == 1


def test_a_refused_book_exits_2_with_the_apis_message(book_env: dict[str, str], start_api: Any, tmp_path: Path) -> None:
    # Given the API and an empty text file, which the API refuses
    api = start_api(book_env)
    (tmp_path / "empty.txt").write_bytes(b"")
    refusal = requests.post(f"{api.url}/v1/audiobooks", files={"file": ("empty.txt", b"")}, timeout=10)
    error = refusal.json()["error"]
    # When `echo-tts book` sends it
    done = echo_tts("book", "empty.txt", "--server", api.url, "-o", "empty.m4b", cwd=tmp_path)
    # Then it exits 2 with the API's message and code, and nothing is stored or written
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"echo-tts: error: {error['message']} (HTTP {refusal.status_code} {error['code']})\n"
    assert refusal.status_code == 422
    assert books_of(api) == [] and not (tmp_path / "empty.m4b").exists()


def test_submit_renders_a_job_and_downloads_its_audio(stack: ApiProcess, tmp_path: Path) -> None:
    # Given the stack
    # When `echo-tts submit` renders a sentence to a WAV file
    done = echo_tts("submit", "Hello there.", "--server", stack.url, *FAST, "-o", "hello.wav", cwd=tmp_path)
    # Then it exits 0, prints the path, and the file is a WAV
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "hello.wav"
    assert (tmp_path / "hello.wav").read_bytes()[:4] == b"RIFF"


def test_speak_streams_to_a_file_and_to_stdout_and_status_wait_and_voices_read_the_server(
    stack: ApiProcess, tmp_path: Path
) -> None:
    import io

    import soundfile as sf

    # Given the stack
    # When `echo-tts speak` writes a file (format from its name) and then streams wav to stdout
    speak = echo_tts("speak", "Hello there. How are you?", "--server", stack.url, *FAST, "-o", "hi.wav", cwd=tmp_path)
    assert speak.returncode == 0, speak.stderr
    env = process_env({"PYTHONPATH": str(ROOT)})
    piped = subprocess.run(
        [PYTHON, "-m", "echo_tts.cli", "speak", "Hello there.", "--server", stack.url, *FAST, "--quiet"],
        capture_output=True, timeout=120, cwd=tmp_path, env=env, check=False,
    )  # fmt: skip
    # Then the file is a wav that decodes, its path printed; stdout carried a streamed wav
    assert speak.stdout.strip() == "hi.wav"
    samples, rate = sf.read(tmp_path / "hi.wav")
    assert rate == 44100 and len(samples) > 0
    assert piped.returncode == 0 and piped.stdout[:4] == b"RIFF", piped.stderr
    assert len(sf.read(io.BytesIO(piped.stdout))[0]) > 0
    # When the job behind the file is looked up, waited for again and downloaded, and the voices listed
    [job] = [
        j for j in requests.get(f"{stack.url}/v1/jobs", timeout=10).json()["jobs"] if "How are" in j["request"]["text"]
    ]
    status = echo_tts("status", job["id"], "--server", stack.url, cwd=tmp_path)
    wait = echo_tts("wait", job["id"], "--server", stack.url, "-o", "again.wav", "--quiet", cwd=tmp_path)
    voices = echo_tts("voices", "--server", stack.url, "--json", cwd=tmp_path)
    unknown = echo_tts("status", "job_nope", "--server", stack.url, cwd=tmp_path)
    # Then status names its state, wait writes the stored file (the same samples as the stream), voices is JSON
    assert status.returncode == 0 and status.stdout.startswith(f"{job['id']} succeeded"), status.stderr
    assert wait.returncode == 0 and wait.stdout.strip() == "again.wav", wait.stderr
    assert (sf.read(tmp_path / "again.wav")[0] == samples).all()
    assert voices.returncode == 0 and isinstance(json.loads(voices.stdout), list), voices.stderr
    # and an unknown job is a refusal: exit 2 with the API's message
    assert unknown.returncode == 2 and "job_nope" in unknown.stderr
