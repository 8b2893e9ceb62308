"""Ditto's LMDM denoiser: a FiLM transformer decoder over a 265-d motion sequence (our code).

The denoiser predicts the clean motion ``x0`` of a window (``seq_frames`` frames) from the noisy
motion, the motion of the window's condition frame (repeated along time and concatenated to each
frame), the per-frame condition sequence (HuBERT features + emotion + eye + source keypoints), and the
diffusion step. Conditions are projected, encoded by two rotary self-attention layers, and enter the
decoder twice: as cross-attention memory (with two time tokens appended) and, mean-pooled, added to the
FiLM time embedding. Classifier-free guidance swaps the encoded condition for learned null embeddings.

Parameter names follow the published ``model_state_dict`` (``lmdm_v0.4_hubert.pth``) exactly, so it
loads strictly; the shared rotary table appears in the state dict once per layer, as published.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class DittoConfig:
    """LMDM hyperparameters and the layout of its condition vector.

    Attributes:
        motion_dim: Motion vector size (1 scale + 3x66 pose bins + 3 translation + 63 expression).
        audio_dim: HuBERT feature size at the start of each condition row.
        use_emo, use_eye_open, use_eye_ball, use_sc: Which extra conditions follow the audio features
            (8 emotion probabilities, 2 eye-open ratios, 6 eyeball offsets, 63 source keypoints).
        seq_frames: Frames per window.
        latent_dim, ff_size, num_layers, num_heads: Transformer widths and depth.
    """

    motion_dim: int = 265
    audio_dim: int = 1024
    use_emo: bool = True
    use_eye_open: bool = True
    use_eye_ball: bool = True
    use_sc: bool = True
    seq_frames: int = 80
    latent_dim: int = 512
    ff_size: int = 1024
    num_layers: int = 8
    num_heads: int = 8

    @property
    def cond_dim(self) -> int:
        """Size of one condition row."""
        return (
            self.audio_dim
            + 8 * self.use_emo
            + 2 * self.use_eye_open
            + 6 * self.use_eye_ball
            + 63 * self.use_sc
        )

    def to_dict(self) -> dict[str, int | bool]:
        return asdict(self)


# The released model's configuration (v0.4, HuBERT features, every condition on).
DITTO_V04 = DittoConfig()


def tiny_ditto_config() -> DittoConfig:
    """A narrow LMDM for tests: 16-frame windows, 2 layers (HuBERT rows stay 1024-d)."""
    return DittoConfig(seq_frames=16, latent_dim=32, ff_size=64, num_layers=2, num_heads=2)


class RotaryEmbedding(nn.Module):
    """Rotary position table over the full feature width (interleaved pairs), as the reference uses."""

    freqs: torch.Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("freqs", _rotary_freqs(dim))

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, D) -> rotated by position along N. The angles are computed in float32 whatever
        the model dtype (in bf16, position x frequency would be off by up to a third of a radian)."""
        freqs = self.freqs
        if freqs.dtype != torch.float32:  # the table was cast with the weights: recompute it
            freqs = _rotary_freqs(self.dim).to(freqs.device)
        positions = torch.arange(x.shape[-2], device=x.device).to(freqs.dtype)
        angles = torch.repeat_interleave(torch.einsum("n,f->nf", positions, freqs), 2, dim=-1).to(x)
        pairs = x.reshape(*x.shape[:-1], -1, 2)
        rotated_half = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        return x * angles.cos() + rotated_half * angles.sin()


def _rotary_freqs(dim: int) -> torch.Tensor:
    return 1.0 / (10000 ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))


