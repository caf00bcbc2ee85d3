"""Tiny random checkpoints in the published file layout, for tests and local tooling.

    python -m echo_tts.testing make-checkpoint DIR --size tiny [--seed N]

writes ``DIR/echo-tts-base/{pytorch_model.safetensors, pca_state.safetensors, config.json}`` and
``DIR/fish-s1-dac-min/{pytorch_model.safetensors, config.json}``; load them with
``Pipeline.from_pretrained(DIR / "echo-tts-base", DIR / "fish-s1-dac-min")``. Same seed, same bytes.

Purely random weights give a degenerate sampler: the velocity ignores x, the final latents stay
noise and the end-of-speech crop never triggers (30 s of noise per render), or the velocity
cancels x and everything crops to 0 samples. So the tiny DiT is random everywhere except for a
small hand-set circuit (:func:`_wire_speech_circuit`) in its first block that behaves like a
TTS model in miniature:

* the velocity pulls every latent frame towards zero (``out_proj`` ∘ ``out_norm`` ∘ ``in_proj``
  is ``k · x / rms(x)`` on a dedicated 80-dim subspace), so untouched frames end flat — "silence";
* attention head 0 is a RoPE head whose query is a constant vector and whose text (and speaker)
  keys are a constant vector too, so its logit to every text token is ``B · cos(f · j)`` at latent
  frame j: early frames attend to the text, late frames do not. What they read (the text/speaker
  values, random) is written to a "speech" subspace and becomes a velocity that keeps those frames
  away from zero. The softmax weight of the text grows with the number of text tokens, so longer
  text gives longer audio (about 5 s for a word up to 9 s for a long sentence), cropped where speech ends.

Everything else (the encoders, the second block, the autoencoder) is seeded random init, with
the autoencoder's output gain set so that the decoded audio has an RMS of about 0.1.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
from pathlib import Path

import torch

from .autoencoder import FishS1DAC
from .autoencoder_weights import save_autoencoder
from .config import (
    DEFAULT_AE_REPO,
    DEFAULT_MODEL_REPO,
    LATENT_DIM,
    TINY_AUTOENCODER_CONFIG,
    AutoencoderConfig,
    EchoDiTConfig,
)
from .model import EchoDiT
from .pca import PCAState
from .weights import save_echo_dit, save_pca

__all__ = ["SIZES", "TINY_DIT_CONFIG", "make_checkpoint", "make_tiny_autoencoder", "make_tiny_dit", "make_tiny_pca"]

MODEL_SUBDIR = DEFAULT_MODEL_REPO.rsplit("/", 1)[-1]  # "echo-tts-base": the published repos' names
AE_SUBDIR = DEFAULT_AE_REPO.rsplit("/", 1)[-1]  # "fish-s1-dac-min"

TINY_DIT_CONFIG = EchoDiTConfig(
    model_size=128,  # 80 dims carry x, 32 the "speech" signal, the last one a constant
    num_layers=2,
    num_heads=4,  # head_dim 32; heads 0-1 carry RoPE
    intermediate_size=128,
    text_model_size=48,
    text_num_layers=2,
    text_num_heads=2,
    text_intermediate_size=96,
    speaker_model_size=48,
    speaker_num_layers=2,
    speaker_num_heads=2,
    speaker_intermediate_size=96,
    timestep_embed_size=32,
    adaln_rank=8,
)
SIZES = {"tiny": (TINY_DIT_CONFIG, TINY_AUTOENCODER_CONFIG)}

# --- the hand-set circuit of the tiny DiT (see the module docstring) -------------------------
_SPEECH = slice(LATENT_DIM, LATENT_DIM + 32)  # residual dims written by head 0
_CONST = -1  # AdaLN-output dim holding the constant that feeds the query
_FLOOR = -2  # residual dim holding a small constant: near zero the pull is linear, not sign-flipping
_FLOOR_VALUE = 0.4
_ROPE_PAIR = 8  # RoPE pair of head 0 used by the position logit: f = 10000**(-8/16) = 0.01 rad/frame
_CONTENT_PAIR = 3  # RoPE pair that moves attention across text tokens: f ~ 0.18 rad/frame
_CONTENT_SCALE = 2.0  # per-token logit swing from the content pair
_PULL = 1.0  # out_proj gain on x / rms(x): frames without speech relax to zero by t = 0
_LOGIT_SCALE = 5.0  # B in the position logit B * cos(f j)
_SPEECH_GAIN = 2.0  # wo gain from head 0 to the speech subspace
_TARGET_RMS = 0.1  # decoded audio level the autoencoder output gain is calibrated to


def _zero_(*tensors: torch.Tensor) -> None:
    for tensor in tensors:
        tensor.zero_()


def _wire_speech_circuit(model: EchoDiT, generator: torch.Generator) -> None:
    """Overwrite block 0 (and the heads/AdaLNs around it) with the circuit of the module docstring."""
    c = model.config
    dh = c.head_dim
    q_row = 2 * _ROPE_PAIR  # first element of the RoPE pair within head 0
    c_row = 2 * _CONTENT_PAIR
    _zero_(*(p for p in model.cond_module.parameters()))  # AdaLN modulation = the up-biases only
    model.in_proj.weight.zero_()
    model.in_proj.bias.zero_()
    model.in_proj.weight[:LATENT_DIM, :LATENT_DIM] = torch.eye(LATENT_DIM)  # residual[:80] = x
    model.in_proj.bias[_FLOOR] = _FLOOR_VALUE
    model.out_norm.weight.fill_(1.0)
    model.out_proj.weight.zero_()
    model.out_proj.bias.zero_()
    model.out_proj.weight[:, :LATENT_DIM] = _PULL * torch.eye(LATENT_DIM)  # pull towards zero
    speech_out = torch.randn(LATENT_DIM, 32, generator=generator) / 32**0.5
    model.out_proj.weight[:, _SPEECH] = speech_out  # speech subspace -> velocity
    for index, block in enumerate(model.blocks):
        for adaln in (block.attention_adaln, block.mlp_adaln):
            for part in (adaln.shift_down, adaln.scale_down, adaln.gate_down):
                part.weight.zero_()
            _zero_(adaln.shift_up.weight, adaln.scale_up.weight, adaln.gate_up.weight)
            _zero_(adaln.shift_up.bias, adaln.scale_up.bias, adaln.gate_up.bias)  # gate 0: block is identity
        if index:
            continue
        block.attention_adaln.shift_up.bias[_CONST] = 1.0  # h[-1] = 1: the query source
        block.attention_adaln.gate_up.bias[_SPEECH] = 3.0  # tanh(3) ~ 1 on the speech dims
        attn = block.attention
        _zero_(attn.wq.weight, attn.wk.weight, attn.wv.weight, attn.gate.weight, attn.wo.weight)
        attn.wq.weight[q_row, _CONST] = 1.0  # q = e_pair + e_content for head 0, zero for the other heads
        attn.wq.weight[c_row, _CONST] = 1.0
        attn.q_norm.weight.fill_(1.0)
        attn.k_norm.weight.fill_(1.0)
        attn.q_norm.weight[0, q_row] = _LOGIT_SCALE / 4  # normalised q entries are 4: q.k / sqrt(dh) ~ B cos(f j)
        attn.q_norm.weight[0, c_row] = _CONTENT_SCALE / 4
        for wk, wv in ((attn.wk_text, attn.wv_text), (attn.wk_speaker, attn.wv_speaker)):
            wk.weight.zero_()
            wk.weight[q_row, 0] = 1.0  # key = e_pair (the encoders' dim 0 is kept positive)
            width = wk.weight.shape[1]
            wk.weight[c_row : c_row + 2, 1:] = 0.25 * torch.randn(2, width - 1, generator=generator)  # per token
            values = torch.randn(dh, wk.weight.shape[1], generator=generator)
            wv.weight.zero_()
            wv.weight[:dh] = values / wk.weight.shape[1] ** 0.5  # head 0 reads the encoder state
        attn.wo.weight[_SPEECH, :dh] = _SPEECH_GAIN * torch.eye(dh)


def _bias_encoders_positive(model: EchoDiT) -> None:
    """Give the text/speaker encoder outputs a positive dim 0 (the circuit's key source)."""
    model.text_encoder.text_embedding.weight[:, 0] = 4.0
    model.speaker_encoder.in_proj.bias[0] = 24.0  # / 6 inside the encoder: 4.0
    for encoder in (model.text_encoder, model.speaker_encoder):
        for block in encoder.blocks:
            block.attention.wo.weight.mul_(0.3)
            block.mlp.w2.weight.mul_(0.3)


def make_tiny_dit(config: EchoDiTConfig = TINY_DIT_CONFIG, *, seed: int = 0) -> EchoDiT:
    """Seeded random EchoDiT (float32, blockwise weights included) with the speech circuit wired in."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = EchoDiT(config, blockwise=True)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1.0 + 0.1 * torch.randn(param.shape, generator=generator))
        _bias_encoders_positive(model)
        _wire_speech_circuit(model, generator)
    return model.eval().requires_grad_(False)


def make_tiny_pca(latent_dim: int, *, seed: int = 0) -> PCAState:
    """Random components (80, latent_dim) with near-unit columns, a small random mean, and the
    published scale float32(1/18). Only elementwise ops: the bytes do not depend on thread counts."""
    generator = torch.Generator().manual_seed(seed + 1)
    basis = torch.randn(LATENT_DIM, latent_dim, generator=generator) / LATENT_DIM**0.5  # (80, latent_dim)
    mean = 0.1 * torch.randn(latent_dim, generator=generator)
    scale = float(torch.tensor(1.0 / 18.0, dtype=torch.float32))
    return PCAState(pca_components=basis.contiguous(), pca_mean=mean, latent_scale=scale)


def _quantized(ratio: float) -> float:
    """``ratio`` rounded to 1/64 octave: float noise from thread-count-dependent reductions in the
    calibration cannot change the written bytes (the calibration itself runs in float64)."""
    return 2.0 ** (round(math.log2(max(ratio, 1e-6)) * 64) / 64)


def make_tiny_autoencoder(config: AutoencoderConfig, pca: PCAState, *, seed: int = 0) -> FishS1DAC:
    """Seeded random codec; the last decoder conv's gain is set so that decoding unit-variance
    latents through ``pca`` gives audio with an RMS of about 0.1 (not silent, not clipped)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 2)
        ae = FishS1DAC(config).eval().requires_grad_(False)
    probe = torch.randn(1, 64, LATENT_DIM, generator=torch.Generator().manual_seed(seed + 3), dtype=torch.float64)
    z_q = (probe / pca.latent_scale @ pca.pca_components.double() + pca.pca_mean.double()).transpose(1, 2)
    with torch.inference_mode():
        ae.decoder.model[0].conv.parametrizations["weight"].original0.mul_(pca.latent_scale)  # z_q is ~18x larger
        decoder = copy.deepcopy(ae.decoder).double()
        quantizer = copy.deepcopy(ae.quantizer).double()
        for _ in range(3):  # tanh output: a few proportional corrections converge
            rms = float(decoder(quantizer.decode(z_q)).pow(2).mean().sqrt())
            factor = _quantized(_TARGET_RMS / rms)
            for gain in (decoder, ae.decoder):
                gain.model[-2].conv.parametrizations["weight"].original0.mul_(factor)
    return ae


def make_checkpoint(directory: str | Path, *, size: str = "tiny", seed: int = 0) -> Path:
    """Write the two published repos' files under ``directory``; returns ``directory``."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {', '.join(SIZES)}")
    dit_config, ae_config = SIZES[size]
    root = Path(directory)
    model = make_tiny_dit(dit_config, seed=seed)
    pca = make_tiny_pca(ae_config.latent_dim, seed=seed)
    save_echo_dit(model, root / MODEL_SUBDIR)
    save_pca(pca, root / MODEL_SUBDIR)
    save_autoencoder(make_tiny_autoencoder(ae_config, pca, seed=seed), root / AE_SUBDIR)
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m echo_tts.testing", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("make-checkpoint", help="write tiny random weights in the published layout")
    make.add_argument("directory", type=Path)
    make.add_argument("--size", choices=sorted(SIZES), default="tiny")
    make.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    root = make_checkpoint(args.directory, size=args.size, seed=args.seed)
    print(f"wrote {root / MODEL_SUBDIR} and {root / AE_SUBDIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
