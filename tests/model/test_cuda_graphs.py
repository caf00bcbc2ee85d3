"""CUDA-graph replay of sampler steps: the same latents as the eager path, bit for bit."""

import pytest
import torch

from echo_tts.config import SamplerConfig
from echo_tts.graphs import GraphedForward, make_forward
from echo_tts.layers import rope_frequencies
from echo_tts.sampler import encode_conditioning, sample
from echo_tts.text import encode_texts

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_the_device_rope_table_has_exactly_the_rows_built_per_call(tiny_dit):
    # Given the model's kept RoPE table / When rows are read at an offset
    rows = tiny_dit.rope_rows(100, 740)
    # Then they equal a table built for that call alone, as upstream builds it
    assert torch.equal(rows, rope_frequencies(740, tiny_dit.config.head_dim)[100:])


def test_graphs_are_not_used_off_cuda(tiny_dit):
    # Given a CPU model / When a graphed forward is asked for / Then the plain module is used
    assert make_forward(tiny_dit, cuda_graphs=True) is tiny_dit
    assert make_forward(tiny_dit, cuda_graphs=False) is tiny_dit


def _conditioning(model, batch: int):
    texts = encode_texts(["[S1] Hello there.", "[S1] A second, longer line of text."][:batch])
    speaker = torch.randn((batch, 16, 80), generator=torch.Generator().manual_seed(3))
    mask = torch.ones((batch, 16), dtype=torch.bool)
    return encode_conditioning(model, texts, speaker, mask)


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize(
    "config",
    [
        SamplerConfig(num_steps=8, sequence_length=32),
        SamplerConfig(num_steps=8, sequence_length=32, rescale_k=1.2, rescale_sigma=3.0, truncation_factor=0.8),
        SamplerConfig(num_steps=8, sequence_length=32, speaker_kv_scale=1.5, speaker_kv_min_t=0.8),
    ],
    ids=["plain", "rescale", "force-speaker"],
)
def test_graph_replay_gives_bit_identical_latents(tiny_dit, config):
    # Given the tiny model on CUDA and a batch of two
    model = tiny_dit.to("cuda")
    cond = _conditioning(model, 2)
    # When sampled eagerly and with CUDA graphs (CFG steps and plain steps both replayed)
    eager = sample(model, cond, config, seeds=[1, 2])
    graphed = sample(model, cond, config, seeds=[1, 2], cuda_graphs=True)
    # Then the latents are the same bits
    assert torch.equal(eager, graphed)


@needs_cuda
@pytest.mark.gpu
def test_a_graphed_forward_captures_once_per_shape(tiny_dit):
    # Given a graphed forward of the tiny model on CUDA
    model = tiny_dit.to("cuda")
    cond = _conditioning(model, 1)
    forward = GraphedForward(model)
    kwargs = dict(
        text_kv=cond.text_kv, text_mask=cond.text_mask, speaker_kv=cond.speaker_kv, speaker_mask=cond.speaker_mask
    )
    x = torch.randn((1, 12, 80), device="cuda", dtype=model.dtype)
    t = torch.full((1,), 0.5, device="cuda", dtype=model.dtype)
    # When called twice with new inputs of one shape
    first = forward(x, t, **kwargs).clone()
    second = forward(x * 2, t, **kwargs).clone()
    # Then one graph exists and each call returns the eager result of its own inputs
    assert len(forward._graphs) == 1
    assert torch.equal(first, model(x, t, **kwargs))
    assert torch.equal(second, model(x * 2, t, **kwargs))