class SinusoidalTimeEmbedding(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, times: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        scale = math.log(10000) / (half - 1)
        freqs = torch.exp(torch.arange(half, device=times.device) * -scale)
        angles = times[:, None] * freqs[None, :]
        return torch.cat((angles.sin(), angles.cos()), dim=-1)


class FiLM(nn.Module):
    """Scale and shift from the time embedding (``block`` = Mish, Linear as published)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Mish(), nn.Linear(dim, dim * 2))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        scale, shift = self.block(t)[:, None, :].chunk(2, dim=-1)
        out: torch.Tensor = (scale + 1) * x + shift
        return out


class CondEncoderLayer(nn.Module):
    """Pre-norm self-attention layer with rotary queries/keys (values unrotated)."""

    def __init__(self, dim: int, heads: int, ff_size: int, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=0.0, batch_first=True)
        self.linear1 = nn.Linear(dim, ff_size)
        self.linear2 = nn.Linear(ff_size, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.rotary = rotary

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        qk = self.rotary.rotate(h)
        x = x + self.self_attn(qk, qk, h, need_weights=False)[0]
        out: torch.Tensor = x + self.linear2(F.gelu(self.linear1(self.norm2(x))))
        return out


class FiLMDecoderLayer(nn.Module):
    """Pre-norm decoder layer: rotary self-attention, rotary cross-attention, feed-forward, each
    residual branch modulated by its own FiLM of the time embedding."""

    def __init__(self, dim: int, heads: int, ff_size: int, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=0.0, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(dim, heads, dropout=0.0, batch_first=True)
        self.linear1 = nn.Linear(dim, ff_size)
        self.linear2 = nn.Linear(ff_size, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.film1 = FiLM(dim)
        self.film2 = FiLM(dim)
        self.film3 = FiLM(dim)
        self.rotary = rotary

    def forward(self, x: torch.Tensor, memory: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        qk = self.rotary.rotate(h)
        x = x + self.film1(self.self_attn(qk, qk, h, need_weights=False)[0], t)
        h = self.norm2(x)
        attended = self.multihead_attn(
            self.rotary.rotate(h), self.rotary.rotate(memory), memory, need_weights=False
        )[0]
        x = x + self.film2(attended, t)
        out: torch.Tensor = x + self.film3(self.linear2(F.gelu(self.linear1(self.norm3(x)))), t)
        return out


class DecoderStack(nn.Module):
    def __init__(self, layers: list[FiLMDecoderLayer]) -> None:
        super().__init__()
        self.stack = nn.ModuleList(layers)


class DittoDenoiser(nn.Module):
    """LMDM's ``MotionDecoder``: predicts the clean motion window ``x0``.

    Use `encode_cond` once per window (it does not depend on the diffusion step), then
    `guided_x0` at each step.
    """

    def __init__(self, config: DittoConfig) -> None:
        super().__init__()
        if config.latent_dim % config.num_heads:
            raise ValueError(
                f"latent_dim={config.latent_dim} is not divisible by num_heads={config.num_heads}"
            )
        if config.latent_dim % 2:
            raise ValueError(f"latent_dim={config.latent_dim} must be even (rotary pairs)")
        self.config = config
        dim = config.latent_dim
        self.rotary = RotaryEmbedding(dim)
        self.time_mlp = nn.Sequential(SinusoidalTimeEmbedding(dim), nn.Linear(dim, dim * 4), nn.Mish())
        self.to_time_cond = nn.Sequential(nn.Linear(dim * 4, dim))
        self.to_time_tokens = nn.Sequential(nn.Linear(dim * 4, dim * 2))
        self.null_cond_embed = nn.Parameter(torch.randn(1, config.seq_frames, dim))
        self.null_cond_hidden = nn.Parameter(torch.randn(1, dim))
        self.norm_cond = nn.LayerNorm(dim)
        self.input_projection = nn.Linear(config.motion_dim * 2, dim)
        self.cond_encoder = nn.Sequential(
            *[CondEncoderLayer(dim, config.num_heads, config.ff_size, self.rotary) for _ in range(2)]
        )
        self.cond_projection = nn.Linear(config.cond_dim, dim)
        self.non_attn_cond_projection = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim)
        )
        self.seqTransDecoder = DecoderStack(
            [
                FiLMDecoderLayer(dim, config.num_heads, config.ff_size, self.rotary)
                for _ in range(config.num_layers)
            ]
        )
        self.final_layer = nn.Linear(dim, config.motion_dim)

    def encode_cond(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoded conditions for guidance, unconditional first.

        Args:
            cond: (1, seq_frames, cond_dim) condition rows of one window.

        Returns:
            tokens (2, seq_frames, D) and pooled hidden (2, D): index 0 the null (unconditional)
            embeddings, index 1 the encoded condition.
        """
        tokens = self.cond_encoder(self.cond_projection(cond))
        hidden = self.non_attn_cond_projection(tokens.mean(dim=-2))
        null_tokens = self.null_cond_embed.to(tokens.dtype)
        null_hidden = self.null_cond_hidden.to(hidden.dtype)
        return torch.cat([null_tokens, tokens], 0), torch.cat([null_hidden, hidden], 0)

    def guided_x0(
        self,
        x: torch.Tensor,
        cond_frame: torch.Tensor,
        encoded: tuple[torch.Tensor, torch.Tensor],
        times: torch.Tensor,
        guidance_scale: float,
    ) -> torch.Tensor:
        """Classifier-free guided ``x0``: ``unc + (cond - unc) * guidance_scale``.

        Args:
            x: (1, seq_frames, motion_dim) noisy motion.
            cond_frame: (1, motion_dim) the motion the window continues from.
            encoded: `encode_cond`'s output for this window.
            times: (1,) diffusion step (long).
        """
        tokens, hidden = encoded
        frames = x.shape[1]
        h = torch.cat([x, cond_frame[:, None, :].expand(-1, frames, -1)], dim=-1)
        h = self.input_projection(h).expand(2, -1, -1)
        embedding, *time_layers = self.time_mlp
        t_hidden = embedding(times).to(x.dtype)  # the sinusoid in float32, then the weights' dtype
        for layer in time_layers:
            t_hidden = layer(t_hidden)
        t = self.to_time_cond(t_hidden) + hidden
        t_tokens = self.to_time_tokens(t_hidden).reshape(1, 2, -1).expand(2, -1, -1)
        memory = self.norm_cond(torch.cat((tokens, t_tokens), dim=-2))
        for layer in self.seqTransDecoder.stack:
            h = layer(h, memory, t)
        out: torch.Tensor = self.final_layer(h)
        unconditional, conditional = out[0:1], out[1:2]
        return unconditional + (conditional - unconditional) * guidance_scale
