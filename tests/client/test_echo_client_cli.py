"""The client's boundary (importable without torch, Flask or the service) and the CLI's exit statuses
where no stack is needed. The CLI against the real stack is in tests/service/test_client_e2e.py."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

BLOCKER = textwrap.dedent("""
    import sys

    class _Blocked:
        '''A meta path finder that makes the heavy and server-side packages impossible to import.'''
        BLOCKED = ("torch", "torchaudio", "echo_tts", "numpy", "flask", "werkzeug", "celery", "redis", "boto3",
                   "pydantic", "api", "worker", "jobs")

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.BLOCKED:
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, _Blocked())
""")

PROBE = textwrap.dedent("""
    import sys
    import echo_client
    import echo_client.cli
    client = echo_client.EchoClient("http://127.0.0.1:1")
    client.close()
    print("OK", sorted(echo_client.__all__))
""")


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "echo_tts.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        check=False,
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_client_imports_where_torch_flask_and_the_service_packages_cannot(tmp_path: Path) -> None:
    # Given a Python whose sitecustomize blocks torch, Flask, Celery, Redis and the service's packages
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"}
    # When it imports the client and its command-line runner and builds a client
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    # Then that works
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("OK") and "EchoClient" in done.stdout


def test_book_against_an_unreachable_server_exits_3_naming_it(tmp_path: Path) -> None:
    # Given a book and a port nothing listens on
    (tmp_path / "t.md").write_bytes(b"# T\n\n## One\n\nHello.\n")
    server = f"http://127.0.0.1:{closed_port()}"
    # When the book is sent there
    done = run_cli("book", "t.md", "--server", server, "-o", "t.m4b", cwd=tmp_path)
    # Then the exit status is 3 with one line naming the server, and nothing is written
    assert done.returncode == 3, done.stderr
    assert done.stderr.startswith("echo-tts: error: cannot reach") and server in done.stderr
    assert not (tmp_path / "t.m4b").exists()


def test_book_with_bad_usage_exits_2_before_calling_the_server(tmp_path: Path) -> None:
    # Given a missing book, bad overrides, and a server address without a scheme
    (tmp_path / "t.md").write_bytes(b"# T\n\nHello.\n")
    # When each is run
    missing = run_cli("book", "absent.epub", "--server", "http://127.0.0.1:1", cwd=tmp_path)
    bad_json = run_cli("book", "t.md", "--server", "http://127.0.0.1:1", "--overrides", "{steps", cwd=tmp_path)
    no_scheme = run_cli("book", "t.md", "--server", "localhost:8000", cwd=tmp_path)
    no_format = run_cli("submit", "Hi.", "--server", "http://127.0.0.1:1", "-o", "out.xyz", cwd=tmp_path)
    # Then each exits 2 with a message saying what is wrong
    assert (missing.returncode, bad_json.returncode, no_scheme.returncode, no_format.returncode) == (2, 2, 2, 2)
    assert "absent.epub" in missing.stderr and "does not exist" in missing.stderr
    assert "--overrides" in bad_json.stderr and "--server" in no_scheme.stderr and "--format" in no_format.stderr


def test_the_local_commands_do_not_import_the_client() -> None:
    # Given the CLI module
    probe = "import sys, echo_tts.cli as c; c.main(['presets']); print('CLIENT', 'echo_client' in sys.modules)"
    # When it runs a local command
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    # Then the client was never imported
    assert done.returncode == 0, done.stderr
    assert "CLIENT False" in done.stdout
