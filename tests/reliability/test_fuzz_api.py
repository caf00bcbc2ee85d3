"""Schemathesis against the live API's ``/v1/openapi.json``, with alice's key: no ``5xx``, every response
conforms to the document (status code, content type, headers, body schema).

``test_fuzz_short`` (in ``make test``) runs the fuzzing phase with a few cases per operation (about 100,
well under a minute); ``test_fuzz_long`` runs in ``make reliability`` (``ECHO_RELIABILITY=1``): every
phase (examples, coverage, fuzzing, stateful) with ``ECHO_FUZZ_EXAMPLES`` cases per operation, at least
1,000 requests. The seed is printed on failure; rerun with ``ECHO_FUZZ_SEED=<seed>``.

No worker runs, so jobs stay queued. Two answers are by design and documented, so they are allowed:
``/readyz`` is ``503`` (no live worker) and ``POST /v1/audio/speech`` is ``504`` after
``ECHO_SPEECH_TIMEOUT_S`` (0.2 s here). Checks left out, and why:
- ``positive_data_acceptance``: the document cannot state every rule that makes a request valid (the
  audio in an upload must decode, a sample rate must suit the format, ``speed`` is 1.0 only), so
  schema-valid requests that break such a rule are rightly a 422.
- ``use_after_free`` / ``ensure_resource_availability``: ``DELETE`` on a job or a book cancels it; the
  record stays readable (``status: canceled``) by design, so a ``200`` after ``DELETE`` is correct.
Operations left out: the ``/events`` streams (server-sent events stay open while the job is queued, and
no worker runs here, so each would last until the request timeout); their own tests cover them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest
from api_helpers import API_KEYS, ApiServer

ST = str(Path(sys.executable).with_name("st"))
EXCLUDED_CHECKS = "positive_data_acceptance,use_after_free,ensure_resource_availability"
# Per-operation exceptions to "no 5xx": the two documented answers of a service without a worker.
CONFIG = """
# A request refused for its size (413, 414, 431) is rejected too.
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "414", "415", "422", "428", "429", "431"]

[[operations]]
include-path = "/readyz"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "503"]

[[operations]]
include-path = "/v1/audio/speech"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "504"]
"""


@pytest.fixture(scope="module")
def fuzz_api(launch_api: Callable[..., ApiServer], api_env: dict[str, str]) -> ApiServer:
    """The API as in ``api_server``, but speech gives up after 0.2 s (no worker will answer it)."""
    return launch_api({**api_env, "ECHO_SPEECH_TIMEOUT_S": "0.2"})


FIXED_SEED = "20261202"  # the short run's seed in make test


def run_schemathesis(api: ApiServer, workdir: Path, *args: str) -> tuple[int, str]:
    """``st run`` against the API's document; returns (cases generated, output). Fails on any failure."""
    config = workdir / "schemathesis.toml"
    config.write_text(CONFIG)
    # make test replays one fixed seed (CI must not fail on a case no change introduced); make reliability
    # draws a new one each run, printed on failure for ECHO_FUZZ_SEED to replay
    seed = os.environ.get("ECHO_FUZZ_SEED") or (None if os.environ.get("ECHO_RELIABILITY") else FIXED_SEED)
    command = [
        ST,
        "--config-file",
        str(config),
        "--no-color",
        "run",
        f"{api.url}/v1/openapi.json",
        "--header",
        f"Authorization: Bearer {API_KEYS['alice']}",
        "--checks",
        "all",
        "--exclude-checks",
        EXCLUDED_CHECKS,
        "--workers",
        "2",
        "--request-timeout",
        "10",
        "--exclude-path-regex",
        "/events$",
        "--generation-database",
        "none",
        "--output-truncate",
        "false",
        *(["--seed", seed] if seed else []),
        *args,
    ]
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=1800, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"schemathesis found failures:\n{output}\n--- API log ---\n{api.output()[-5000:]}"
    generated = re.search(r"(\d+) generated", output)
    assert generated, output
    print(f"schemathesis: {generated.group(1)} requests, no failures")
    return int(generated.group(1)), output


