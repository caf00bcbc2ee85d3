"""The `echo-tts` command line, end to end in subprocesses on the tiny checkpoint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from echo_tts.audio import load_audio
from echo_tts.config import SAMPLER_PRESETS
from echo_tts.speaker import SpeakerLatents


def echo_tts(*args: str | Path, checkpoint: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI as the console script does (``echo_tts.cli:main``), on the tiny weights when given."""
    command = [sys.executable, "-m", "echo_tts.cli", *map(str, args)]
    if checkpoint is not None:
        command += ["--model", str(checkpoint / "echo-tts-base"), "--ae", str(checkpoint / "fish-s1-dac-min")]
        command += ["--threads", "1"]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def test_synth_writes_a_playable_file_in_the_format_of_its_extension(tmp_path, checkpoint):
    # When a sentence is rendered to an .mp3 path with a preset and a seed
    out = tmp_path / "out.mp3"
    done = echo_tts(
        "synth",
        "Hello from the command line.",
        "--preset",
        "Independent-Low-CFG",
        "--seed",
        "3",
        "-o",
        out,
        checkpoint=checkpoint,
    )
    # Then it exits 0, says what it wrote, shows progress on stderr, and the MP3 decodes to seconds of audio
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and "mp3" in done.stdout
    assert "40/40" in done.stderr
    assert out.read_bytes()[:3] in (b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2")
    assert load_audio(out).shape[1] / 44_100 > 1.0


def test_a_voice_is_encoded_once_and_reused(tmp_path, checkpoint):
    # Given a reference clip rendered by the CLI itself (WAV, 24 kHz)
    reference = tmp_path / "ref.wav"
    made = echo_tts(
        "synth",
        "A reference voice.",
        "--steps",
        "6",
        "--sample-rate",
        "24000",
        "-o",
        reference,
        "--quiet",
        checkpoint=checkpoint,
    )
    assert made.returncode == 0, made.stderr
    # When it is encoded to a voice file and used for a long two-sentence text in FLAC
    voice = tmp_path / "voice.safetensors"
    encoded = echo_tts("encode-speaker", reference, "-o", voice, checkpoint=checkpoint)
    out = tmp_path / "book.flac"
    text = "First sentence of a longer text. " * 30  # 990 bytes: two 500-byte generations, stitched
    done = echo_tts(
        "synth",
        text,
        "--speaker",
        voice,
        "--steps",
        "6",
        "--max-piece-bytes",
        "500",
        "-o",
        out,
        "--quiet",
        checkpoint=checkpoint,
    )
    # Then the voice file loads and the output holds both pieces
    assert encoded.returncode == 0, encoded.stderr
    assert SpeakerLatents.load(voice).valid_frames > 0
    assert done.returncode == 0, done.stderr
    assert "2 piece(s)" in done.stdout and out.read_bytes()[:4] == b"fLaC"


def test_presets_lists_every_preset():
    # When the presets are listed
    done = echo_tts("presets")
    # Then every name appears and the default is marked
    assert done.returncode == 0
    for name in SAMPLER_PRESETS:
        assert name in done.stdout
    assert "(default)" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["synth", "Hi.", "--speaker", "/no/such/ref.wav", "-o", "{tmp}/x.wav"], "does not exist"),
        (["synth", "Hi.", "--preset", "loud", "-o", "{tmp}/x.wav"], "unknown preset"),
        (["synth", "Hi.", "-o", "{tmp}/x.xyz"], "--format"),
        (["synth", "Hi.", "-o", "{tmp}/no/such/dir/x.wav", "--steps", "2"], "output directory"),
        (["encode-speaker", "{tmp}/not-audio.wav", "-o", "{tmp}/v.safetensors"], "audio"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_traceback(tmp_path, checkpoint, args, message):
    # Given a file that is not audio
    (tmp_path / "not-audio.wav").write_text("this is text, not sound")
    # When the CLI gets bad input
    done = echo_tts(*(a.format(tmp=tmp_path) for a in args), checkpoint=checkpoint)
    # Then it exits 2 with one error line naming the problem
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("echo-tts: error:") and message in lines[0]
    assert "Traceback" not in done.stderr


def test_missing_weights_exit_2_naming_the_directory(tmp_path):
    # When the model directory does not exist
    done = echo_tts("synth", "Hi.", "-o", tmp_path / "x.wav", "--model", tmp_path / "nowhere")
    # Then the one error line names it
    assert done.returncode == 2 and "nowhere" in done.stderr and "Traceback" not in done.stderr
