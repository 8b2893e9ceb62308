"""JoyVASA's motion generator: a diffusion transformer decoder over a 70-d motion sequence (our code).

The denoiser sees ``n_prev_motions`` previous frames followed by ``n_motions`` noisy frames, projected
to ``feature_dim`` and summed with a sinusoidal position table and the embedded diffusion step; a
post-norm transformer decoder attends, frame for frame (a diagonal memory mask), to the matching row of
the audio features (previous window's features first), and an MLP predicts the clean motion of every
frame. Sampling is ancestral DDPM over ``n_diff_steps`` steps with classifier-free guidance on audio
(the null condition is one learned row repeated).

Parameter names follow the published checkpoint's ``model`` entry (``DitTalkingHead.state_dict()``):
``audio_feature_map``, ``start_audio_feat``, ``start_motion_feat``, ``null_audio_feat``,
``denoising_net.*``, ``diffusion_sched.*``. Its ``audio_encoder.*`` entries are the HuBERT weights
(`models.motion.audio`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class JoyVASAConfig:
    """Motion generator hyperparameters (the checkpoint's ``args``; fixed ones as the reference builds).

    Attributes:
        motion_dim: 63 expression + 1 scale + 3 translation + 3 rotation (pitch, yaw, roll).
        n_motions: Frames per window.
        n_prev_motions: Frames of the previous window each window is conditioned on.
        feature_dim: Transformer width (audio features are mapped from ``audio_dim`` to it).
        audio_dim: HuBERT hidden size.
        n_diff_steps: Diffusion steps (sampling runs all of them).
        n_heads, n_layers, mlp_ratio: Transformer shape (not in ``args``; the reference's defaults).
        fps: Motion frame rate.
        pad_mode: How the last window's audio is padded: ``zero`` or ``replicate``.
    """

    motion_dim: int = 70
    n_motions: int = 100
    n_prev_motions: int = 10
    feature_dim: int = 512
    audio_dim: int = 768
    n_diff_steps: int = 500
    n_heads: int = 8
    n_layers: int = 8
    mlp_ratio: int = 4
    fps: int = 25
    pad_mode: str = "zero"

    def to_dict(self) -> dict[str, int | str]:
        return asdict(self)


JOYVASA_HUBERT_ZH = JoyVASAConfig()


def tiny_joyvasa_config() -> JoyVASAConfig:
    """A narrow generator for tests: 8-frame windows after 2 previous frames, 6 diffusion steps."""
    return JoyVASAConfig(
        n_motions=8, n_prev_motions=2, feature_dim=32, audio_dim=16, n_diff_steps=6, n_heads=2, n_layers=2
    )


def sinusoidal_table(length: int, dim: int) -> torch.Tensor:
    """(1, length, dim) sine/cosine position table (the reference's ``PositionalEncoding.pe``)."""
    table = torch.zeros(length, dim)
    position = torch.arange(0, length, dtype=torch.float).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2).float() * (-math.log(10000.0) / dim))
    table[:, 0::2] = torch.sin(position * div_term)
    table[:, 1::2] = torch.cos(position * div_term)
    return table.unsqueeze(0)


class PositionTable(nn.Module):
    pe: torch.Tensor

    def __init__(self, length: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("pe", sinusoidal_table(length, dim))


class DecoderLayer(nn.Module):
    """``nn.TransformerDecoderLayer`` (post-norm, GELU), written out with its parameter names."""

    def __init__(self, dim: int, heads: int, ff_size: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=0.0, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(dim, heads, dropout=0.0, batch_first=True)
        self.linear1 = nn.Linear(dim, ff_size)
        self.linear2 = nn.Linear(ff_size, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.self_attn(x, x, x, need_weights=False)[0])
        x = self.norm2(
            x + self.multihead_attn(x, memory, memory, attn_mask=memory_mask, need_weights=False)[0]
        )
        out: torch.Tensor = self.norm3(x + self.linear2(F.gelu(self.linear1(x))))
        return out


class TransformerDecoder(nn.Module):
    def __init__(self, layers: list[DecoderLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)


class DenoisingNetwork(nn.Module):
    """Predicts the clean motion of the previous and current frames."""

    alignment_mask: torch.Tensor

    def __init__(self, config: JoyVASAConfig) -> None:
        super().__init__()
        dim = config.feature_dim
        if dim % config.n_heads or dim % 2:
            raise ValueError(f"feature_dim={dim} must be even and divisible by n_heads={config.n_heads}")
        self.config = config
        # The reference sizes this table by its own default (500 steps), whatever the checkpoint's.
        self.TE = PositionTable(max(501, config.n_diff_steps + 1), dim)
        self.diff_step_map = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.PE = PositionTable(600, dim)
        self.feature_proj = nn.Linear(config.motion_dim, dim)
        self.transformer = TransformerDecoder(
            [DecoderLayer(dim, config.n_heads, config.mlp_ratio * dim) for _ in range(config.n_layers)]
        )
        length = config.n_prev_motions + config.n_motions
        # Frame i of the motion attends only to audio row i.
        self.register_buffer("alignment_mask", ~torch.eye(length, dtype=torch.bool))
        self.motion_dec = nn.Sequential(
            nn.Linear(dim, dim // 2), nn.GELU(), nn.Linear(dim // 2, config.motion_dim)
        )

    def forward(
        self,
        motion: torch.Tensor,
        audio_feat: torch.Tensor,
        prev_motion: torch.Tensor,
        prev_audio_feat: torch.Tensor,
        step: torch.Tensor,
    ) -> torch.Tensor:
        """
        Args:
            motion: (B, n_motions, motion_dim) noisy motion.
            audio_feat: (B, n_motions, feature_dim) mapped audio features (or the null row).
            prev_motion: (B, n_prev_motions, motion_dim).
            prev_audio_feat: (B, n_prev_motions, feature_dim).
            step: (B,) diffusion steps (long).

        Returns:
            (B, n_prev_motions + n_motions, motion_dim) predicted clean motion.
        """
        step_embedding = self.diff_step_map(self.TE.pe[0, step]).unsqueeze(1)
        h = self.feature_proj(torch.cat([prev_motion, motion], dim=1))
        h = h + self.PE.pe[:, : h.shape[1], :] + step_embedding
        memory = torch.cat([prev_audio_feat, audio_feat], dim=1)
        for layer in self.transformer.layers:
            h = layer(h, memory, self.alignment_mask)
        out: torch.Tensor = self.motion_dec(h)
        return out


def _schedule(num_steps: int, s: float) -> tuple[torch.Tensor, ...]:
    x = torch.linspace(0, num_steps, num_steps + 1)
    alpha_bars = torch.cos(((x / num_steps) + s) / (1 + s) * torch.pi * 0.5) ** 2
    alpha_bars = alpha_bars / alpha_bars[0]
    betas = torch.clip(1 - (alpha_bars[1:] / alpha_bars[:-1]), 0.0001, 0.999)
    betas = torch.cat([torch.zeros(1), betas], dim=0)
    alphas = 1 - betas
    log_alphas = torch.log(alphas)
    for i in range(1, log_alphas.shape[0]):  # sequential, as the reference accumulates
        log_alphas[i] += log_alphas[i - 1]
    alpha_bars = log_alphas.exp()
    sigmas_flex = torch.sqrt(betas)
    sigmas_inflex = torch.zeros_like(sigmas_flex)
    for i in range(1, sigmas_flex.shape[0]):
        sigmas_inflex[i] = ((1 - alpha_bars[i - 1]) / (1 - alpha_bars[i])) * betas[i]
    return betas, alphas, alpha_bars, sigmas_flex, torch.sqrt(sigmas_inflex)


class DiffusionSchedule(nn.Module):
    """The reference's cosine schedule with a padded ``beta_0 = 0`` (float32, computed as it does)."""

    betas: torch.Tensor
    alphas: torch.Tensor
    alpha_bars: torch.Tensor
    sigmas_flex: torch.Tensor
    sigmas_inflex: torch.Tensor

    def __init__(self, num_steps: int, s: float = 0.008) -> None:
        super().__init__()
        with torch.device("cpu"):  # a few KB, computed sequentially: never on meta
            betas, alphas, alpha_bars, sigmas_flex, sigmas_inflex = _schedule(num_steps, s)
        self.num_steps = num_steps
        self.register_buffer("betas", betas)
        self.register_buffer("alphas", alphas)
        self.register_buffer("alpha_bars", alpha_bars)
        self.register_buffer("sigmas_flex", sigmas_flex)
        self.register_buffer("sigmas_inflex", sigmas_inflex)


class JoyVASAGenerator(nn.Module):
    """The motion generator less its audio encoder (``DitTalkingHead`` without ``audio_encoder``)."""

    # Buffers computed from the config: the reference drops ``denoising_net.TE.pe`` from the
    # checkpoint; the others are taken from the file when it has them, as the reference loads them.
    DERIVED_KEYS = (
        "denoising_net.TE.pe",
        "denoising_net.PE.pe",
        "denoising_net.alignment_mask",
        "diffusion_sched.betas",
        "diffusion_sched.alphas",
        "diffusion_sched.alpha_bars",
        "diffusion_sched.sigmas_flex",
        "diffusion_sched.sigmas_inflex",
    )

    def __init__(self, config: JoyVASAConfig) -> None:
        super().__init__()
        self.config = config
        self.audio_feature_map = nn.Linear(config.audio_dim, config.feature_dim)
        self.start_audio_feat = nn.Parameter(torch.randn(1, config.n_prev_motions, config.feature_dim))
        self.start_motion_feat = nn.Parameter(torch.randn(1, config.n_prev_motions, config.motion_dim))
        self.denoising_net = DenoisingNetwork(config)
        self.diffusion_sched = DiffusionSchedule(config.n_diff_steps)
        self.null_audio_feat = nn.Parameter(torch.randn(1, 1, config.feature_dim))

    def map_audio(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, 2 * n_motions, audio_dim) HuBERT states -> (B, n_motions, feature_dim), resampled
        linearly to the motion frame rate as the reference does ("BackResample")."""
        resampled = F.interpolate(
            hidden_states.transpose(1, 2), size=self.config.n_motions, align_corners=False, mode="linear"
        )
        mapped: torch.Tensor = self.audio_feature_map(resampled.transpose(1, 2))
        return mapped
