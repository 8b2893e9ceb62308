"""The A2L stage: speech -> face-mesh vertex offsets (`Audio2Mesh`) and 6-DoF head pose (`Audio2Pose`).

Both run a wav2vec2 encoder whose CNN features are stretched to exactly one token per video frame
(linear, ``align_corners=True``) before the transformer, as AniPortrait's encoder does; the published
files hold their own fine-tuned copy of the encoder (``audio_encoder.*``).

Key layout (published ``audio2mesh.pt`` / ``audio2pose.pt``)::

    audio_encoder.*                     wav2vec2-base (transformers ``Wav2Vec2Model``)
    in_fn, out_fn                       Audio2Mesh: hidden -> latent -> 468*3 offsets
    in_fn, pose_map, pose_map_r,        Audio2Pose: hidden -> latent, pose <-> latent,
    PPE.pe, id_embed,                   sinusoidal positions (a persistent buffer), 100 speaker ids,
    transformer_decoder.layers.N.*      8 post-norm torch decoder layers
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Wav2Vec2Config, Wav2Vec2Model

MESH_VERTICES = 468
POSE_DIM = 6


def frame_aligned_hidden_states(
    audio_encoder: Any, input_values: torch.Tensor, num_frames: int
) -> torch.Tensor:
    r"""wav2vec2 with its CNN features stretched to one token per video frame.

    Args:
        audio_encoder: a transformers ``Wav2Vec2Model`` in eval mode.
        input_values (`torch.Tensor` of shape `(B, samples)`): normalised 16 kHz speech.
        num_frames: video frames `L` the clip covers.

    Returns:
        `torch.Tensor` of shape `(B, L, hidden_size)`: ``last_hidden_state``.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    features = audio_encoder.feature_extractor(input_values)  # (B, C, N)
    features = F.interpolate(features, size=num_frames, mode="linear", align_corners=True).transpose(1, 2)
    hidden_states, _ = audio_encoder.feature_projection(features)
    encoded = audio_encoder.encoder(hidden_states, return_dict=True)
    last: torch.Tensor = encoded.last_hidden_state
    return last


class Audio2Mesh(nn.Module):
    r"""
    Per-frame offsets of the 468 face-mesh vertices (canonical space, MediaPipe units) from speech.

    Parameters:
        audio_encoder_config (`Wav2Vec2Config`): the encoder's (wav2vec2-base-960h's ``config.json``).
        latent_dim (`int`): width of the linear bottleneck (published: 512).
        out_dim (`int`): ``3 * vertices`` (published: 1404).
    """

    def __init__(
        self, audio_encoder_config: Wav2Vec2Config, latent_dim: int = 512, out_dim: int = 3 * MESH_VERTICES
    ):
        super().__init__()
        for name, value in (("latent_dim", latent_dim), ("out_dim", out_dim)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if out_dim % 3:
            raise ValueError(f"out_dim must be 3 * vertices, got {out_dim}")
        self.audio_encoder = Wav2Vec2Model(audio_encoder_config)
        self.in_fn = nn.Linear(audio_encoder_config.hidden_size, latent_dim)
        self.out_fn = nn.Linear(latent_dim, out_dim)

    def forward(self, input_values: torch.Tensor, num_frames: int) -> torch.Tensor:
        r"""
        Args:
            input_values (`torch.Tensor` of shape `(B, samples)`): normalised 16 kHz speech.
            num_frames: video frames `L` (30 fps in the reference: ``ceil(samples / 16000 * 30)``).

        Returns:
            `torch.Tensor` of shape `(B, L, vertices, 3)`: vertex offsets, added to the portrait's mesh.
        """
        hidden_states = frame_aligned_hidden_states(self.audio_encoder, input_values, num_frames)
        offsets: torch.Tensor = self.out_fn(self.in_fn(hidden_states))
        return offsets.reshape(*offsets.shape[:2], -1, 3)


def alibi_causal_mask(num_heads: int, max_positions: int) -> torch.Tensor:
    r"""The decoder's self-attention mask: causal (``-inf`` above the diagonal) plus a per-head linear
    ALiBi bias ``-slope_h * (i - j)`` on the allowed positions (slopes ``2^(-8 (h+1) / H)`` for a
    power-of-two `H`, interleaved as in the ALiBi paper otherwise).

    Returns:
        `torch.Tensor` of shape `(num_heads, max_positions, max_positions)`, float32.
    """

    def slopes(n: int) -> list[float]:
        if math.log2(n).is_integer():
            start = 2 ** (-(2 ** -(math.log2(n) - 3)))
            return [start * start**i for i in range(n)]
        closest = 2 ** math.floor(math.log2(n))
        return slopes(closest) + slopes(2 * closest)[0::2][: n - closest]

    positions = torch.arange(max_positions)
    distance = (positions[:, None] - positions[None, :]).float()  # i - j
    causal = torch.zeros(max_positions, max_positions).masked_fill(distance < 0, float("-inf"))
    bias = -distance.clamp(min=0)
    return causal[None] + torch.tensor(slopes(num_heads))[:, None, None] * bias[None]


class SinusoidalPositions(nn.Module):
    """Adds the sinusoidal position table (``pe``, a persistent buffer as in the published file)."""

    def __init__(self, dim: int, max_positions: int):
        super().__init__()
        position = torch.arange(max_positions).unsqueeze(1).float()
        div_term = torch.exp(torch.arange(0, dim, 2).float() * -(math.log(10000.0) / dim))
        pe = torch.zeros(max_positions, dim)
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe.unsqueeze(0))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        pe = self.get_buffer("pe")
        return hidden_states + pe[:, : hidden_states.shape[1]]