def test_fuzz_short(fuzz_api: ApiServer, tmp_path: Path) -> None:
    # Given the API with alice's key and no worker
    # When schemathesis sends a few generated requests (valid and invalid) to every operation
    cases, output = run_schemathesis(fuzz_api, tmp_path, "--phases", "fuzzing", "--max-examples", "5")
    # Then none was answered 5xx or outside the document, and about 100 requests were made
    assert cases >= 50, output
    assert "Traceback" not in fuzz_api.output()


@pytest.mark.reliability
def test_fuzz_long(fuzz_api: ApiServer, tmp_path: Path) -> None:
    if os.environ.get("ECHO_RELIABILITY") != "1":
        pytest.skip("the long fuzz run is part of `make reliability` (ECHO_RELIABILITY=1)")
    examples = os.environ.get("ECHO_FUZZ_EXAMPLES", "100")
    # Given the API with alice's key and no worker
    # When schemathesis runs every phase, including stateful sequences linking the operations
    cases, output = run_schemathesis(
        fuzz_api, tmp_path, "--phases", "examples,coverage,fuzzing,stateful", "--max-examples", examples
    )
    # Then no request among at least 1,000 was answered 5xx or outside the document
    print(output[-1500:])
    assert cases >= 1000, output
    assert "Traceback" not in fuzz_api.output()


# Regression tests for what the fuzzing found, each with the exact input.


def test_a_request_line_over_gunicorns_limit_is_a_documented_json_414(api: ApiServer) -> None:
    # Given a query string that makes the request line longer than gunicorn's 4094 bytes
    # (schemathesis sent GET /v1/audiobooks with ~6,000 bytes of repeated `before=` values)
    query = "?limit=40" + "&before=%7B%7D" * 450
    # When it is sent
    response = api.call("GET", "/v1/audiobooks" + query)
    # Then gunicorn's refusal is the JSON envelope (it was a text/html page), and the document lists 414
    assert response.status_code == 414
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "bad_request"
    assert "4094" in response.json()["error"]["message"]
    document = api.call("GET", "/v1/openapi.json").json()
    assert "414" in document["paths"]["/v1/audiobooks"]["get"]["responses"]


def test_a_book_body_that_is_not_an_object_is_a_documented_400(api: ApiServer) -> None:
    # Given the JSON body schemathesis sent: an array, not an object
    # When it is posted as a book
    response = api.call("POST", "/v1/audiobooks", data="[null, null]", headers={"Content-Type": "application/json"})
    # Then it is a 400 naming the problem, and the document lists 400 for this operation (it did not)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
    document = api.call("GET", "/v1/openapi.json").json()
    assert "400" in document["paths"]["/v1/audiobooks"]["post"]["responses"]


@pytest.mark.parametrize(
    ("path", "form"),
    [
        ("/v1/audiobooks", {"file": "Chapter one.", "chapters": "0", "overrides": "{}", "format": "mp3"}),
        ("/v1/jobs", {"text": "Hello.", "speaker_audio": "RIFF", "overrides": "{}", "metadata": "{}"}),
    ],
)
def test_the_documented_multipart_bodies_can_hold_their_file_and_json_fields(
    api: ApiServer, path: str, form: dict[str, str]
) -> None:
    # Given the document's multipart schema (it was an allOf with a model that forbids other properties,
    # so no body with `file` could match it: schemathesis reported "cannot generate test data")
    document = api.call("GET", "/v1/openapi.json").json()
    schema = document["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    # When a form with the file and the JSON-object fields as text is checked against it
    validator = jsonschema.Draft202012Validator({**schema, "components": document["components"]})
    # Then it matches
    assert list(validator.iter_errors(form)) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("select_chapters", [False]),
        ("seed", True),
        ("pause_chapter_s", False),
        ("loudness_lufs", True),
        ("overrides", {"speaker_kv_min_t": False}),
    ],
)
def test_booleans_are_not_numbers_in_a_book(api: ApiServer, field: str, value: object) -> None:
    # Given a JSON book with a boolean where a number goes (schemathesis: [false] and false were accepted)
    body = {"chapters": [{"text": "0", "title": "0"}], field: value}
    # When it is submitted
    response = api.call("POST", "/v1/audiobooks", json=body)
    # Then it is refused naming the field, as the document's "integer" says
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"]["errors"][0]["field"].startswith(field)
