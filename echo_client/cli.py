"""The remote commands of ``echo-tts``: render on a server, wait with a progress bar, download.

    book     a book file -> an M4B (progress bar)          submit   text -> a job, waited for, downloaded
    speak    text -> audio streamed to a file or stdout     status   a job's state (--json: its JSON)
    wait     a job id -> waited for, downloaded             voices   the voices this key can use

The parsers are in ``echo_tts/cli.py`` (which imports this module only for these two commands, so the
local commands need no httpx). ``run(args)`` prints what it did and returns the exit status scripts use:

    0  done: the file is written and its path printed (``--json``: the final JSON instead)
    1  the book or job failed, was canceled or expired (its error message on stderr)
    2  bad usage, or the API refused the request (4xx: its message on stderr)
    3  the server is unreachable or unavailable (no answer, or 5xx): try again later
    130  interrupted: the server keeps rendering; ``echo-tts book`` run again picks the same book up

``echo-tts book`` sends an Idempotency-Key derived from the file's bytes, its name and the options,
so a second run with the same file finds the book of the first (the API replays it); a failed or
canceled book found that way is retried, which renders only the segments not yet rendered.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from echo_client.client import EchoClient
from echo_client.errors import ClientError
from echo_client.forms import book_idempotency_key, save_atomically

__all__ = ["COMMANDS", "EXIT_FAILED", "EXIT_OK", "EXIT_REFUSED", "EXIT_UNREACHABLE", "run"]

EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
_BOOK_POLL_S, _JOB_POLL_S = 2.0, 0.5
# output extension -> job format (the API's formats; aac comes in an .m4a)
_FORMATS = {"wav": "wav", "flac": "flac", "mp3": "mp3", "opus": "opus", "ogg": "opus", "aac": "aac", "m4a": "aac"}
_FORMATS |= {"pcm": "pcm", "raw": "pcm"}


class UsageError(Exception):
    """Raised when the command line cannot be acted on (a missing file, bad JSON in --overrides, ...)."""


def _error(message: str) -> None:
    print(f"echo-tts: error: {' '.join(message.split())}", file=sys.stderr)


def _note(args: argparse.Namespace, message: str) -> None:
    if not args.quiet:
        print(f"echo-tts: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Run ``args.command`` (one of ``COMMANDS``) against ``args.server``; the exit status."""
    try:
        if not args.server.startswith(("http://", "https://")):
            raise UsageError(f"--server {args.server!r}: give a URL such as http://127.0.0.1:8000")
        with EchoClient(args.server, _api_key(args), timeout=args.http_timeout) as client:
            return COMMANDS[args.command](client, args)
    except UsageError as exc:
        _error(str(exc))
        return EXIT_REFUSED
    except ClientError as exc:
        _error(exc.message if exc.status is None else f"{exc.message} (HTTP {exc.status} {exc.code})")
        return EXIT_UNREACHABLE if exc.status is None or exc.status >= 500 else EXIT_REFUSED
    except OSError as exc:  # reading the book, writing the output
        _error(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
        return EXIT_REFUSED
    except KeyboardInterrupt:
        _error("interrupted; the server keeps rendering: run the same command again to pick it up")
        return EXIT_INTERRUPTED


def _api_key(args: argparse.Namespace) -> str | None:
    if args.api_key_file is not None:
        return Path(args.api_key_file).read_text().strip() or None
    return str(args.api_key) if args.api_key else None


def _overrides(args: argparse.Namespace) -> dict[str, Any] | None:
    overrides: dict[str, Any] = {}
    if args.overrides:
        try:
            overrides = json.loads(args.overrides)
        except ValueError:
            raise UsageError(f"--overrides {args.overrides!r} is not JSON, e.g. '{{\"num_steps\": 24}}'") from None
        if not isinstance(overrides, dict):
            raise UsageError("--overrides must be a JSON object, e.g. '{\"num_steps\": 24}'")
    if args.steps is not None:
        overrides["num_steps"] = args.steps
    return overrides or None


def _writable(output: Path) -> Path:
    if not output.resolve().parent.is_dir():
        raise UsageError(f"output directory {str(output.parent)!r} does not exist")
    return output


def _failure(final: dict[str, Any], what: str) -> str:
    error = final.get("error") or {}
    reason = error.get("message") or "no reason given"
    return f"{what} {final['id']} {final['status']}: {reason}" + (f" ({error['code']})" if error.get("code") else "")


def _finish(args: argparse.Namespace, final: dict[str, Any], output: Path | None) -> int:
    """Print the outcome: the final JSON with ``--json``, else the written file; None: it did not succeed."""
    if args.json:
        print(json.dumps(final, indent=2))
    elif output is not None:
        print(output)
    if output is None:
        return EXIT_FAILED
    return EXIT_OK


# -- echo-tts book ---------------------------------------------------------------------------------


def book_options(args: argparse.Namespace) -> dict[str, Any]:
    """The book options of the command line, as ``EchoClient.submit_book`` and the key derivation take them."""
    given = {
        "voice": args.voice,
        "preset": args.preset,
        "overrides": _overrides(args),
        "seed": args.seed,
        "format": args.format,
        "chapters": args.chapters,
        "title": args.title,
        "author": args.author,
    }
    return {k: v for k, v in given.items() if v is not None}


def _book(client: EchoClient, args: argparse.Namespace) -> int:
    source: Path = args.file
    if not source.is_file():
        raise UsageError(f"book file {str(source)!r} does not exist")
    output = _writable(args.output or Path(source.stem + ".m4b"))
    options = book_options(args)
    key = book_idempotency_key(source.read_bytes(), source.name, options)
    submitted = client.submit_book(source, idempotency_key=key, **options)
    book: dict[str, Any] = submitted
    if submitted.replayed:
        _note(args, f"found audiobook {book['id']} from an earlier run ({book['status']})")
    if book["status"] in ("failed", "canceled"):
        _note(args, f"retrying audiobook {book['id']}: only what has not rendered yet renders")
        book = client.retry_book(book["id"])
    with _Bar(not (args.json or args.quiet), _book_meter, "segments") as bar:
        final = client.wait_book(book["id"], bar.update, poll_s=args.poll_s or _BOOK_POLL_S)
    if final["status"] != "succeeded":
        _error(_failure(final, "audiobook"))
        return _finish(args, final, None)
    return _finish(args, final, client.download_book(final, output))


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _book_meter(book: dict[str, Any]) -> tuple[int, int, str]:
    chapters = book.get("chapters") or []
    assembled = sum(1 for c in chapters if c.get("status") == "assembled")
    about = f"{book['status']}, chapters {assembled}/{len(chapters)}, ETA {_clock(book.get('eta_s'))}"
    return int(book.get("segments_done") or 0), int(book.get("segments_total") or 0), about


# -- echo-tts submit -------------------------------------------------------------------------------


def _job_format(args: argparse.Namespace) -> str:
    if args.format:
        return str(args.format).lower()
    extension = args.output.suffix.lower().lstrip(".")
    if extension not in _FORMATS:
        raise UsageError(f"cannot tell the format from {str(args.output)!r}; use --format ({', '.join(_FORMATS)})")
    return _FORMATS[extension]


def _submit(client: EchoClient, args: argparse.Namespace) -> int:
    _writable(args.output)
    text = sys.stdin.read() if args.text == "-" else args.text
    options = {
        "voice": args.voice,
        "preset": args.preset,
        "overrides": _overrides(args),
        "seed": args.seed,
        "format": _job_format(args),
        "sample_rate": args.sample_rate,
    }
    job = client.submit_job(text, idempotency_key=args.idempotency_key, speaker_audio=args.speaker, **options)
    if job.replayed:
        _note(args, f"found job {job['id']} from an earlier submission ({job['status']})")
    return _wait_and_download(client, args, str(job["id"]))


def _wait_and_download(client: EchoClient, args: argparse.Namespace, job_id: str) -> int:
    with _Bar(not (args.json or args.quiet), _job_meter, None) as bar:
        final = client.wait_job(job_id, bar.update, poll_s=args.poll_s or _JOB_POLL_S)
    if final["status"] != "succeeded":
        _error(_failure(final, "job"))
        return _finish(args, final, None)
    return _finish(args, final, client.download(final, args.output))


# -- echo-tts wait / status / voices ---------------------------------------------------------------


def _wait(client: EchoClient, args: argparse.Namespace) -> int:
    """A job submitted earlier (by id): wait with the progress bar, then download it."""
    _writable(args.output)
    return _wait_and_download(client, args, args.job_id)


def _status(client: EchoClient, args: argparse.Namespace) -> int:
    """One line (or the JSON) about a job; 0 whatever its state, so scripts read the state from the output."""
    job = client.job(args.job_id)
    if args.json:
        print(json.dumps(job, indent=2))
        return EXIT_OK
    _, _, about = _job_meter(job)
    error = job.get("error") or {}
    print(f"{job['id']} {about}" + (f": {error.get('message')} ({error.get('code')})" if error else ""))
    return EXIT_OK


def _voices(client: EchoClient, args: argparse.Namespace) -> int:
    """The voices this key can use: id, name, state, whose (own or operator)."""
    voices = client.voices()
    if args.json:
        print(json.dumps(voices, indent=2))
        return EXIT_OK
    for voice in voices:
        whose = "operator" if voice.get("operator") else "own"
        print(f"{voice['id']}\t{voice.get('name') or '-'}\t{voice.get('status')}\t{whose}")
    if not voices:
        _note(args, "no voices yet: POST /v1/voices uploads one; --voice none uses the model's own voice")
    return EXIT_OK


# -- echo-tts speak --------------------------------------------------------------------------------


def _speak(client: EchoClient, args: argparse.Namespace) -> int:
    """Streamed speech: the audio goes to the file or stdout as it renders; then the job is checked."""
    to_stdout = str(args.output) == "-"
    fmt = str(args.format).lower() if args.format else ("wav" if to_stdout else _job_format(args))
    if not to_stdout:
        _writable(args.output)
    text = sys.stdin.read() if args.text == "-" else args.text
    options = {"preset": args.preset, "overrides": _overrides(args), "seed": args.seed, "sample_rate": args.sample_rate}
    with client.speak(text, voice=args.voice or "none", response_format=fmt, **options) as speech:
        if to_stdout:
            for chunk in speech:
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()  # a player reading the pipe starts with the first piece
        else:
            save_atomically(speech, args.output)
    # a raw stream cannot say how the job ended (an SSE stream would): its record does
    final = client.wait_job(speech.job_id, poll_s=0.2, timeout=60) if speech.job_id else {}
    if final and final["status"] != "succeeded":
        _error(_failure(final, "job"))
        return EXIT_FAILED
    if args.json:
        print(json.dumps(final, indent=2))
    elif not to_stdout:
        print(args.output)
    return EXIT_OK


COMMANDS: dict[str, Callable[[EchoClient, argparse.Namespace], int]] = {
    "book": _book,
    "submit": _submit,
    "speak": _speak,
    "status": _status,
    "wait": _wait,
    "voices": _voices,
}


def _job_meter(job: dict[str, Any]) -> tuple[int, int, str]:
    progress = job.get("progress") or {}
    about = (
        f"{job['status']}, segment {progress.get('segments_done') or 0}/{progress.get('segments_total') or '?'}, "
        f"step {progress.get('step') or 0}/{progress.get('total_steps') or '?'}"
    )
    return round(100 * float(progress.get("fraction") or 0.0)), 100, about


# -- the progress bar ------------------------------------------------------------------------------

Meter = Callable[[dict[str, Any]], tuple[int, int, str]]


class _Bar:
    """A tqdm bar on stderr fed with each JSON the wait reads; silent when disabled or without tqdm.

    ``meter`` turns the JSON into ``(done, total, text)``; the bar appears once ``total`` is known
    (a book's segments are counted when it has been planned). The ETA is the server's ``eta_s``.
    """

    def __init__(self, enabled: bool, meter: Meter, unit: str | None) -> None:
        self._meter, self._unit = meter, unit
        self._bar: Any = None
        self._last: tuple[int, int, str] | None = None
        self._tqdm: Any = None
        if enabled:
            try:
                self._tqdm = importlib.import_module("tqdm").tqdm
            except ImportError:
                self._tqdm = None

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.close()

    def update(self, body: dict[str, Any]) -> None:
        if self._tqdm is None:
            return
        reading = self._meter(body)
        done, total, about = reading
        if total <= 0 or reading == self._last:  # unchanged: no new line in a log that is not a terminal
            return
        self._last = reading
        if self._bar is None:
            counts = f" {{n_fmt}}/{{total_fmt}} {self._unit}" if self._unit else ""
            fmt = "{percentage:3.0f}%|{bar:30}|" + counts + "{postfix}"  # tqdm puts ", " before the postfix
            self._bar = self._tqdm(total=total, file=sys.stderr, bar_format=fmt, dynamic_ncols=True)
        self._bar.total = total
        self._bar.n = min(done, total)
        self._bar.set_postfix_str(about, refresh=False)
        self._bar.refresh()