class Audio2Pose(nn.Module):
    r"""
    Head pose per frame (3 Euler angles in degrees, ``xyz``; 3 translations) from speech: an
    autoregressive transformer decoder whose step `i` self-attends to the poses before it (ALiBi
    causal mask) and cross-attends to audio token `i` only, conditioned on a speaker-id embedding.

    Parameters:
        audio_encoder_config (`Wav2Vec2Config`): the encoder's.
        latent_dim (`int`): decoder width (published: 512; feed-forward `2 * latent_dim`).
        out_dim (`int`): pose size (6).
        num_heads (`int`), num_layers (`int`): decoder shape (published: 8, 8).
        max_positions (`int`): longest sequence one call decodes (published: 600 frames).
        num_ids (`int`): speaker-id embeddings (published: 100).
    """

    def __init__(
        self,
        audio_encoder_config: Wav2Vec2Config,
        latent_dim: int = 512,
        out_dim: int = POSE_DIM,
        num_heads: int = 8,
        num_layers: int = 8,
        max_positions: int = 600,
        num_ids: int = 100,
    ):
        super().__init__()
        for name, value in (
            ("latent_dim", latent_dim),
            ("out_dim", out_dim),
            ("num_heads", num_heads),
            ("num_layers", num_layers),
            ("max_positions", max_positions),
            ("num_ids", num_ids),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if latent_dim % num_heads or latent_dim % 2:
            raise ValueError(f"latent_dim={latent_dim} must be even and divisible by num_heads={num_heads}")
        self.out_dim = out_dim
        self.num_heads = num_heads
        self.max_positions = max_positions
        self.num_ids = num_ids
        self.audio_encoder = Wav2Vec2Model(audio_encoder_config)
        self.pose_map = nn.Linear(out_dim, latent_dim)
        self.in_fn = nn.Linear(audio_encoder_config.hidden_size, latent_dim)
        self.PPE = SinusoidalPositions(latent_dim, max_positions)
        layer = nn.TransformerDecoderLayer(
            d_model=latent_dim, nhead=num_heads, dim_feedforward=2 * latent_dim, batch_first=True
        )
        self.transformer_decoder = nn.TransformerDecoder(layer, num_layers=num_layers)
        self.pose_map_r = nn.Linear(latent_dim, out_dim)
        self.id_embed = nn.Embedding(num_ids, latent_dim)

    def forward(self, input_values: torch.Tensor, num_frames: int, speaker_id: torch.Tensor) -> torch.Tensor:
        r"""
        Args:
            input_values (`torch.Tensor` of shape `(1, samples)`): normalised 16 kHz speech of one window.
            num_frames: frames `L` of the window, at most `max_positions`.
            speaker_id (`torch.LongTensor` of shape `(1,)`): in ``[0, num_ids)``.

        Returns:
            `torch.Tensor` of shape `(1, L, out_dim)`: the pose of every frame.
        """
        if input_values.shape[0] != 1:
            raise ValueError(f"Audio2Pose decodes one clip at a time, got batch {input_values.shape[0]}")
        if not 1 <= num_frames <= self.max_positions:
            raise ValueError(f"num_frames must be in [1, {self.max_positions}], got {num_frames}")
        if speaker_id.shape != (1,) or not 0 <= int(speaker_id[0]) < self.num_ids:
            raise ValueError(f"speaker_id must be one id in [0, {self.num_ids}), got {speaker_id.tolist()}")
        memory = self.in_fn(frame_aligned_hidden_states(self.audio_encoder, input_values, num_frames))
        id_embedding = self.id_embed(speaker_id).unsqueeze(1)
        # Frame i reads audio token i only (True = masked).
        memory_mask = ~torch.eye(num_frames, dtype=torch.bool, device=memory.device)
        # The mask of the first n frames is the top-left block of a longer one; built per call.
        self_attention_mask = alibi_causal_mask(self.num_heads, num_frames).to(memory.device)
        pose_embeddings = self.pose_map(memory.new_zeros(1, 1, self.out_dim))
        # Causal masking makes the outputs for frames < i final once frame i is decoded, so the last
        # pass's outputs are every frame's pose; each pass re-runs the prefix, as the reference does.
        poses: torch.Tensor = memory.new_zeros(1, 0, self.out_dim)
        for step in range(num_frames):
            length = step + 1
            decoder_input = self.PPE(pose_embeddings) + id_embedding
            decoded = self.transformer_decoder(
                decoder_input,
                memory,
                tgt_mask=self_attention_mask[:, :length, :length],
                memory_mask=memory_mask[:length],
            )
            poses = self.pose_map_r(decoded)
            pose_embeddings = torch.cat([pose_embeddings, self.pose_map(poses[:, -1:])], dim=1)
        return poses
