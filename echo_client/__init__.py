"""A small Python client of the Echo-TTS job service (docs/api.md), on httpx.

    from echo_client import EchoClient
    with EchoClient("http://127.0.0.1:8000", api_key="...") as echo:
        done = echo.wait_job(echo.submit_job("Hello there.", format="mp3")["id"])
        echo.download(done, "hello.mp3")

It imports neither torch nor Flask nor the service's own packages: ``pip install 'echo-tts-service[client]'``
is all it needs. The remote commands of ``echo-tts`` (book, submit, speak, status, wait, voices;
echo_tts/cli.py) are built on it.
"""

from echo_client.client import TERMINAL_STATES, EchoClient, Speech, Submission
from echo_client.errors import ClientError, ServerUnreachable, WaitTimedOut
from echo_client.forms import book_form_fields, book_idempotency_key

__all__ = [
    "TERMINAL_STATES",
    "ClientError",
    "EchoClient",
    "ServerUnreachable",
    "Speech",
    "Submission",
    "WaitTimedOut",
    "book_form_fields",
    "book_idempotency_key",
]
