"""Helpers for the deployment tests: read compose.yaml the way `docker compose` does (YAML merge
keys, `${VAR:-default}` interpolation from an empty environment, i.e. a fresh clone without a
`.env`), and turn a service into a local process (its own command and environment, with the
container host names rewritten to loopback ports)."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose.yaml"
MULTI_GPU_FILE = ROOT / "docker" / "compose.multi-gpu.yaml"
_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<default>[^}]*))?\}")


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's `${NAME}`, `${NAME:-default}` and `${NAME-default}` in every string of a tree."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        name, op, default = match["name"], match["op"], match["default"] or ""
        current = env.get(name)
        if op == ":-":
            return current or default
        if op == "-":
            return default if current is None else current
        return current or ""

    return _VAR.sub(one, value).replace("$$", "$")


class ComposeLoader(yaml.SafeLoader):
    """YAML with compose's merge tags: `!override` and `!reset` read as the plain value (or null)."""


def _tagged(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    value = loader.construct_scalar(node)
    return None if tag_suffix == "reset" and value == "" else value


ComposeLoader.add_multi_constructor("!", _tagged)


def load_compose(path: Path = COMPOSE_FILE, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The compose model after YAML merge keys and interpolation (defaults only unless `env`)."""
    return interpolate(raw_compose(path), env or {})


def raw_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose model as written (no interpolation), for schema validation."""
    return yaml.load(path.read_text(), Loader=ComposeLoader)  # noqa: S506 (a SafeLoader subclass)


def service_environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def service_command(service: dict[str, Any]) -> list[str]:
    """entrypoint + command as an argv list (the images' own defaults are not used by our services)."""
    argv: list[str] = []
    for part in ("entrypoint", "command"):
        value = service.get(part) or []
        argv += value.split() if isinstance(value, str) else [str(v) for v in value]
    return argv


def rewrite(text: str, hosts: Mapping[str, str]) -> str:
    """Replace each container address (`redis:6379`) with its local stand-in (`127.0.0.1:41234`)."""
    for old, new in hosts.items():
        text = text.replace(old, new)
    return text


def local_argv(argv: list[str], hosts: Mapping[str, str]) -> list[str]:
    """The container's argv for this machine: `python` is this interpreter, addresses rewritten."""
    out = [rewrite(a, hosts) for a in argv]
    if out and out[0] == "python":
        out[0] = sys.executable
    return out


def healthcheck_argv(service: dict[str, Any], hosts: Mapping[str, str]) -> list[str]:
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD", f"healthcheck should be exec form: {test}"
    return local_argv(test[1:], hosts)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_ok(
    argv: list[str], env: Mapping[str, str], *, timeout: float, what: str, watch: list[subprocess.Popen] = ()
) -> None:
    """Run a check command until it exits 0 (as Docker runs a healthcheck), or fail with its output."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        for proc in watch:
            if proc.poll() is not None:
                raise RuntimeError(f"{what}: a service exited with {proc.returncode} while waiting")
        done = subprocess.run(argv, env=dict(env), cwd=ROOT, capture_output=True, text=True, timeout=30)
        if done.returncode == 0:
            return
        last = (done.stdout + done.stderr)[-2000:]
        time.sleep(0.5)
    raise RuntimeError(f"{what} still failing after {timeout} s: {last}")


def stop(proc: subprocess.Popen, *, timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
