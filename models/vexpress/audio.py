"""Speech -> wav2vec2 features -> one 10-token window per video frame.

The reference runs wav2vec2 once over the whole clip, stretches its ``N`` output tokens to exactly
two tokens per video frame (linear interpolation in fp32), pads two frames' worth of zero tokens on
each side and gives frame ``i`` the ten tokens of frames ``i-2 .. i+2``. We keep that: the padded
token sequence (``2 * num_frames + 8`` tokens) is computed once per job in ``prepare`` and every
chunk slices its frames' windows out of it, so no chunk ever needs audio outside its own range.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

AUDIO_SAMPLE_RATE = 16_000
TOKENS_PER_FRAME = 2
NUM_PAD_AUDIO_FRAMES = 2
"""Frames of context on each side of a frame's audio window (the reference's num_pad_audio_frames)."""

WINDOW_TOKENS = TOKENS_PER_FRAME * (2 * NUM_PAD_AUDIO_FRAMES + 1)
"""Tokens in one frame's window: 10."""


def build_feature_extractor() -> Wav2Vec2FeatureExtractor:
    """The wav2vec2-base-960h preprocessing: zero mean, unit variance over the whole clip, no padding."""
    return Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=AUDIO_SAMPLE_RATE,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=False,
    )


@torch.no_grad()
def encode_audio(
    audio: npt.NDArray[np.float32],
    audio_encoder: Wav2Vec2Model,
    feature_extractor: Wav2Vec2FeatureExtractor,
    *,
    sample_rate: int = AUDIO_SAMPLE_RATE,
) -> torch.Tensor:
    """Run wav2vec2 over the whole clip.

    Args:
        audio (`np.ndarray` of shape `(samples,)`): mono float32 speech at 16 kHz.
        audio_encoder: the bare ``Wav2Vec2Model`` (eval mode, so no SpecAugment masking).
        feature_extractor: normalises the clip as the reference does
            (``(x - mean) / sqrt(var + 1e-7)``).

    Returns:
        `torch.Tensor` of shape `(N, hidden_size)`: ``last_hidden_state`` of the single batch row, on
        the encoder's device and in its dtype (``N`` is about ``samples / 320``).
    """
    if sample_rate != AUDIO_SAMPLE_RATE:
        raise ValueError(f"audio must be sampled at {AUDIO_SAMPLE_RATE} Hz, got {sample_rate}")
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono (samples,), got shape {audio.shape}")
    input_values = feature_extractor(
        np.asarray(audio, dtype=np.float32), sampling_rate=AUDIO_SAMPLE_RATE, return_tensors="pt"
    ).input_values
    parameter = next(audio_encoder.parameters())
    input_values = input_values.to(device=parameter.device, dtype=parameter.dtype)
    hidden_states: torch.Tensor = audio_encoder(input_values).last_hidden_state
    return hidden_states[0]


def frame_audio_tokens(hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Stretch wav2vec2 tokens to two per video frame and pad with zero frames on both sides.

    Args:
        hidden_states (`torch.Tensor` of shape `(N, D)`): wav2vec2 output tokens.
        num_frames: video frames ``L`` of the clip.

    Returns:
        `torch.Tensor` of shape `(2 * L + 8, D)` in the dtype of ``hidden_states``: 4 zero tokens, the
        ``2 * L`` interpolated tokens (linear, ``align_corners=False``, computed in fp32 as in the
        reference), 4 zero tokens.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    stretched = F.interpolate(
        hidden_states.float().T[None],  # [1, D, N]: interpolate along time
        size=TOKENS_PER_FRAME * num_frames,
        mode="linear",
        align_corners=False,
    )[0].T.to(hidden_states.dtype)
    pad = hidden_states.new_zeros(TOKENS_PER_FRAME * NUM_PAD_AUDIO_FRAMES, hidden_states.shape[1])
    return torch.cat([pad, stretched, pad], dim=0)


def audio_windows(padded_tokens: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """The audio windows of frames ``start .. stop - 1``.

    Args:
        padded_tokens (`torch.Tensor` of shape `(2 * L + 8, D)`): from ``frame_audio_tokens``.
        start, stop: frame range, ``0 <= start < stop <= L``.

    Returns:
        `torch.Tensor` of shape `(stop - start, 10, D)`: frame ``i`` gets padded tokens
        ``2i .. 2i + 9``, i.e. the two tokens of each of frames ``i - 2 .. i + 2``.
    """
    num_frames = (padded_tokens.shape[0] - WINDOW_TOKENS + TOKENS_PER_FRAME) // TOKENS_PER_FRAME
    if not 0 <= start < stop <= num_frames:
        raise ValueError(f"frame range [{start}, {stop}) outside [0, {num_frames})")
    # unfold: windows of WINDOW_TOKENS tokens at a stride of TOKENS_PER_FRAME -> [L, D, 10]
    first, last = TOKENS_PER_FRAME * start, TOKENS_PER_FRAME * (stop - 1) + WINDOW_TOKENS
    windows = padded_tokens[first:last].unfold(0, WINDOW_TOKENS, TOKENS_PER_FRAME)
    return windows.permute(0, 2, 1).contiguous()
