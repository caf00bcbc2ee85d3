"""The shared contract: round trips, validation, key layout, and agreement with echo_tts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jobs import contract
from jobs.contract import ContractError, JobState, SynthesisRequest


def _request(**changes: object) -> SynthesisRequest:
    values: dict[str, object] = {"job_id": "j1", "text": "Hello there.", "seed": 7}
    values.update(changes)
    return SynthesisRequest(**values)  # type: ignore[arg-type]


def _nested(levels: int) -> dict:
    value: dict = {}
    for _ in range(levels - 1):
        value = {"k": value}
    return value


def test_a_request_round_trips_through_a_plain_dict() -> None:
    # Given a request with every optional field set
    request = _request(
        format="flac",
        preset="Independent-Low-CFG",
        overrides={"num_steps": 8, "rescale_k": None},
        voice_id="v1",
        sample_rate=24000,
        owner="alice",
        metadata={"k": [1, 2]},
    )
    # When it goes to a dict and back
    again = SynthesisRequest.from_dict(request.to_dict())
    # Then nothing is lost
    assert again == request


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"text": "  "}, "text"),
        ({"format": "ogg"}, "format"),
        ({"preset": "Loud"}, "preset"),
        ({"overrides": {"num_steps": 0}}, "num_steps"),
        ({"overrides": {"num_steps": 2.5}}, "num_steps"),
        ({"overrides": {"cfg_scale_text": None}}, "cfg_scale_text"),
        ({"overrides": {"warp": 1}}, "warp"),
        ({"voice_id": "v", "speaker_key": "uploads/j1/speaker.wav"}, "voice_id"),
        ({"sample_rate": 4000}, "sample_rate"),
        ({"format": "mp3", "sample_rate": 96000}, "96000"),
        ({"format": "wav", "sample_rate": 22051}, r"sample_rate.*valid rates: 8000, 11025.*22050"),
        ({"format": "pcm", "sample_rate": 85847}, "sample_rate"),
        ({"seed": -1}, "seed"),
        ({"seed": True}, "seed"),
        ({"metadata": _nested(contract.MAX_METADATA_DEPTH + 1)}, "MAX_METADATA_DEPTH=32"),
    ],
)
def test_a_request_breaking_the_contract_is_refused_with_the_field_named(changes: dict, named: str) -> None:
    # Given a request dict with one bad field
    data = _request().to_dict() | changes
    # When it is parsed, Then the error names the field
    with pytest.raises(ContractError, match=named):
        SynthesisRequest.from_dict(data)


def test_unknown_and_missing_fields_are_refused() -> None:
    # Given dicts with an extra field and with a missing one
    extra = _request().to_dict() | {"colour": "red"}
    missing = {"job_id": "j1", "text": "hi"}
    # Then both are refused with the field named
    with pytest.raises(ContractError, match="colour"):
        SynthesisRequest.from_dict(extra)
    with pytest.raises(ContractError, match="seed"):
        SynthesisRequest.from_dict(missing)


def test_job_states_are_strings_and_terminal_states_are_the_final_four() -> None:
    # Given the state enum, Then its values serialise as plain strings
    assert JobState("running") is JobState.RUNNING and JobState.SUCCEEDED == "succeeded"
    assert contract.TERMINAL_STATES == {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED, JobState.EXPIRED}


def test_storage_keys_follow_the_design_layout() -> None:
    # Given ids, Then keys follow DESIGN §4
    assert contract.job_audio_key("j1", "mp3") == "jobs/j1/audio.mp3"
    assert contract.upload_key("j1", "speaker.wav") == "uploads/j1/speaker.wav"
    assert contract.voice_reference_key("v1", ".flac") == "voices/v1/reference.flac"
    assert contract.voice_latents_key("v1") == "voices/v1/latents.safetensors"
    digest = contract.segment_digest(model_revision="r", voice="v", settings={"a": 1}, seed=1, text="x")
    assert contract.segment_cache_key(digest) == f"cache/segments/{digest}.flac" and len(digest) == 64
    assert contract.heartbeat_key("w@h").startswith(contract.HEARTBEAT_PREFIX)


def test_the_contract_and_settings_import_without_torch_celery_redis_or_echo_tts() -> None:
    # Given a Python where those imports fail
    code = (
        "import sys\n"
        "for name in ('torch', 'celery', 'redis', 'echo_tts', 'boto3', 'numpy'):\n"
        "    sys.modules[name] = None\n"
        "import jobs.contract, jobs.settings\n"
        "print('ok')\n"
    )
    # When the contract and settings are imported
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    # Then they import fine
    assert done.returncode == 0, done.stderr


def test_preset_names_agree_with_the_model_library() -> None:
    # Given the model library's presets
    from echo_tts.config import DEFAULT_PRESET, SAMPLER_PRESETS

    # Then the contract names the same six, in the same order, with the same default
    assert contract.PRESET_NAMES == tuple(SAMPLER_PRESETS) and contract.DEFAULT_PRESET == DEFAULT_PRESET


def test_override_names_are_sampler_config_fields() -> None:
    # Given the sampler's fields
    import dataclasses

    from echo_tts.config import SamplerConfig

    fields = {f.name for f in dataclasses.fields(SamplerConfig)}
    # Then every override is one of them
    assert set(contract.OVERRIDE_NAMES) <= fields


def test_metadata_nested_to_the_limit_is_accepted_and_depth_is_counted_without_recursion() -> None:
    # Given metadata exactly MAX_METADATA_DEPTH levels deep, and a list nested far past Python's recursion limit
    at_limit = _nested(contract.MAX_METADATA_DEPTH)
    very_deep: list = []
    for _ in range(100_000):
        very_deep = [very_deep]
    # When their depth is asked, Then the first passes and the second is counted just past the limit
    assert contract.json_depth(at_limit) == contract.MAX_METADATA_DEPTH
    assert SynthesisRequest.from_dict(_request(metadata=at_limit).to_dict()).metadata == at_limit
    assert contract.json_depth(very_deep) == contract.MAX_METADATA_DEPTH + 1
    assert contract.json_depth("text") == 0 and contract.json_depth({}) == 1


def test_output_formats_agree_with_the_audio_encoder() -> None:
    # Given the model library's encoder formats
    from echo_tts.audio import AUDIO_FORMATS

    # Then names, extensions and content types are the same, and every rate the contract offers the encoder takes
    assert set(contract.OUTPUT_FORMATS) == set(AUDIO_FORMATS)
    for name, ours in contract.OUTPUT_FORMATS.items():
        theirs = AUDIO_FORMATS[name]
        assert (ours.extension, ours.content_type) == (theirs.extension, theirs.content_type), name
        assert ours.sample_rates is not None, f"{name}: the contract offers a fixed list of rates"
        assert theirs.sample_rates is None or set(ours.sample_rates) <= set(theirs.sample_rates), name
