"""Hallo's wav2vec2 features (the reference's ``AudioProcessor.preprocess`` and ``Wav2VecModel``),
computed over long audio in bounded memory.

The reference, on the whole clip at once:

1. normalises the samples (zero mean, unit variance: ``Wav2Vec2FeatureExtractor``), counts
   ``seq_len = ceil(samples / sample_rate * fps)`` frames and pads the normalised samples with
   zeros to a whole number of clips (``seq_len`` rounded up to ``clip_frames``);
2. runs wav2vec2's convolutional feature encoder, then stretches its ~50 Hz frames linearly
   (``align_corners=True``) to ``seq_len`` frames, before the feature projection;
3. runs the transformer encoder and keeps its 12 layer outputs (``hidden_states[1:]``): `(seq_len, 12, 768)`;
4. gives video frame ``i`` the features of frames ``i-2 .. i+2``, clamped to ``[0, seq_len)``.

Here steps 1-2 run in ``encode_conv_features`` over windows of samples, exactly: the convolutions
are local, and the first layer's GroupNorm (per channel over the whole clip) gets its statistics
from a first pass over the same windows. The result is small (`(seq_len, 512)` float32, 50 KiB per
second at 25 fps) and kept per job. Step 3 runs per fixed window of frames (``window_frames`` plus
``context_frames`` of context each side, the same windows whatever the chunking), in
``HalloAudioFeatures.frames``, so the encoder's memory is that of one window; frames far from a
window edge see the same attention context as in the whole-clip run, and the difference measured on
random weights is in ``docs/hallo.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

AUDIO_WINDOW_RADIUS = 2
"""Frames of audio context on each side of a video frame (5-frame windows)."""
DEFAULT_WINDOW_FRAMES = 250
DEFAULT_CONTEXT_FRAMES = 50
SAMPLE_CHUNK_FRAMES = 250
"""Output frames of the convolutional encoder computed at once (5 s of audio: its transient tensors,
33 MiB each at wav2vec2-base's 512 channels, are then the same for every job of 5 s or more)."""


def normalise(audio: npt.NDArray[np.float32], do_normalize: bool = True) -> npt.NDArray[np.float32]:
    """``Wav2Vec2FeatureExtractor``'s ``zero_mean_unit_var_norm`` of one clip (float32)."""
    samples = np.asarray(audio, dtype=np.float32)
    if not do_normalize:
        return samples
    return np.asarray((samples - samples.mean()) / np.sqrt(samples.var() + 1e-7), dtype=np.float32)


def frame_count(num_samples: int, sample_rate: int, fps: float) -> int:
    """The reference's ``seq_len``: ``ceil(samples / sample_rate * fps)``."""
    return math.ceil(num_samples / sample_rate * fps)


def padded_samples(
    normalised: npt.NDArray[np.float32], sample_rate: int, fps: float, clip_frames: int
) -> tuple[npt.NDArray[np.float32], int]:
    """The normalised samples padded with zeros to a whole number of clips, and the padded frame count.

    As the reference: ``(clip_frames - seq_len % clip_frames) * (sample_rate // fps)`` zeros. Beyond
    it, at least one wav2vec2 token's worth of samples (400), which the reference would need too.
    """
    pad, seq_len = _padding(len(normalised), sample_rate, fps, clip_frames)
    return np.pad(normalised, (0, pad)), seq_len


def _padding(num_samples: int, sample_rate: int, fps: float, clip_frames: int) -> tuple[int, int]:
    """`(zeros to append, padded frame count)` of `padded_samples`."""
    seq_len = frame_count(num_samples, sample_rate, fps)
    pad = 0
    if seq_len % clip_frames:
        pad = (clip_frames - seq_len % clip_frames) * int(sample_rate // fps)
        seq_len += clip_frames - seq_len % clip_frames
    return max(pad, 400 - num_samples), seq_len


def _conv_lengths(num_samples: int, kernels: list[int], strides: list[int]) -> list[int]:
    lengths = [num_samples]
    for kernel, stride in zip(kernels, strides, strict=True):
        lengths.append((lengths[-1] - kernel) // stride + 1)
    return lengths


def _receptive_field(kernels: list[int], strides: list[int]) -> tuple[int, int]:
    """`(field, hop)` of the stacked convs, in input steps."""
    span, hop = 1, 1
    for kernel, stride in reversed(list(zip(kernels, strides, strict=True))):
        span = (span - 1) * stride + kernel
        hop *= stride
    return span, hop


@torch.no_grad()
def encode_conv_features(
    audio_encoder: Any, samples: npt.NDArray[np.float32], chunk_frames: int = SAMPLE_CHUNK_FRAMES
) -> torch.Tensor:
    """wav2vec2's convolutional feature encoder over `samples` (already normalised and padded), in
    windows of `chunk_frames` output frames; the same result as one call on the whole input.

    Returns:
        `torch.Tensor` of shape `(frames, conv_dim[-1])`, float32 on the CPU.
    """
    layers = list(audio_encoder.feature_extractor.conv_layers)
    kernels = [int(layer.conv.kernel_size[0]) for layer in layers]
    strides = [int(layer.conv.stride[0]) for layer in layers]
    lengths = _conv_lengths(len(samples), kernels, strides)
    if lengths[-1] < 1:
        raise ValueError(f"{len(samples)} samples are too few for one wav2vec2 frame")
    first, rest = layers[0], layers[1:]
    span, hop = _receptive_field(kernels[1:], strides[1:])  # in first-layer frames
    param = next(audio_encoder.parameters())
    device, dtype = param.device, param.dtype
    audio = torch.from_numpy(np.ascontiguousarray(samples))
    group_norm = getattr(first, "layer_norm", None)
    per_channel = isinstance(group_norm, nn.GroupNorm)

    def first_conv(start: int, stop: int) -> torch.Tensor:
        """First-layer frames `[start, stop)` before its norm: `(1, C, stop - start)`."""
        window = audio[start * strides[0] : (stop - 1) * strides[0] + kernels[0]]
        return first.conv(window.to(device, dtype)[None, None])  # type: ignore[no-any-return]

    first_frames = lengths[1]
    statistics: tuple[torch.Tensor, torch.Tensor] | None = None
    if per_channel:  # pass 1: GroupNorm(C groups) = per-channel mean and variance over all frames
        total = torch.zeros(first.conv.out_channels, dtype=torch.float64)
        squares = torch.zeros_like(total)
        step = chunk_frames * hop
        for start in range(0, first_frames, step):
            values = first_conv(start, min(start + step, first_frames))[0].double().cpu()
            total += values.sum(dim=1)
            squares += (values * values).sum(dim=1)
        mean = total / first_frames
        statistics = (mean, (squares / first_frames - mean * mean).clamp_min(0.0))

    outputs: list[torch.Tensor] = []
    for start in range(0, lengths[-1], chunk_frames):
        stop = min(start + chunk_frames, lengths[-1])
        hidden = first_conv(start * hop, (stop - 1) * hop + span)
        if statistics is not None and group_norm is not None:
            mean, var = (s.to(device, torch.float32)[None, :, None] for s in statistics)
            normed = (hidden.float() - mean) / torch.sqrt(var + group_norm.eps)
            hidden = (normed * group_norm.weight[None, :, None] + group_norm.bias[None, :, None]).to(dtype)
        elif group_norm is not None:  # "layer" norm: per frame over channels
            hidden = group_norm(hidden.transpose(-2, -1)).transpose(-2, -1)
        hidden = first.activation(hidden)
        for layer in rest:
            hidden = layer(hidden)
        outputs.append(hidden[0].transpose(0, 1).float().cpu())
    return torch.cat(outputs)


def stretch(features: torch.Tensor, num_frames: int) -> torch.Tensor:
    """The reference's ``linear_interpolation``: `(N, C)` -> `(num_frames, C)` (align_corners)."""
    stretched = F.interpolate(features.T[None], size=num_frames, align_corners=True, mode="linear")
    return stretched[0].T.contiguous()


@torch.no_grad()
def encode_hidden_states(audio_encoder: Any, features: torch.Tensor) -> torch.Tensor:
    """Feature projection and transformer encoder on `(T, C)` stretched conv features.

    Returns:
        `torch.Tensor` of shape `(T, layers, hidden_size)`: every layer's output (``hidden_states[1:]``).
    """
    param = next(audio_encoder.parameters())
    hidden, _ = audio_encoder.feature_projection(features[None].to(param.device, param.dtype))
    # The encoder's own forward, layer by layer, keeping every layer's output (transformers >= 5
    # records hidden states only at the model level, around the feature encoder we replace).
    encoder = audio_encoder.encoder
    if getattr(audio_encoder.config, "do_stable_layer_norm", False):
        raise ValueError("only wav2vec2-base's post-norm encoder is supported (do_stable_layer_norm=False)")
    hidden = encoder.layer_norm(hidden + encoder.pos_conv_embed(hidden))
    states = []
    for layer in encoder.layers:
        hidden = layer(hidden)
        states.append(hidden[0] if isinstance(hidden, tuple) else hidden)
        hidden = states[-1]
    return torch.stack(states, dim=2)[0]


@dataclass
class HalloAudioFeatures:
    """One job's audio: its stretched conv features, and the encoder run per window of frames.

    Attributes:
        conv_features: `(seq_len, C)` float32 CPU (``seq_len`` = the padded frame count).
        window_frames, context_frames: the encoder windows (see the module docstring).
    """

    conv_features: torch.Tensor
    window_frames: int = DEFAULT_WINDOW_FRAMES
    context_frames: int = DEFAULT_CONTEXT_FRAMES
    _cache: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def num_frames(self) -> int:
        return int(self.conv_features.shape[0])

    def _window(self, audio_encoder: Any, index: int) -> torch.Tensor:
        """Hidden states of window `index`'s own frames, `(frames, layers, D)` on the encoder's device."""
        if index not in self._cache:
            start = index * self.window_frames
            stop = min(start + self.window_frames, self.num_frames)
            low, high = max(0, start - self.context_frames), min(self.num_frames, stop + self.context_frames)
            states = encode_hidden_states(audio_encoder, self.conv_features[low:high])
            while len(self._cache) >= 2:  # a chunk spans at most two windows; keep memory flat
                self._cache.pop(min(self._cache))
            self._cache[index] = states[start - low : stop - low]
        return self._cache[index]

    def frames(self, audio_encoder: Any, start: int, stop: int) -> torch.Tensor:
        """Video frames `[start, stop)`'s audio windows.

        Returns:
            `torch.Tensor` of shape `(1, stop - start, 5, layers, D)`.
        """
        if not 0 <= start < stop <= self.num_frames:
            raise ValueError(f"frames [{start}, {stop}) outside [0, {self.num_frames})")
        low = max(0, start - AUDIO_WINDOW_RADIUS)
        high = min(self.num_frames, stop + AUDIO_WINDOW_RADIUS)
        first, last = low // self.window_frames, (high - 1) // self.window_frames
        states = torch.cat([self._window(audio_encoder, w) for w in range(first, last + 1)])
        offset = first * self.window_frames
        frame = torch.arange(start, stop)[:, None] + torch.arange(
            -AUDIO_WINDOW_RADIUS, AUDIO_WINDOW_RADIUS + 1
        )
        index = frame.clamp(0, self.num_frames - 1) - offset
        return states[index][None]


def prepare_audio_features(
    audio_encoder: Any,
    audio: npt.NDArray[np.float32],
    *,
    sample_rate: int,
    fps: float,
    clip_frames: int,
    do_normalize: bool = True,
    window_frames: int = DEFAULT_WINDOW_FRAMES,
    context_frames: int = DEFAULT_CONTEXT_FRAMES,
) -> tuple[HalloAudioFeatures, int]:
    """Steps 1-2 for one job; returns the features and the unpadded frame count (the video's frames)."""
    samples = np.asarray(audio, dtype=np.float32)
    audio_frames = max(1, frame_count(len(samples), sample_rate, fps))
    # `padded_samples(normalise(audio))` with one buffer: long audio is copied once, not three times.
    pad, seq_len = _padding(len(samples), sample_rate, fps, clip_frames)
    buffer = np.zeros(len(samples) + pad, dtype=np.float32)
    body = buffer[: len(samples)]
    if do_normalize:
        np.subtract(samples, samples.mean(), out=body)
        np.divide(body, np.sqrt(samples.var() + 1e-7), out=body)
    else:
        body[:] = samples
    seq_len = max(seq_len, clip_frames)
    conv = encode_conv_features(audio_encoder, buffer)
    del buffer, body
    return HalloAudioFeatures(stretch(conv, seq_len), window_frames, context_frames), audio_frames


@torch.no_grad()
def whole_clip_features(
    audio_encoder: Any,
    audio: npt.NDArray[np.float32],
    *,
    sample_rate: int,
    fps: float,
    clip_frames: int,
    do_normalize: bool = True,
) -> torch.Tensor:
    """The reference's computation in one call (for comparisons): `(seq_len, 5, layers, D)`."""
    normalised = normalise(audio, do_normalize)
    samples, seq_len = padded_samples(normalised, sample_rate, fps, clip_frames)
    param = next(audio_encoder.parameters())
    conv = audio_encoder.feature_extractor(torch.from_numpy(samples)[None].to(param.device, param.dtype))
    states = encode_hidden_states(audio_encoder, stretch(conv[0].T.float(), seq_len))
    frame = torch.arange(seq_len)[:, None] + torch.arange(-AUDIO_WINDOW_RADIUS, AUDIO_WINDOW_RADIUS + 1)
    return states[frame.clamp(0, seq_len - 1)]
