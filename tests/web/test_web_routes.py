"""The page's routes (api/routes_web.py) in the Flask app itself: headers, caching, what is served and what
is not. The browser tests (test_web_page.py) show that the page works under these headers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from service_helpers import S3_CREDENTIALS

from api import create_app


@pytest.fixture
def client(redis_server: str, s3_endpoint: str) -> Iterator[Any]:
    env = {
        "ECHO_REDIS_URL": redis_server,
        "ECHO_API_KEYS": "web:web-token-0001",
        "ECHO_S3_ENDPOINT_URL": s3_endpoint,
        "ECHO_S3_PUBLIC_ENDPOINT_URL": "https://user:secret@media.example.com:9443/prefix",
        "ECHO_S3_BUCKET": "echo-web-routes",
        **S3_CREDENTIALS,
    }
    with create_app({"ENV": env}).test_client() as test_client:
        yield test_client


def test_the_page_and_its_assets_need_no_key_and_carry_a_strict_policy(client: Any) -> None:
    """Given an API with keys on and presigned URLs signed for a public storage host
    When the page and its two assets are fetched without a key
    Then each is 200 with its type, revalidated on every use (no-cache and an ETag), under a policy that
    allows this origin only, plus the storage's public origin (without its credentials) for audio."""
    for path, kind in (("/", "text/html"), ("/ui/app.js", "text/javascript"), ("/ui/style.css", "text/css")):
        answer = client.get(path)
        assert answer.status_code == 200 and answer.mimetype == kind, path
        assert answer.headers["Cache-Control"] == "no-cache" and answer.headers["ETag"]
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        policy = dict(part.split(" ", 1) for part in answer.headers["Content-Security-Policy"].split("; "))
        assert policy["default-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
        assert policy["script-src"] == policy["style-src"] == policy["connect-src"] == "'self'"
        assert policy["media-src"] == "'self' blob: https://media.example.com:9443"
    assert b'src="/ui/app.js"' in client.get("/").data


def test_an_unchanged_asset_is_a_304(client: Any) -> None:
    """Given the script as first served
    When it is asked for again with its ETag
    Then the answer is 304 without a body."""
    first = client.get("/ui/app.js")
    again = client.get("/ui/app.js", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""


@pytest.mark.parametrize("path", ["/ui/index.html", "/ui/nothing.js", "/ui/../routes_web.py", "/ui/%2e%2e/__init__.py"])
def test_only_the_listed_assets_are_served(client: Any, path: str) -> None:
    """Given / When a path under /ui/ that is not one of the page's assets is asked for
    Then it is the API's 404 envelope (no file outside the list is ever read)."""
    answer = client.get(path)
    assert answer.status_code == 404 and answer.get_json()["error"]["code"] == "not_found"


def test_the_page_is_not_part_of_the_api_document(client: Any) -> None:
    """Given / When the OpenAPI document is read
    Then it lists no page route: the page is a client of the API, not part of it."""
    paths = client.get("/v1/openapi.json").get_json()["paths"]
    assert "/" not in paths and not any(path.startswith("/ui") for path in paths)
