"""Hallo's wav2vec2 features: the reference's whole-clip computation against our windowed one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch

from models.hallo.audio import (
    encode_conv_features,
    encode_hidden_states,
    frame_count,
    normalise,
    padded_samples,
    prepare_audio_features,
    whole_clip_features,
)
from models.hallo.testing import tiny_audio_encoder


@pytest.fixture(scope="module")
def encoder() -> Iterator[Any]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tiny_audio_encoder(0)
    torch.set_num_threads(threads)


def _speech(seconds: float, seed: int = 0) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(16000 * seconds)) * 0.1 + 0.02).astype(np.float32)


def _windowed(
    encoder: Any, audio: npt.NDArray[np.float32], window: int, context: int, clip: int = 16
) -> torch.Tensor:
    features, _ = prepare_audio_features(
        encoder,
        audio,
        sample_rate=16000,
        fps=25,
        clip_frames=clip,
        window_frames=window,
        context_frames=context,
    )
    return torch.cat([features.frames(encoder, s, s + clip)[0] for s in range(0, features.num_frames, clip)])


def test_frame_counts_and_padding_are_the_reference_s() -> None:
    assert frame_count(16000, 16000, 25) == 25 and frame_count(16001, 16000, 25) == 26
    samples, seq_len = padded_samples(np.ones(16000, np.float32), 16000, 25, 16)
    assert seq_len == 32 and len(samples) == 16000 + 7 * 640 and not samples[16000:].any()
    assert padded_samples(np.ones(32 * 640, np.float32), 16000, 25, 16)[1] == 32
    assert len(padded_samples(np.ones(10, np.float32), 16000, 25, 1)[0]) == 400  # one wav2vec2 frame
    normed = normalise(_speech(1.0))
    assert abs(float(normed.mean())) < 1e-5 and abs(float(normed.std()) - 1) < 1e-3


def test_conv_features_in_windows_equal_the_whole_clip(encoder: Any) -> None:
    samples, _ = padded_samples(normalise(_speech(7.3)), 16000, 25, 16)
    with torch.no_grad():
        whole = encoder.feature_extractor(torch.from_numpy(samples)[None])[0].T
        windowed = encode_conv_features(encoder, samples, chunk_frames=37)  # GroupNorm stats over all windows
    assert windowed.shape == whole.shape
    assert float((windowed - whole).abs().max() / whole.abs().max()) < 1e-5


def test_a_clip_within_one_window_equals_the_reference(encoder: Any) -> None:
    audio = _speech(3.3)
    reference = whole_clip_features(encoder, audio, sample_rate=16000, fps=25, clip_frames=16)
    ours = _windowed(encoder, audio, window=250, context=50)
    assert ours.shape == reference.shape == (96, 5, 2, 16)
    assert float((ours - reference).abs().max() / reference.abs().max()) < 1e-5
    # the 5-frame windows clamp at both ends
    assert torch.equal(ours[0, 0], ours[0, 2]) and torch.equal(ours[-1, 4], ours[-1, 2])


def test_long_audio_in_windows_stays_close_to_the_whole_clip(encoder: Any) -> None:
    audio = _speech(24.0, seed=1)
    reference = whole_clip_features(encoder, audio, sample_rate=16000, fps=25, clip_frames=16)
    ours = _windowed(encoder, audio, window=100, context=25)
    assert ours.shape == reference.shape
    error = (ours - reference).abs().amax(dim=(1, 2, 3)) / reference.abs().max()
    assert float(error.max()) < 5e-3  # measured 7.5e-4 on random weights (docs/hallo.md)
    assert float(error.mean()) < 1e-3


def test_frames_refuse_a_range_outside_the_clip_and_keep_two_windows(encoder: Any) -> None:
    features, audio_frames = prepare_audio_features(
        encoder, _speech(2.0), sample_rate=16000, fps=25, clip_frames=4, window_frames=8, context_frames=2
    )
    assert (audio_frames, features.num_frames) == (50, 52)
    with pytest.raises(ValueError, match="outside"):
        features.frames(encoder, 48, 56)
    for start in range(0, 52, 4):
        assert features.frames(encoder, start, start + 4).shape == (1, 4, 5, 2, 16)
        assert len(features._cache) <= 2


def test_the_one_buffer_preparation_equals_normalise_then_pad(encoder: Any) -> None:
    audio = _speech(2.3, seed=4)
    features, _ = prepare_audio_features(encoder, audio, sample_rate=16000, fps=25, clip_frames=16)
    samples, seq_len = padded_samples(normalise(audio), 16000, 25, 16)
    with torch.no_grad():
        conv = encoder.feature_extractor(torch.from_numpy(samples)[None])[0].T
        expected = torch.nn.functional.interpolate(
            conv.T[None], size=seq_len, mode="linear", align_corners=True
        )[0].T
    assert features.conv_features.shape == expected.shape
    assert float((features.conv_features - expected).abs().max() / expected.abs().max()) < 1e-5


def test_the_layer_by_layer_encoder_equals_transformers_hidden_states(encoder: Any) -> None:
    samples = normalise(_speech(1.7, seed=2))
    with torch.no_grad():
        output = encoder(torch.from_numpy(samples)[None], output_hidden_states=True)
        conv = encoder.feature_extractor(torch.from_numpy(samples)[None])[0].T
        ours = encode_hidden_states(encoder, conv)
    expected = torch.stack(output.hidden_states[1:], dim=1)[0].transpose(
        0, 1
    )  # the reference: "b s d -> s b d"
    assert ours.shape == expected.shape == (conv.shape[0], 2, 16)
    assert float((ours - expected).abs().max()) < 1e-5
