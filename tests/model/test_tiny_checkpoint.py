"""`python -m echo_tts.testing make-checkpoint DIR --size tiny`: the published layout, loadable, speech-like."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from echo_tts.config import TINY_AUTOENCODER_CONFIG
from echo_tts.pipeline import Pipeline
from echo_tts.testing import TINY_DIT_CONFIG, make_checkpoint

LAYOUT = {
    "echo-tts-base": {"pytorch_model.safetensors", "pca_state.safetensors", "config.json"},
    "fish-s1-dac-min": {"pytorch_model.safetensors", "config.json"},
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _digests(root: Path) -> dict[str, str]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_the_command_writes_the_published_layout_deterministically(tmp_path, checkpoint):
    # When the documented command runs
    done = subprocess.run(
        [sys.executable, "-m", "echo_tts.testing", "make-checkpoint", str(tmp_path / "ck"), "--size", "tiny"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # Then it succeeds and writes exactly the published file names
    assert done.returncode == 0, done.stderr
    for repo, files in LAYOUT.items():
        assert {p.name for p in (tmp_path / "ck" / repo).iterdir()} == files
    # And the config files carry the tiny architecture
    dit = json.loads((tmp_path / "ck" / "echo-tts-base" / "config.json").read_text())
    ae = json.loads((tmp_path / "ck" / "fish-s1-dac-min" / "config.json").read_text())
    assert dit["model_size"] == TINY_DIT_CONFIG.model_size and ae["latent_dim"] == TINY_AUTOENCODER_CONFIG.latent_dim
    assert ae["sample_rate"] == 44_100 and ae["encoder_rates"] == [2, 4, 8, 8]
    # And the default seed 0 gives byte-identical files to the in-process writer
    assert _digests(tmp_path / "ck") == _digests(checkpoint)


def test_another_seed_gives_other_weights(tmp_path, checkpoint):
    # When a checkpoint is written with --seed 1
    other = make_checkpoint(tmp_path / "seed1", seed=1)
    # Then every weights file differs from seed 0's and the configs do not
    ours, theirs = _digests(checkpoint), _digests(other)
    assert all(ours[name] != theirs[name] for name in ours if name.endswith(".safetensors"))
    assert all(ours[name] == theirs[name] for name in ours if name.endswith(".json"))


def test_the_checkpoint_loads_through_the_offline_hub_cache(checkpoint, pipe, offline_hub):
    # Given both repos laid out in a Hugging Face cache, and the hub client offline
    offline_hub("acme/echo-tiny", checkpoint / "echo-tts-base")
    offline_hub("acme/dac-tiny", checkpoint / "fish-s1-dac-min")
    # When the pipeline loads by repo id
    hub = Pipeline.from_pretrained("acme/echo-tiny", "acme/dac-tiny", dtype="float32")
    # Then it renders exactly what the directory-loaded pipeline renders, with the same revision
    config = "Independent-Low-CFG"
    assert np.array_equal(hub.synthesize("Hub.", None, config).samples, pipe.synthesize("Hub.", None, config).samples)
    assert hub.model_revision == pipe.model_revision


def test_a_sentence_sounds_like_speech_then_silence(pipe):
    # When a sentence renders with each preset
    for preset in ("Independent-High-Speaker-CFG", "Independent-Low-CFG-Flat"):
        result = pipe.synthesize("The tiny model speaks for a few seconds.", None, preset, seed=0)
        # Then the crop lands inside the generation: a few seconds of finite, audible, unclipped audio
        assert 2.0 < result.metadata["duration_s"] < 20.0
        assert np.isfinite(result.samples).all()
        assert 0.02 < float(np.sqrt(np.mean(result.samples**2))) < 0.5
        assert float(np.abs(result.samples).max()) < 1.0


def test_longer_text_gives_longer_audio(pipe):
    # When a word and a long sentence render with the same seed
    short = pipe.synthesize("Hi.", None, "Independent-Low-CFG", seed=0)
    long = pipe.synthesize("This much longer sentence, with clauses and commas, " * 4, None, "Independent-Low-CFG")
    # Then the longer text is cropped later
    assert long.metadata["num_latents"] > short.metadata["num_latents"] > 0


def test_the_bf16_default_also_renders(checkpoint):
    # When the checkpoint loads with the default bfloat16 DiT
    pipe = Pipeline.from_pretrained(checkpoint / "echo-tts-base", checkpoint / "fish-s1-dac-min")
    result = pipe.synthesize("Low precision works too.", None, "Independent-Low-CFG-Flat", seed=2)
    # Then the render is cropped inside the generation and finite
    assert 0 < result.metadata["num_latents"] < 640 and np.isfinite(result.samples).all()
