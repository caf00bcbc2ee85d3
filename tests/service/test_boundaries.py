"""Import boundaries: the API runs where torch is not installed, and only settings modules read the
environment."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

from api_helpers import ROOT

BLOCKER = textwrap.dedent("""
    import sys

    class _NoTorch:
        '''A meta path finder that makes torch (and what needs it) impossible to import.'''
        BLOCKED = ("torch", "torchaudio", "echo_tts", "av", "numpy", "safetensors")

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.BLOCKED:
                raise ImportError(f"{name} is blocked in this test (the API image has no torch)")
            return None

    sys.meta_path.insert(0, _NoTorch())
""")

PROBE = textwrap.dedent("""
    import sys
    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("the blocker did not block torch")
    import api
    from api import create_app
    import api.wsgi  # builds the app from the environment, as gunicorn does
    app = create_app({"ENV": {"ECHO_REDIS_URL": "redis://127.0.0.1:1/0", "ECHO_STORAGE_DIR": sys.argv[1]}})
    assert app.url_map is not None
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchaudio", "echo_tts", "numpy")
                   or m in ("worker.engine", "worker.tasks", "worker.celery_app", "worker.runner", "worker.render",
                            "worker.voices", "worker.heartbeat"))
    print("HEAVY", heavy)
    raise SystemExit(1 if heavy else 0)
""")


def test_import_api_works_where_torch_cannot_be_imported(tmp_path: Path) -> None:
    # Given a Python whose sitecustomize makes torch, echo_tts and numpy unimportable
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = {
        "PYTHONPATH": f"{tmp_path}:{ROOT}",
        "PATH": "/usr/bin:/bin",
        "ECHO_REDIS_URL": "redis://127.0.0.1:1/0",
        "ECHO_STORAGE_DIR": str(tmp_path / "storage"),
    }
    # When it imports the API and builds apps (from a mapping, and from the environment like gunicorn)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path / "storage")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Then it succeeds without importing any heavy or worker-internal module
    assert done.returncode == 0, done.stdout + done.stderr
    assert "HEAVY []" in done.stdout


def _environment_reads(path: Path) -> list[str]:
    """Places in ``path`` that read the process environment (os.environ, os.getenv, from os import environ)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "environb", "getenv", "getenvb"):
            if isinstance(node.value, ast.Name) and node.value.id == "os":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            found += [
                f"{path.relative_to(ROOT)}:{node.lineno}"
                for alias in node.names
                if alias.name in ("environ", "environb", "getenv", "getenvb")
            ]
    return found


def test_only_the_settings_modules_read_the_environment() -> None:
    # Given every module of the service and the model library
    modules = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    # When they are searched for environment reads
    reads = [place for path in modules for place in _environment_reads(path)]
    # Then only the three settings modules read it
    allowed = {"api/settings.py", "worker/settings.py", "jobs/settings.py"}
    assert modules and {place.split(":")[0] for place in reads} <= allowed, reads


PACKAGES = ("api", "worker", "jobs", "echo_tts")


def _imported_roots(package: str) -> dict[str, set[str]]:
    """Top-level names each module of ``package`` imports (absolute imports; relative ones stay inside)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def _offenders(package: str, forbidden: set[str]) -> list[str]:
    return [
        f"{module} imports {sorted(names & forbidden)}"
        for module, names in _imported_roots(package).items()
        if names & forbidden
    ]


def test_api_imports_nothing_from_worker() -> None:
    # Given every module of the API
    # When their imports are read
    # Then none names the worker package (the API reaches the shared layer, jobs/, instead)
    assert _offenders("api", {"worker", "torch", "torchaudio", "echo_tts"}) == []


def test_api_and_worker_build_on_jobs() -> None:
    # Given the API and the worker
    # When their imports are read
    # Then both import the shared layer
    assert any("jobs" in names for names in _imported_roots("api").values())
    assert any("jobs" in names for names in _imported_roots("worker").values())


def test_jobs_imports_neither_side_nor_torch() -> None:
    # Given the shared layer
    # When its imports are read
    # Then it names neither the API nor the worker, and no torch, Celery worker internals or Flask
    assert _offenders("jobs", {"api", "worker", "torch", "torchaudio", "flask", "echo_tts"}) == []


def test_echo_tts_imports_none_of_the_service_packages() -> None:
    # Given the model library
    # When its imports are read
    # Then it knows nothing of the service
    assert _offenders("echo_tts", {"api", "worker", "jobs"}) == []
