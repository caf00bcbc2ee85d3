"""docs/api-reference.md is generated from the OpenAPI document; this fails when they drift apart."""

from __future__ import annotations

import subprocess
import sys

from api_helpers import ROOT


def test_the_generated_api_reference_matches_the_openapi_document() -> None:
    # Given the document the API serves (built from the pydantic models and api/openapi.py)
    # When the reference is rendered from it and compared with the file in docs/
    done = subprocess.run(
        [sys.executable, "scripts/api_reference.py", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    # Then they agree (run scripts/api_reference.py after changing a route or a schema)
    assert done.returncode == 0, done.stderr
    text = (ROOT / "docs" / "api-reference.md").read_text()
    assert "| POST | `/v1/audiobooks` |" in text and "### `BookCreate`" in text
