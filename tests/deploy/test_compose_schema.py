"""compose.yaml (and the multi-GPU override) against the Compose Specification's JSON schema.

The schema comes vendored in the check-jsonschema package (`vendor/compose-spec.json`, Apache-2.0,
from compose-spec/compose-spec), so the test needs no network and no docker engine.
`docker compose config` validates too when the compose CLI plugin is installed.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from deploy_support import COMPOSE_FILE, MULTI_GPU_FILE, ROOT, raw_compose


def compose_schema() -> dict[str, Any]:
    try:
        vendored = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    except ModuleNotFoundError:
        pytest.fail("check-jsonschema (a test dependency) is missing: it ships the Compose Specification schema")
    return json.loads(vendored.read_text())


def violations(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(compose_schema())
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(document)]


@pytest.mark.parametrize("path", [COMPOSE_FILE, MULTI_GPU_FILE], ids=lambda p: p.name)
def test_each_compose_file_is_valid_against_the_compose_specification(path: Path) -> None:
    # Given a compose file as written
    document = raw_compose(path)
    # When it is validated against the Compose Specification schema
    errors = violations(document)
    # Then there is nothing to report
    assert errors == []


def test_the_schema_check_rejects_a_misspelt_service_key() -> None:
    # Given compose.yaml with one service key misspelt
    document = copy.deepcopy(raw_compose())
    document["services"]["api"]["depends"] = document["services"]["api"].pop("depends_on")
    # When it is validated
    errors = violations(document)
    # Then the schema names the bad key (so the test above can fail)
    assert any("depends" in e for e in errors), errors


def _compose_plugin() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    return subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _compose_plugin(), reason="the docker compose CLI plugin is not installed here")
def test_docker_compose_config_accepts_the_stack_without_an_engine() -> None:
    # Given the docker CLI with its compose plugin (no engine needed to render the model)
    # When it renders the stack with the optional monitoring profile
    argv = ["docker", "compose", "-f", str(COMPOSE_FILE), "--profile", "monitoring", "config", "--quiet"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    # Then it accepts it
    assert done.returncode == 0, done.stderr
