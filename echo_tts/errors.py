"""One flat error hierarchy for the model library.

Permanent errors (bad input, bad weights) derive from :class:`InvalidInput` or
:class:`WeightsError`; the service maps them to failed jobs with a code. Nothing here
is retryable: the library does no network I/O at request time.
"""

from __future__ import annotations


class EchoTTSError(Exception):
    """Root of every error raised by ``echo_tts``."""


class InvalidInput(EchoTTSError, ValueError):
    """Raised when a caller passes input the model cannot take (text, audio, settings)."""


class TextTooLong(InvalidInput):
    """Raised when text exceeds the byte limit of one generation."""


class InvalidAudio(InvalidInput):
    """Raised when a file or buffer is not decodable audio, or is too short/long."""


class UnsupportedFormat(InvalidInput):
    """Raised when an output or input audio format is not supported."""


class InvalidSamplerConfig(InvalidInput):
    """Raised when sampler settings are out of range or unknown (e.g. an unknown preset)."""


class WeightsError(EchoTTSError):
    """Raised when a checkpoint cannot be found or does not match the model."""


class WeightsNotFound(WeightsError, FileNotFoundError):
    """Raised when a repo id or directory does not provide the expected weight files."""


class CheckpointMismatch(WeightsError):
    """Raised when tensors are missing, unexpected or mis-shaped; the message names them."""


class Cancelled(EchoTTSError):
    """Raised inside sampling when the caller's cancel hook asks to stop."""
