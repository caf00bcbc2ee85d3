"""``python -m api --bind HOST:PORT [--workers N] [--threads N] [--streams N]``: serve ``api.wsgi:app`` with gunicorn.
``python -m api hash-key [--name NAME] [--new]``: the hashed form of an API key for ``ECHO_API_KEYS``.

The settings are checked before gunicorn starts, so a missing or malformed one stops the process with
a message that names it (exit status 2). gunicorn's header limits are raised so that the app answers
oversized headers itself, with the JSON envelope (:mod:`api.request_limits`).

An open event stream (:mod:`api.routes_events`) holds a gthread thread for its life, so each process runs
``--threads`` threads for ordinary requests plus ``--streams`` for streams (a stream beyond that is 503).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gunicorn.app.base import BaseApplication

REDIS_POOL = 100  # redis-py's default max_connections: each thread holds at most one connection at a time


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: dict[str, Any], *, streams: int) -> None:
        self.options, self.streams = options, streams
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from api.routes_events import end_streams_on_signal, set_stream_slots
        from api.wsgi import app

        set_stream_slots(app, self.streams)
        end_streams_on_signal()  # in the worker, after gunicorn's handlers: a graceful stop ends streams
        return app


def _forget_log_context(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    from jobs.logs import clear

    clear()


def hash_key(argv: list[str]) -> int:
    """``python -m api hash-key [--name NAME] [--new]``: the ``ECHO_API_KEYS`` entry that stores a key hashed.

    Reads the token from stdin (so it stays out of the shell's history), or with ``--new`` makes a random
    one and prints it on stderr, once; prints ``NAME:sha256:<hex>`` (or ``sha256:<hex>``) on stdout."""
    import hashlib
    import secrets

    parser = argparse.ArgumentParser(prog="python -m api hash-key", description=hash_key.__doc__)
    parser.add_argument("--name", help="the key's name (the owner of its jobs and voices)")
    parser.add_argument("--new", action="store_true", help="make a new random token (printed on stderr)")
    args = parser.parse_args(argv)
    if args.new:
        token = secrets.token_urlsafe(32)
        print(f"new token (give it to the client; it is not stored): {token}", file=sys.stderr)
    else:
        token = sys.stdin.readline().strip()
    if len(token) < 8 or any(c.isspace() for c in token):
        print("api hash-key: the token must be 8+ characters without spaces", file=sys.stderr)
        return 2
    entry = f"sha256:{hashlib.sha256(token.encode()).hexdigest()}"
    print(f"{args.name}:{entry}" if args.name else entry)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["hash-key"]:
        return hash_key(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m api", description="Run the Echo-TTS job API (gunicorn).")
    parser.add_argument("--bind", default="127.0.0.1:8000", help="HOST:PORT (default 127.0.0.1:8000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker (default 4)")
    parser.add_argument(
        "--streams", type=int, default=32, help="event streams per worker, on threads of their own (default 32)"
    )
    parser.add_argument("--timeout", type=int, default=60, help="seconds before a silent worker is restarted")
    parser.add_argument(
        "--log-level", default=None, help="gunicorn's and the app's (default: ECHO_LOG_LEVEL, else info)"
    )
    args = parser.parse_args(argv)

    from api.http_errors import install as json_errors_from_gunicorn
    from api.request_limits import GUNICORN_FIELD_SIZE, GUNICORN_FIELDS

    if not (1 <= args.streams and args.threads + args.streams <= REDIS_POOL):
        print(f"api: --threads + --streams must be at most {REDIS_POOL} (the Redis client's pool)", file=sys.stderr)
        return 2
    from api.settings import ApiSettings, SettingsError
    from jobs.logs import dict_config

    try:
        settings = ApiSettings.from_env()
    except SettingsError as exc:
        print(f"api: configuration error: {exc}", file=sys.stderr)
        return 2
    json_errors_from_gunicorn()  # its own 400/414/431 refusals with the JSON envelope, not text/html
    _Gunicorn(
        {
            "bind": args.bind,
            "workers": args.workers,
            "threads": args.threads + args.streams,
            "worker_class": "gthread",
            "timeout": args.timeout,
            "loglevel": (args.log_level or settings.log_level).lower(),
            # every line, gunicorn's own and access lines included, through jobs.logs (JSON by default)
            "logconfig_dict": dict_config(settings.log_format, (args.log_level or settings.log_level).upper()),
            "post_request": _forget_log_context,  # after the access line, which carries the request's ids
            "accesslog": "-",
            "errorlog": "-",
            # generous, so that Flask sees oversized headers and answers them with the JSON envelope
            "limit_request_field_size": GUNICORN_FIELD_SIZE,
            "limit_request_fields": GUNICORN_FIELDS,
        },
        streams=args.streams,
    ).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
