"""The ``echo-tts`` command line.

    echo-tts synth "Hello there." --speaker ref.wav --preset Independent-High-Speaker-CFG --seed 0 -o out.mp3
    echo-tts encode-speaker ref.wav -o voice.safetensors      # encode a voice once ...
    echo-tts synth "Hello again." --speaker voice.safetensors -o out.wav   # ... reuse it
    echo-tts presets
    echo-tts book novel.epub --server http://127.0.0.1:8000 --voice narrator -o novel.m4b   # on a server
    echo-tts submit "Hello there." --server http://127.0.0.1:8000 -o hello.mp3               # on a server
    echo-tts speak "Hello there." --voice narrator | ffplay -nodisp -autoexit -            # streamed
    echo-tts voices / status JOB_ID / wait JOB_ID -o out.wav                               # on a server

Text longer than ``--max-piece-bytes`` (about 20 s of speech; the model squeezes whatever it gets
into one ~30 s generation) is split at sentence boundaries (``text.split_text``), piece i
rendered with seed N + i, and the pieces joined with short pauses. The output format comes from
``--format`` or the ``-o`` extension. Errors print one line and exit with status 2.
Configuration comes from flags only (the Hugging Face client reads its own ``HF_*`` variables).

``book``, ``submit``, ``speak``, ``status``, ``wait`` and ``voices`` talk to a running service instead
(``echo_client``, imported only for them: they need the ``client`` extra, not torch); their exit statuses
are in ``echo_client/cli.py``:
0 done, 1 the book or job failed or was canceled, 2 bad usage or a refusal, 3 server unreachable.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .config import DEFAULT_AE_REPO, DEFAULT_MODEL_REPO, DEFAULT_PAUSE_S, DEFAULT_PRESET, SAMPLE_RATE, SAMPLER_PRESETS
from .errors import EchoTTSError, InvalidInput, UnsupportedFormat

__all__ = ["build_parser", "main"]

SPEAKER_FILE_SUFFIX = ".safetensors"
_EXTENSION_ALIASES = {"raw": "pcm", "ogg": "opus", "m4a": "aac"}


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model", default=DEFAULT_MODEL_REPO, help="EchoDiT repo id or directory (default: %(default)s)"
    )
    group.add_argument("--ae", default=DEFAULT_AE_REPO, help="autoencoder repo id or directory (default: %(default)s)")
    group.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    group.add_argument("--dtype", choices=["auto", "bfloat16", "float32"], default="auto",
                       help="DiT dtype; auto = bfloat16 on CUDA, float32 on CPU")  # fmt: skip
    group.add_argument("--ae-dtype", choices=["bfloat16", "float32"], default="float32")
    group.add_argument("--token", default=None, help="Hugging Face token (default: the hub client's own)")
    group.add_argument("--threads", type=int, default=None, help="CPU threads for torch")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="echo-tts", description="Echo-TTS text to speech with voice cloning.")
    commands = parser.add_subparsers(dest="command", required=True)

    synth = commands.add_parser("synth", help="render text to an audio file")
    synth.add_argument("text", help='the text to speak ("-" reads standard input)')
    synth.add_argument("-o", "--output", required=True, type=Path, help="output file")
    synth.add_argument("--speaker", help="reference audio, or a voice saved by encode-speaker (.safetensors)")
    synth.add_argument("--preset", default=DEFAULT_PRESET, help="sampler preset (see: echo-tts presets)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--steps", type=int, default=None, help="diffusion steps (default: the preset's)")
    synth.add_argument("--format", default=None, help="wav, flac, mp3, opus, aac or pcm (default: from -o)")
    synth.add_argument("--sample-rate", type=int, default=None, help="output sample rate (default: 44100)")
    synth.add_argument(
        "--max-piece-bytes",
        type=int,
        default=300,
        help="split longer text into pieces of at most this many UTF-8 bytes, about 20 s of "
        "speech at 300 (max 762, one generation) (default: %(default)s)",
    )
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_model_flags(synth)

    encode = commands.add_parser("encode-speaker", help="encode a reference clip once, to reuse with --speaker")
    encode.add_argument("reference", help="reference audio file (first 300 s are used)")
    encode.add_argument("-o", "--output", required=True, type=Path, help="output .safetensors file")
    _add_model_flags(encode)

    commands.add_parser("presets", help="list the sampler presets")
    _add_remote_commands(commands)
    return parser


REMOTE_COMMANDS = ("book", "submit", "speak", "status", "wait", "voices")
DEFAULT_SERVER = "http://127.0.0.1:8000"  # `make dev`'s API


def _add_server_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("server")
    group.add_argument("--server", default=DEFAULT_SERVER, help="the service's URL (default: %(default)s)")
    group.add_argument("--api-key", default=None, help="API key (sent as Authorization: Bearer ...)")
    group.add_argument("--api-key-file", type=Path, default=None, help="read the API key from this file instead")
    group.add_argument("--poll", dest="poll_s", type=float, default=None, help="seconds between status reads")
    group.add_argument("--http-timeout", type=float, default=30.0, help="seconds per HTTP call (default: %(default)s)")
    group.add_argument("--json", action="store_true", help="print the final JSON instead of a progress bar")
    group.add_argument("--quiet", action="store_true", help="no progress bar or notes")


def _add_sampler_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--voice", default=None, help="a stored voice id or name (GET /v1/voices)")
    parser.add_argument("--preset", default=None, help="sampler preset (default: the server's)")
    parser.add_argument("--seed", type=int, default=None, help="seed (default: random, recorded by the server)")
    parser.add_argument("--steps", type=int, default=None, help="diffusion steps (overrides num_steps)")
    parser.add_argument("--overrides", default=None, help="sampler overrides as JSON, e.g. '{\"cfg_scale_text\": 3}'")


def _add_remote_commands(commands: argparse._SubParsersAction) -> None:
    book = commands.add_parser("book", help="render a book (EPUB, Markdown, text) on a server into an M4B")
    book.add_argument("file", type=Path, help="the book file")
    book.add_argument("-o", "--output", type=Path, default=None, help="the M4B to write (default: FILE's stem.m4b)")
    _add_sampler_flags(book)
    book.add_argument("--format", default=None, help="format of the chapter files (default: the server's)")
    book.add_argument("--chapters", default=None, help="render only these chapters (0-based), e.g. 0,2")
    book.add_argument("--title", default=None, help="the book's title (default: from the book)")
    book.add_argument("--author", default=None, help="the book's author (default: from the book)")
    _add_server_flags(book)

    submit = commands.add_parser("submit", help="render text on a server (a job) and download it")
    submit.add_argument("text", help='the text to speak ("-" reads standard input)')
    submit.add_argument("-o", "--output", required=True, type=Path, help="output file")
    _add_sampler_flags(submit)
    submit.add_argument("--speaker", default=None, help="a one-shot reference clip to upload with the job")
    submit.add_argument("--format", default=None, help="wav, flac, mp3, opus, aac or pcm (default: from -o)")
    submit.add_argument("--sample-rate", type=int, default=None, help="output sample rate (default: the server's)")
    submit.add_argument("--idempotency-key", default=None, help="submit again with this key: the same job is found")
    _add_server_flags(submit)

    speak = commands.add_parser(
        "speak", help="speak text on a server, written as it renders (POST /v1/audio/speech, streamed)"
    )
    speak.add_argument("text", help='the text to speak ("-" reads standard input)')
    speak.add_argument(
        "-o", "--output", type=Path, default=Path("-"), help='output file, or "-" for stdout (default: -, as wav)'
    )
    _add_sampler_flags(speak)
    speak.add_argument("--format", default=None, help="pcm, wav or mp3 stream as they render (default: from -o)")
    speak.add_argument("--sample-rate", type=int, default=None, help="output sample rate (default: the server's)")
    _add_server_flags(speak)

    status = commands.add_parser("status", help="show a job's state on a server (exit 0 whatever the state)")
    status.add_argument("job_id", help="the job's id (job_…)")
    _add_server_flags(status)

    wait = commands.add_parser("wait", help="wait for a job on a server with a progress bar, then download it")
    wait.add_argument("job_id", help="the job's id (job_…)")
    wait.add_argument("-o", "--output", required=True, type=Path, help="output file")
    _add_server_flags(wait)

    voices = commands.add_parser("voices", help="list the voices a key can use on a server (id, name, status)")
    _add_server_flags(voices)


def _remote(args: argparse.Namespace) -> int:
    """The remote commands: the client is imported here, so the local commands work without it."""
    try:
        from echo_client.cli import run
    except ImportError as error:
        print(f"echo-tts: error: echo-tts {args.command} needs the client: pip install 'echo-tts-service[client]' "
              f"({error})", file=sys.stderr)  # fmt: skip
        return 2
    return run(args)


def _output_format(args: argparse.Namespace) -> str:
    from .audio import AUDIO_FORMATS

    if args.format:
        fmt = args.format.lower()
    else:
        extension = args.output.suffix.lower().lstrip(".")
        fmt = _EXTENSION_ALIASES.get(extension, extension)
    if fmt not in AUDIO_FORMATS:
        valid = ", ".join(AUDIO_FORMATS)
        raise UnsupportedFormat(f"cannot tell the output format from {str(args.output)!r}; use --format ({valid})")
    return fmt


def _check_output_directory(path: Path) -> None:
    if not path.resolve().parent.is_dir():
        raise InvalidInput(f"output directory {str(path.parent)!r} does not exist")


def _setup_torch(args: argparse.Namespace):
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInput(f"--device {args.device}: CUDA is not available on this machine")
    if args.dtype == "auto":
        return torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    return args.dtype


def _load_speaker(pipe, source: str | None):
    from .speaker import SpeakerLatents

    if source is None:
        return None
    if not os.path.isfile(source):
        raise InvalidInput(f"speaker file {source!r} does not exist")
    if source.lower().endswith(SPEAKER_FILE_SUFFIX):
        return SpeakerLatents.load(source)
    return pipe.encode_speaker(source)


def _synth(args: argparse.Namespace) -> str:
    from tqdm import tqdm

    from .audio import encode_audio, join_segments
    from .config import sampler_preset
    from .pipeline import Pipeline
    from .text import DEFAULT_SPLIT_BYTES, split_text

    fmt = _output_format(args)
    _check_output_directory(args.output)
    config = sampler_preset(args.preset)
    if args.steps is not None:
        config = config.replace(num_steps=args.steps)
    text = sys.stdin.read() if args.text == "-" else args.text
    if not 32 <= args.max_piece_bytes <= DEFAULT_SPLIT_BYTES:
        raise InvalidInput(f"--max-piece-bytes must be between 32 and {DEFAULT_SPLIT_BYTES}")
    pieces = [piece for piece in split_text(text, args.max_piece_bytes) if piece.strip()]
    if not pieces:
        raise InvalidInput("the text is empty")
    dtype = _setup_torch(args)
    pipe = Pipeline.from_pretrained(args.model, args.ae, device=args.device, dtype=dtype, ae_dtype=args.ae_dtype,
                                    token=args.token)  # fmt: skip
    speaker = _load_speaker(pipe, args.speaker)
    rendered = []
    with tqdm(total=len(pieces) * config.num_steps, unit="step", disable=args.quiet, file=sys.stderr) as bar:
        for index, piece in enumerate(pieces):
            result = pipe.synthesize(piece, speaker, config, seed=args.seed + index, progress=lambda *_: bar.update())
            rendered.append(result.samples)
    samples = join_segments(rendered, SAMPLE_RATE, pause_s=DEFAULT_PAUSE_S)
    if samples.size == 0:
        raise InvalidInput("the model produced no speech for this text (cropped to 0 samples); try another seed")
    args.output.write_bytes(encode_audio(samples, SAMPLE_RATE, fmt, out_sample_rate=args.sample_rate))
    return f"wrote {args.output} ({samples.size / SAMPLE_RATE:.2f} s, {fmt}, {len(pieces)} piece(s))"


def _encode_speaker(args: argparse.Namespace) -> str:
    from .audio import load_audio
    from .autoencoder_weights import load_autoencoder
    from .dtypes import as_dtype
    from .speaker import speaker_latents_from_audio
    from .weights import load_pca

    _setup_torch(args)
    _check_output_directory(args.output)
    if not os.path.isfile(args.reference):
        raise InvalidInput(f"reference file {args.reference!r} does not exist")
    audio = load_audio(args.reference)
    pca = load_pca(args.model, device=args.device, token=args.token)
    ae = load_autoencoder(args.ae, device=args.device, dtype=as_dtype(args.ae_dtype), token=args.token)
    voice = speaker_latents_from_audio(audio, lambda chunk: pca.encode(ae.encode_zq(chunk)))
    voice.save(args.output)
    return f"wrote {args.output} ({voice.valid_frames} latent frames)"


def _presets() -> str:
    lines = []
    for name, preset in SAMPLER_PRESETS.items():
        marker = " (default)" if name == DEFAULT_PRESET else ""
        lines.append(
            f"{name}{marker}: steps={preset.num_steps} cfg_text={preset.cfg_scale_text} "
            f"cfg_speaker={preset.cfg_scale_speaker} truncation={preset.truncation_factor} "
            f"rescale_k={preset.rescale_k} rescale_sigma={preset.rescale_sigma}"
        )
    return "\n".join(lines)


def _one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and not isinstance(error, EchoTTSError) and error.strerror:
        text = f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    """Run the command; 0 on success, 2 on bad input or weights (one line on stderr), 130 on Ctrl-C."""
    args = build_parser().parse_args(argv)
    if args.command in REMOTE_COMMANDS:
        return _remote(args)
    try:
        if args.command == "presets":
            message = _presets()
        elif args.command == "synth":
            message = _synth(args)
        else:
            message = _encode_speaker(args)
    except (EchoTTSError, OSError) as error:  # OSError: e.g. the output directory does not exist
        print(f"echo-tts: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("echo-tts: interrupted", file=sys.stderr)
        return 130
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
