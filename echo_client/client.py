"""``EchoClient``: the service's HTTP API (docs/api.md) from Python, on httpx.

    with EchoClient("http://127.0.0.1:8000", api_key="...") as echo:
        job = echo.submit_job("Hello there.", format="mp3", seed=42)
        done = echo.wait_job(job["id"])
        echo.download(done, "hello.mp3")

        book = echo.submit_book("novel.epub", voice="narrator", overrides={"num_steps": 24})
        done = echo.wait_book(book["id"], on_progress=lambda b: print(b["progress"]))
        echo.download_book(done, "novel.m4b")

Every answer is the API's JSON as a dict. A refusal raises :class:`ClientError` built from the API's
error envelope; no answer at all raises :class:`ServerUnreachable`. Downloads follow the API's 302 to
a presigned URL (sending the API key only to the API itself) or read the bytes the API streams.
"""

from __future__ import annotations

import mimetypes
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from echo_client.errors import ClientError, ServerUnreachable, WaitTimedOut
from echo_client.forms import book_form_fields, form_value, save_atomically

__all__ = ["TERMINAL_STATES", "EchoClient", "Submission"]

TERMINAL_STATES = frozenset({"succeeded", "failed", "canceled", "expired"})
_MAX_REDIRECTS = 5
_CHUNK = 1 << 16
_SPEECH_READ_S = 600.0  # longest pause between two chunks of streamed speech before giving up
_OUTAGE_GRACE_S = 60.0  # a wait rides out an API restart or a network blip this long
_USER_AGENT = "echo-client/0.1"
Progress = Callable[[dict[str, Any]], None]


class Submission(dict[str, Any]):
    """The JSON of a submitted job or book; ``replayed`` is True when its Idempotency-Key found an earlier one."""

    def __init__(self, body: dict[str, Any], *, replayed: bool) -> None:
        super().__init__(body)
        self.replayed = replayed


def _error_of(response: httpx.Response) -> ClientError:
    """The API's error envelope as a ClientError; any other answer under the code ``http_error``."""
    try:
        error = response.json()["error"]
        return ClientError(response.status_code, str(error["code"]), str(error["message"]), error.get("details"))
    except (ValueError, KeyError, TypeError):
        text = " ".join(response.text.split())[:300]
        message = f"HTTP {response.status_code} from {response.url}" + (f": {text}" if text else "")
        return ClientError(response.status_code, "http_error", message)


