"""A loopback front for moto that checks presigned GET URLs the way S3 and MinIO do, then forwards them.

moto serves a presigned URL whatever its age or signature, so a test of URL expiry needs something that
refuses like S3: this gateway recomputes the SigV4 query signature (``X-Amz-Signature`` over the
canonical request, with the test credentials) and compares the clock with ``X-Amz-Date`` +
``X-Amz-Expires``; a bad signature or an expired URL is answered ``403`` with S3's error body
(``SignatureDoesNotMatch``, ``AccessDenied: Request has expired``), anything else is forwarded to moto.
The API is pointed at it with ``ECHO_S3_PUBLIC_ENDPOINT_URL``, the setting for the endpoint clients reach.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, unquote

import requests
from service_helpers import S3_CREDENTIALS, free_port

_FORWARDED = ("Content-Type", "Content-Length", "Content-Disposition", "ETag", "Last-Modified")


def _sign(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def expected_signature(method: str, path: str, query: str, host: str, secret: str) -> tuple[str, dict[str, str]]:
    """SigV4 for a presigned request: the signature it should carry, and its parsed ``X-Amz-*`` fields."""
    pairs = [part.partition("=") for part in query.split("&") if part]
    params = {unquote(k): unquote(v) for k, _, v in pairs}
    canonical_query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params.items()) if k != "X-Amz-Signature"
    )
    signed = params.get("X-Amz-SignedHeaders", "host")
    headers = "".join(f"{name}:{host if name == 'host' else ''}\n" for name in signed.split(";"))
    canonical = "\n".join([method, path, canonical_query, headers, signed, "UNSIGNED-PAYLOAD"])
    _akid, date, region, service, terminal = params.get("X-Amz-Credential", "////").split("/")[:5]
    scope = f"{date}/{region}/{service}/{terminal}"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", params.get("X-Amz-Date", ""), scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _sign(f"AWS4{secret}".encode(), date)
    for part in (region, service, terminal):
        key = _sign(key, part)
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest(), params


class PresignGateway:
    """``url``: where clients fetch presigned URLs; ``refused``: what it refused, as (reason, path)."""

    def __init__(self, target: str, *, secret: str = S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]) -> None:
        self.target, self.secret = target.rstrip("/"), secret
        self.refused: list[tuple[str, str]] = []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                gateway.handle(self)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        path, _, query = request.path.partition("?")
        signature, params = expected_signature("GET", path, query, request.headers.get("Host", ""), self.secret)
        if "X-Amz-Signature" not in params or not hmac.compare_digest(signature, params["X-Amz-Signature"]):
            return self._refuse(request, "SignatureDoesNotMatch", "The request signature does not match")
        signed_at = calendar.timegm(time.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ"))
        if time.time() > signed_at + int(params["X-Amz-Expires"]):
            return self._refuse(request, "AccessDenied", "Request has expired")
        answer = requests.get(self.target + request.path, timeout=30)
        request.send_response(answer.status_code)
        for name in _FORWARDED:
            if name in answer.headers:
                request.send_header(name, answer.headers[name])
        request.end_headers()
        request.wfile.write(answer.content)
        return None

    def _refuse(self, request: BaseHTTPRequestHandler, code: str, message: str) -> None:
        self.refused.append((code, request.path))
        body = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
        request.send_response(403)
        request.send_header("Content-Type", "application/xml")
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
