"""Fish S1-DAC, the causal audio codec under Echo-TTS (spec §5), reduced to what Echo uses.

``encode_zq`` maps 44.1 kHz audio to the continuous 1024-d z_q (one frame per 2048 samples);
``decode_zq`` maps z_q back to audio. Module and parameter names follow the published
``jordand/fish-s1-dac-min`` checkpoint, so its state dict loads without renaming.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .autoencoder_quantizer import DownsampleResidualVectorQuantize
from .autoencoder_transformer import WindowLimitedTransformer
from .config import AutoencoderConfig
from .errors import InvalidAudio, InvalidInput
from .layers import CausalConv1d, CausalConvTranspose1d, Snake

RESIDUAL_DILATIONS = (1, 3, 9)
CONV_KERNEL = 7  # first/last convs and residual units
ENCODER_OUT_KERNEL = 3


class ResidualUnit(nn.Module):
    """x + conv_k1(Snake(conv_k7,dilated(Snake(x)))); causal, so lengths match."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            Snake(channels),
            CausalConv1d(channels, channels, CONV_KERNEL, dilation=dilation),
            Snake(channels),
            CausalConv1d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)  # (B, C, L)


class ConvEncoderBlock(nn.Module):
    """Three residual units at dim/2, Snake, strided conv to dim, then a transformer or Identity."""

    def __init__(self, dim: int, stride: int, transformer: nn.Module | None = None) -> None:
        super().__init__()
        half = dim // 2
        self.block = nn.Sequential(
            *(ResidualUnit(half, d) for d in RESIDUAL_DILATIONS),
            Snake(half),
            CausalConv1d(half, dim, 2 * stride, stride=stride),
            transformer if transformer is not None else nn.Identity(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)  # (B, dim/2, L) -> (B, dim, ceil(L / stride))


class Encoder(nn.Module):
    """(B, 1, N) -> (B, latent_dim, N / hop); the last block carries the windowed transformer."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        dim = config.encoder_dim
        layers: list[nn.Module] = [CausalConv1d(1, dim, CONV_KERNEL)]
        for index, stride in enumerate(config.encoder_rates):
            dim *= 2
            last = index == len(config.encoder_rates) - 1
            layers.append(ConvEncoderBlock(dim, stride, self._transformer(config) if last else None))
        layers += [Snake(dim), CausalConv1d(dim, config.latent_dim, ENCODER_OUT_KERNEL)]
        self.block = nn.Sequential(*layers)

    @staticmethod
    def _transformer(config: AutoencoderConfig) -> nn.Module | None:
        if config.encoder_transformer_layers == 0:
            return None
        return WindowLimitedTransformer(
            config.encoder_transformer_dim,
            num_layers=config.encoder_transformer_layers,
            num_heads=config.encoder_transformer_heads,
            ffn=config.encoder_transformer_ffn,
            window=config.encoder_transformer_window,
            block_size=config.encoder_transformer_block_size,
            eps=config.norm_eps,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class DecoderBlock(nn.Module):
    """Snake, causal transposed conv (x stride), three residual units. No transformer (spec §5.2)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            Snake(c_in),
            CausalConvTranspose1d(c_in, c_out, 2 * stride, stride=stride),
            *(ResidualUnit(c_out, d) for d in RESIDUAL_DILATIONS),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)  # (B, C_in, L) -> (B, C_out, L * stride)


class Decoder(nn.Module):
    """(B, latent_dim, L) -> tanh waveform (B, 1, L * hop)."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        dim = config.decoder_dim
        layers: list[nn.Module] = [CausalConv1d(config.latent_dim, dim, CONV_KERNEL)]
        for stride in config.decoder_rates:
            layers.append(DecoderBlock(dim, dim // 2, stride))
            dim //= 2
        layers += [Snake(dim), CausalConv1d(dim, 1, CONV_KERNEL), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class FishS1DAC(nn.Module):
    """The S1-DAC codec: ``encoder``, ``quantizer``, ``decoder`` as in the published checkpoint."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.quantizer = DownsampleResidualVectorQuantize(config)
        self.decoder = Decoder(config)

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.model[0].conv.bias.dtype

    @property
    def device(self) -> torch.device:
        return self.decoder.model[0].conv.bias.device

    def transformers(self) -> list[WindowLimitedTransformer]:
        """The windowed transformers (encoder, pre_module, post_module), for RoPE-table upkeep."""
        return [m for m in self.modules() if isinstance(m, WindowLimitedTransformer)]

    @torch.inference_mode()
    def encode_codes(self, audio: torch.Tensor) -> torch.Tensor:
        """audio: (B, 1, N) -> codes (B, 1 + n_codebooks, ceil(N / 2048)), right zero-padded."""
        if audio.dim() != 3 or audio.shape[1] != 1 or audio.shape[2] == 0:
            raise InvalidAudio(f"expected audio of shape (batch, 1, samples>0), got {tuple(audio.shape)}")
        frame = self.config.frame_length
        audio = F.pad(audio.to(self.device, self.dtype), (0, -audio.shape[-1] % frame))  # (B, 1, 2048 T)
        z = self.encoder(audio)  # (B, C, 4T)
        return self.quantizer.encode_codes(z)  # (B, 1 + n, T)

    @torch.inference_mode()
    def encode_zq(self, audio: torch.Tensor) -> torch.Tensor:
        """audio: (B, 1, N) -> z_q (B, latent_dim, ceil(N / 2048)) in the AE dtype (spec §5.4)."""
        return self.quantizer.codes_to_zq(self.encode_codes(audio))

    @torch.inference_mode()
    def decode_zq(self, z_q: torch.Tensor) -> torch.Tensor:
        """z_q: (B, latent_dim, T) -> waveform (B, 1, 2048 T) in [-1, 1], in the AE dtype."""
        if z_q.dim() != 3 or z_q.shape[1] != self.config.latent_dim or z_q.shape[2] == 0:
            raise InvalidInput(f"expected z_q of shape (batch, {self.config.latent_dim}, T>0), got {tuple(z_q.shape)}")
        h = self.quantizer.decode(z_q.to(self.device, self.dtype))  # (B, C, 4T)
        return self.decoder(h)  # (B, 1, 2048 T)