def _json_of(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ClientError(response.status_code, "invalid_response", f"{response.url} did not answer a JSON object")
    return body


class Speech:
    """A speech answer being received: iterate it for the audio bytes as they arrive. ``job_id`` is the
    job behind it (``GET /v1/jobs/{id}`` tells whether it succeeded), ``sample_rate`` its output rate."""

    def __init__(self, response: httpx.Response, chunks: Iterator[bytes]) -> None:
        self._response, self._chunks = response, chunks
        self.job_id = response.headers.get("X-Job-Id")
        self.content_type = response.headers.get("Content-Type", "")
        rate = response.headers.get("X-Audio-Sample-Rate")
        self.sample_rate = int(rate) if rate and rate.isdigit() else None

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> Speech:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class EchoClient:
    """A client of one Echo-TTS service. ``timeout`` bounds each HTTP call (seconds), not a wait."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = httpx.URL(base_url.rstrip("/") + "/")
        self._api_key = api_key
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            headers={"User-Agent": _USER_AGENT, "Accept": "application/json"},
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EchoClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------------

    def _is_api(self, url: httpx.URL) -> bool:
        return (url.scheme, url.host, url.port) == (self.base_url.scheme, self.base_url.host, self.base_url.port)

    def _send(self, method: str, url: str, *, stream: bool = False, **kwargs: Any) -> httpx.Response:
        """One request; the API key goes only to the API's own origin (never to a presigned URL)."""
        request = self._http.build_request(method, url.lstrip("/") if url.startswith("/") else url, **kwargs)
        if self._api_key and self._is_api(request.url):
            request.headers["Authorization"] = f"Bearer {self._api_key}"
        try:
            return self._http.send(request, stream=stream)
        except httpx.TimeoutException as exc:
            raise ServerUnreachable(f"{request.url.host}: no answer in time ({exc})", code="timeout") from exc
        except httpx.TransportError as exc:
            origin = f"{request.url.scheme}://{request.url.netloc.decode()}"
            raise ServerUnreachable(f"cannot reach {origin}: {exc}") from exc

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._send(method, path, **kwargs)
        if response.is_error:
            raise _error_of(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return _json_of(self._call(method, path, **kwargs))

    def _submit(self, path: str, idempotency_key: str | None, **kwargs: Any) -> Submission:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        response = self._call("POST", path, headers=headers, **kwargs)
        return Submission(_json_of(response), replayed=response.headers.get("Idempotent-Replayed") == "true")

    def _wait(
        self,
        fetch: Callable[[], dict[str, Any]],
        what: str,
        on_progress: Progress | None,
        poll_s: float,
        timeout: float | None,
    ) -> dict[str, Any]:
        """Poll ``fetch`` until a terminal status; transient failures are ridden out for a minute."""
        deadline = None if timeout is None else time.monotonic() + timeout
        outage_since: float | None = None
        last: dict[str, Any] = {}
        while True:
            try:
                last, outage_since = fetch(), None
            except ClientError as exc:
                if not exc.transient:
                    raise
                outage_since = outage_since or time.monotonic()
                if time.monotonic() - outage_since > _OUTAGE_GRACE_S:
                    raise
            else:
                if on_progress is not None:
                    on_progress(last)
                if last.get("status") in TERMINAL_STATES:
                    return last
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimedOut(f"{what} has not finished within {timeout:g} s", last)
            time.sleep(poll_s)

    def _download(self, url: str, path: str | os.PathLike[str]) -> Path:
        """GET ``url`` into ``path`` (temporary file, then rename), following redirects by hand."""
        response = self._send("GET", url, stream=True)
        for _ in range(_MAX_REDIRECTS):
            if not response.is_redirect:
                break
            response.close()
            response = self._send("GET", str(response.url.join(response.headers["Location"])), stream=True)
        try:
            if response.is_redirect or response.is_error:
                response.read()
                raise _error_of(response)
            save_atomically(self._chunks(response), path)
        finally:
            response.close()
        return Path(path)

    @staticmethod
    def _chunks(response: httpx.Response) -> Iterator[bytes]:
        try:
            yield from response.iter_bytes(_CHUNK)
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"the download from {response.url.host} broke off: {exc}") from exc

    # -- jobs -------------------------------------------------------------------------------------

    def submit_job(
        self,
        text: str,
        *,
        idempotency_key: str | None = None,
        speaker_audio: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> Submission:
        """POST /v1/jobs: ``voice``, ``preset``, ``overrides``, ``seed``, ``format``, ``sample_rate``, ``metadata``.

        With ``speaker_audio`` (a file) the job is sent as a form with that one-shot reference clip.
        """
        body = {"text": text, **{k: v for k, v in options.items() if v is not None}}
        if speaker_audio is None:
            return self._submit("v1/jobs", idempotency_key, json=body)
        fields = {k: form_value(v) for k, v in body.items()}
        with open(speaker_audio, "rb") as clip:
            files = {"speaker_audio": (os.path.basename(speaker_audio), clip, "application/octet-stream")}
            return self._submit("v1/jobs", idempotency_key, data=fields, files=files)

    def job(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"v1/jobs/{quote(job_id, safe='')}")

    def jobs(self, *, status: str | None = None, limit: int | None = None, cursor: str | None = None) -> dict[str, Any]:
        """GET /v1/jobs: ``{"jobs": [...], "next_cursor": ...}`` (``status`` comma-separated)."""
        params = {k: v for k, v in {"status": status, "limit": limit, "cursor": cursor}.items() if v is not None}
        return self._json("GET", "v1/jobs", params=params)

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self._json("DELETE", f"v1/jobs/{quote(job_id, safe='')}")

    def wait_job(
        self, job_id: str, on_progress: Progress | None = None, *, poll_s: float = 0.5, timeout: float | None = None
    ) -> dict[str, Any]:
        """Poll the job until it is succeeded, failed, canceled or expired; its last JSON.

        ``on_progress`` gets every JSON read. Raises :class:`WaitTimedOut` after ``timeout`` seconds.
        """
        return self._wait(lambda: self.job(job_id), f"job {job_id}", on_progress, poll_s, timeout)

    def download(self, url_or_job: str | dict[str, Any], path: str | os.PathLike[str]) -> Path:
        """Save a job's audio (a job's JSON or id: its ``/audio`` URL, fresh each time) or any URL to ``path``."""
        if isinstance(url_or_job, dict):
            url = f"v1/jobs/{quote(str(url_or_job['id']), safe='')}/audio"
        elif "/" in url_or_job:
            url = url_or_job
        else:
            url = f"v1/jobs/{quote(url_or_job, safe='')}/audio"
        return self._download(url, path)

    # -- speech (streamed) --------------------------------------------------------------------------

    def speak(self, text: str, *, voice: str = "none", response_format: str = "wav", **options: Any) -> Speech:
        """POST /v1/audio/speech: the audio as it renders (pcm, wav and mp3 stream; other formats come
        whole). ``options``: ``seed``, ``preset``, ``overrides``, ``sample_rate``, ``model``. A refusal
        raises :class:`ClientError` here, before any audio; iterate the returned :class:`Speech` for the
        bytes, and close it (or use it in a ``with``)."""
        body = {"input": text, "voice": voice, "response_format": response_format}
        body |= {k: v for k, v in options.items() if v is not None}
        # the first audio may wait for a free worker: the server bounds that wait (ECHO_SPEECH_TIMEOUT_S)
        patient = httpx.Timeout(self._http.timeout.connect, read=_SPEECH_READ_S)
        response = self._send("POST", "v1/audio/speech", stream=True, json=body, timeout=patient)
        if response.is_error:
            response.read()
            raise _error_of(response)
        return Speech(response, self._chunks(response))

    # -- voices -----------------------------------------------------------------------------------

    def voices(self) -> list[dict[str, Any]]:
        """GET /v1/voices: own voices, newest first, then the operator voices."""
        return list(self._json("GET", "v1/voices")["voices"])

    # -- audiobooks -------------------------------------------------------------------------------

    def submit_book(
        self,
        path: str | os.PathLike[str],
        *,
        idempotency_key: str | None = None,
        filename: str | None = None,
        **options: Any,
    ) -> Submission:
        """POST /v1/audiobooks with the book file (EPUB, Markdown, text) and options as form fields.

        Options: ``voice``, ``preset``, ``overrides`` (dict), ``seed``, ``format``, ``pause_sentence_s``,
        ``pause_paragraph_s``, ``pause_chapter_s``, ``loudness_lufs``, ``title``, ``author``, ``chapters``
        (a list of 0-based indices). ``filename`` (default: the file's own) gives the title when none is set.
        """
        name = filename or os.path.basename(path)
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        with open(path, "rb") as book:
            files = {"file": (name, book, content_type)}
            return self._submit("v1/audiobooks", idempotency_key, data=book_form_fields(options), files=files)

    def book(self, book_id: str) -> dict[str, Any]:
        return self._json("GET", f"v1/audiobooks/{quote(book_id, safe='')}")

    def books(self, *, limit: int | None = None, before: float | None = None) -> dict[str, Any]:
        """GET /v1/audiobooks: ``{"books": [...], "next_before": ...}``, newest first."""
        params = {k: v for k, v in {"limit": limit, "before": before}.items() if v is not None}
        return self._json("GET", "v1/audiobooks", params=params)

    def cancel_book(self, book_id: str) -> dict[str, Any]:
        return self._json("DELETE", f"v1/audiobooks/{quote(book_id, safe='')}")

    def retry_book(self, book_id: str) -> dict[str, Any]:
        """Plan a failed or canceled book again (only segments not yet rendered render); 409 otherwise."""
        return self._json("POST", f"v1/audiobooks/{quote(book_id, safe='')}/retry")

    def wait_book(
        self, book_id: str, on_progress: Progress | None = None, *, poll_s: float = 2.0, timeout: float | None = None
    ) -> dict[str, Any]:
        """Poll the book until it is succeeded, failed or canceled; its last JSON (see :meth:`wait_job`)."""
        return self._wait(lambda: self.book(book_id), f"audiobook {book_id}", on_progress, poll_s, timeout)

    def download_book(self, book: str | dict[str, Any], path: str | os.PathLike[str]) -> Path:
        """Save a succeeded book's M4B to ``path`` (through its ``/audio`` URL: a fresh presigned URL or the bytes)."""
        book_id = str(book["id"]) if isinstance(book, dict) else book
        return self._download(f"v1/audiobooks/{quote(book_id, safe='')}/audio", path)
