"""The web page: ``GET /`` (index.html) and its assets under ``/ui/`` (``api/web/``), plain files, no key.

The page itself holds no data: it is a client of the JSON API (``/v1/...``), which keeps its own auth,
so serving the page needs none (the key is typed into the page and sent by its script). It is not in
the OpenAPI document, like any page that is not part of the API (docs/web.md).

Headers: a strict Content-Security-Policy (scripts, styles and requests from this origin only; no
inline code, no framing), ``nosniff``, no referrer. Audio may also come from the storage's public
origin, since a job's ``result.url`` is a presigned S3/MinIO URL there. ``Cache-Control: no-cache``
with an ETag: the browser revalidates (a 304 when unchanged), so a new release is seen at once.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

from flask import Blueprint, Response, request

from api.errors import APIError
from api.services import services
from jobs.errors import ErrorCode

WEB_DIR = Path(__file__).with_name("web")
# the only files served: a fixed list, never a path taken from the URL
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}

bp = Blueprint("web", __name__)


@cache
def _read(name: str) -> bytes:
    """A file of api/web (read once per process: they change only with a release)."""
    return (WEB_DIR / name).read_bytes()


def _asset(name: str) -> Response:
    response = Response(_read(name), content_type=ASSETS[name])
    response.add_etag()
    response.cache_control.no_cache = True
    response.make_conditional(request)  # 304 when the browser's copy is current (works in place)
    return response


def storage_origin() -> str | None:
    """The origin of presigned download URLs (S3/MinIO's public endpoint); None with local storage,
    where the API serves the audio itself."""
    storage = services().settings.storage
    endpoint = storage.public_endpoint_url or storage.endpoint_url
    if not endpoint:
        return None
    parts = urlsplit(endpoint)
    host = parts.netloc.rpartition("@")[2]  # never credentials in a header
    return f"{parts.scheme}://{host}"


def content_security_policy() -> str:
    media = " ".join(filter(None, ("'self'", "blob:", storage_origin())))
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "img-src 'self' data:",
            f"media-src {media}",
            "form-action 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        )
    )


@bp.after_request
def _security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = content_security_policy()
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    return response


@bp.get("/")
def index() -> Response:
    return _asset("index.html")


@bp.get("/ui/<name>")
def asset(name: str) -> Response:
    if name not in ASSETS or name == "index.html":
        raise APIError(404, ErrorCode.NOT_FOUND, f"no page asset {name!r}", {"asset": name})
    return _asset(name)
