"""Unit tests without servers: audio sniffing, settings parsing, and the app with in-memory doubles."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
from api_helpers import wav_bytes

from api import create_app
from api.queue import RecordingQueue
from api.settings import ApiSettings, SettingsError, parse_api_keys
from api.sniff import sniff_audio
from jobs import contract
from jobs.storage import LocalStorage

pytest_plugins = ["api_fixtures"]


def flac_head(rate: int, samples: int) -> bytes:
    """'fLaC' + a STREAMINFO block header + the 34-byte STREAMINFO with ``rate`` and ``samples``."""
    packed = (rate << 44) | (0 << 41) | (15 << 36) | samples  # mono, 16 bits
    return b"fLaC" + bytes([0x80, 0, 0, 34]) + b"\x00" * 10 + packed.to_bytes(8, "big") + b"\x00" * 16


@pytest.mark.parametrize(
    ("head", "extension"),
    [
        (b"OggS\x00\x02" + b"\x00" * 40, "ogg"),
        (b"ID3\x04\x00" + b"\x00" * 40, "mp3"),
        (bytes([0xFF, 0xFB, 0x90, 0x64]) + b"\x00" * 40, "mp3"),  # MPEG-1 layer III, 128 kbit/s, 44.1 kHz
        (bytes([0xFF, 0xF1, 0x50, 0x80, 0x02, 0x1F, 0xFC]) + b"\x00" * 40, "aac"),  # ADTS
        (b"\x00\x00\x00\x20ftypM4A " + b"\x00" * 40, "m4a"),
        (b"FORM\x00\x00\x10\x00AIFF" + b"\x00" * 40, "aiff"),
        (b"\x1aE\xdf\xa3" + b"\x00" * 40, "webm"),
    ],
)
def test_known_containers_are_recognised_from_their_first_bytes(head: bytes, extension: str) -> None:
    # Given / When the head of a file of a known container is sniffed, Then its kind is named
    kind = sniff_audio(head)
    assert kind is not None and kind.extension == extension


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"hello world, not audio",
        b"%PDF-1.7\n",
        b"\x89PNG\r\n\x1a\n" + b"\0" * 20,
        b"PK\x03\x04" + b"\0" * 30,
        bytes([0xFF, 0xFF, 0xFF, 0xFF]) + b"\0" * 8,
        b"RIFF\x00\x00\x00\x00AVI LIST",
    ],
)
def test_other_bytes_are_not_audio(head: bytes) -> None:
    # Given / When text, documents, images, archives or a RIFF video are sniffed, Then none is audio
    assert sniff_audio(head) is None


def test_wav_and_flac_headers_give_the_duration() -> None:
    # Given a 1.5 s WAV and a FLAC header announcing 3 s
    wav, flac = sniff_audio(wav_bytes(1.5)), sniff_audio(flac_head(44100, 3 * 44100))
    # Then both durations are read without decoding
    assert wav is not None and wav.duration_s == pytest.approx(1.5)
    assert flac is not None and flac.extension == "flac" and flac.duration_s == pytest.approx(3.0)


def test_a_wav_with_extra_chunks_before_fmt_still_gives_its_duration() -> None:
    # Given a WAV with a LIST chunk between the RIFF header and fmt
    plain = wav_bytes(1.0)
    extra = b"LIST" + struct.pack("<I", 6) + b"INFO\x00\x00"
    body = plain[12:]
    wav = plain[:4] + struct.pack("<I", len(extra) + len(body) + 4) + b"WAVE" + extra + body
    # Then the duration is still found
    kind = sniff_audio(wav)
    assert kind is not None and kind.duration_s == pytest.approx(1.0)


def test_api_keys_parse_to_owners_by_token() -> None:
    # Given / When two pairs are parsed, Then each token maps to its name
    assert parse_api_keys(" alice:tok-aaaaaaa1 , bob:tok-bbbbbbb2") == {"tok-aaaaaaa1": "alice", "tok-bbbbbbb2": "bob"}


@pytest.mark.parametrize("raw", ["alice", ":token-12345", "al ice:token-12345", "alice:short", ",", ":operator:x"])
def test_malformed_api_keys_are_refused_naming_the_setting(raw: str) -> None:
    # Given / When a malformed ECHO_API_KEYS is parsed, Then it is refused by name
    with pytest.raises(SettingsError, match="ECHO_API_KEYS"):
        parse_api_keys(raw)


def test_one_token_given_plain_and_hashed_is_refused_naming_both_owners() -> None:
    # Given the same token once plain and once as its SHA-256
    hashed = "sha256:" + hashlib.sha256(b"tok-aaaaaaa1").hexdigest()
    # When ECHO_API_KEYS is parsed, Then it is refused: one secret cannot belong to two owners
    with pytest.raises(SettingsError, match="'bob' \\(hashed\\) and 'alice' \\(plain\\)"):
        parse_api_keys(f"alice:tok-aaaaaaa1,bob:{hashed}")


def test_settings_have_defaults_and_take_limits_from_the_environment(tmp_path: Path) -> None:
    # Given / When settings are read from a minimal and a fuller environment
    plain = ApiSettings.from_env({"ECHO_REDIS_URL": "redis://r:6379/0"})
    tuned = ApiSettings.from_env(
        {
            "ECHO_REDIS_URL": "redis://r:6379/0",
            "ECHO_MAX_TEXT_CHARS": "50",
            "ECHO_MAX_REFERENCE_SECONDS": "12.5",
            "ECHO_VOICES_DIR": str(tmp_path),
        }
    )
    # Then the defaults hold (auth off, local storage) and the given limits are taken
    assert plain.api_keys is None and plain.storage.backend == "local" and plain.max_text_chars == 20_000
    assert tuned.max_text_chars == 50 and tuned.max_reference_seconds == 12.5 and tuned.voices_dir == tmp_path


def test_the_app_works_with_in_memory_doubles_for_queue_and_storage(
    api_redis_url: str, redis_client: object, tmp_path: Path
) -> None:
    # Given an app whose queue records instead of sending, on local storage
    queue = RecordingQueue()
    app = create_app(
        {"ENV": {"ECHO_REDIS_URL": api_redis_url}, "QUEUE": queue, "STORAGE": LocalStorage(tmp_path), "TESTING": True}
    )
    client = app.test_client()
    # When a job is submitted and canceled
    job = client.post("/v1/jobs", json={"text": "Hi.", "seed": 3}).get_json()
    canceled = client.delete(f"/v1/jobs/{job['id']}").get_json()
    # Then the queue got the contract's request, and the cancel revoked it
    assert queue.sent == [(contract.SYNTHESIZE, queue.sent[0][1])] and queue.sent[0][1]["seed"] == 3
    assert canceled["status"] == "canceled" and queue.revoked == [job["id"]]


def test_an_unexpected_error_is_a_500_envelope_without_internals(
    api_redis_url: str, redis_client: object, tmp_path: Path
) -> None:
    # Given an app whose queue breaks in an unforeseen way
    class Broken(RecordingQueue):
        def send_synthesis(self, request: contract.SynthesisRequest) -> None:
            raise ZeroDivisionError("secret internals")

    app = create_app({"ENV": {"ECHO_REDIS_URL": api_redis_url}, "QUEUE": Broken(), "STORAGE": LocalStorage(tmp_path)})
    # When a job is submitted
    response = app.test_client().post("/v1/jobs", json={"text": "Hi."})
    # Then the client gets the envelope, and nothing of the internals, and the job is not left queued
    assert response.status_code == 500 and response.get_json()["error"]["code"] == "internal_error"
    assert "secret" not in response.get_data(as_text=True)
    store = app.extensions["echo"].store
    (job,), _ = store.list_jobs("local")
    assert job.status is contract.JobState.FAILED
