"""Audio front-end on real recordings: decoding, loudness normalisation, frame-aligned features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.audio import (
    MAX_GAIN_DB,
    TARGET_SPEECH_DBFS,
    frame_features,
    load_audio,
    normalize_loudness,
)
from models.engine import num_frames_for

ASSETS = Path(__file__).resolve().parents[1] / "assets"
RATE = 16_000


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_audio(ASSETS / "speech.wav")


def _active_dbfs(audio: np.ndarray) -> float:
    blocks = audio[: len(audio) // 320 * 320].reshape(-1, 320).astype(np.float64)
    power = (blocks**2).mean(axis=1)
    loud = power[10 * np.log10(power + 1e-12) > 10 * np.log10(power.max()) - 30]
    return float(10 * np.log10(loud.mean()))


def test_load_wav_and_flac(speech: np.ndarray) -> None:
    assert speech.dtype == np.float32 and speech.ndim == 1
    assert len(speech) / RATE == pytest.approx(8.263, abs=0.01)  # sox: 132208 samples at 16 kHz
    assert 0.5 < np.abs(speech).max() <= 1.0
    heldout = load_audio((ASSETS / "speech_heldout.flac").read_bytes())  # 22.05 kHz FLAC, from bytes
    assert len(heldout) / RATE == pytest.approx(102729 / 22050, abs=0.01)
    assert np.abs(heldout).max() < 0.3  # a quiet recording


def test_normalisation_reaches_the_target_and_spares_silence(speech: np.ndarray) -> None:
    for gain in (0.03, 1.0):
        normalised = normalize_loudness(speech * np.float32(gain))
        assert _active_dbfs(normalised) == pytest.approx(TARGET_SPEECH_DBFS, abs=0.5)
    silence = np.zeros(RATE, np.float32)
    assert np.array_equal(normalize_loudness(silence), silence)
    hiss = np.random.default_rng(0).normal(0, 10 ** (-75 / 20), RATE).astype(np.float32)
    assert np.array_equal(normalize_loudness(hiss), hiss)  # below the silence floor: untouched
    faint = np.random.default_rng(1).normal(0, 10 ** (-68 / 20) * 1.4, RATE).astype(np.float32)
    assert _active_dbfs(normalize_loudness(faint)) <= _active_dbfs(faint) + MAX_GAIN_DB + 0.1


def test_quiet_and_loud_recordings_give_the_same_features(speech: np.ndarray) -> None:
    count = num_frames_for(len(speech) / RATE, 25)
    loud = frame_features(speech, 25, count)
    quiet = frame_features(speech * np.float32(0.02), 25, count)
    assert loud.num_frames == count
    assert np.abs(loud.energy - quiet.energy).max() < 1e-3
    assert np.abs(loud.high_formant - quiet.high_formant).max() < 1e-3
    # The sentence has a pause of 0.8 s between the two parts: energy drops to 0 there.
    assert (loud.energy == 0).sum() >= 10 and loud.energy.max() > 0.8


@pytest.mark.parametrize("fps", [24.0, 25.0, 30000 / 1001, 60.0, 12.5])
def test_features_align_with_frame_times(fps: float) -> None:
    audio = np.zeros(3 * RATE, np.float32)
    start, stop = 1.30, 1.62
    t = np.arange(int(start * RATE), int(stop * RATE)) / RATE
    audio[int(start * RATE) : int(stop * RATE)] = 0.5 * np.sin(2 * np.pi * 440 * t)
    count = num_frames_for(3.0, fps)
    energy = frame_features(audio, fps, count).energy
    assert len(energy) == count
    window = max(0.04, 1 / fps)
    for i in range(count):
        centre = (i + 0.5) / fps
        if start + window / 2 <= centre <= stop - window / 2:
            assert energy[i] > 0.5, (i, centre)
        elif centre + window / 2 < start or centre - window / 2 > stop:
            assert energy[i] == 0, (i, centre)


def test_spectrum_shapes_the_features() -> None:
    t = np.arange(RATE) / RATE
    ee = 0.3 * np.sin(2 * np.pi * 280 * t) + 0.3 * np.sin(2 * np.pi * 2300 * t)
    oo = 0.3 * np.sin(2 * np.pi * 300 * t) + 0.3 * np.sin(2 * np.pi * 850 * t)
    ah = 0.3 * np.sin(2 * np.pi * 750 * t) + 0.3 * np.sin(2 * np.pi * 1200 * t)
    hiss = np.random.default_rng(0).normal(0, 0.1, RATE)
    s = hiss - np.concatenate([[0], hiss[:-1]])  # differenced noise: mostly high frequencies
    features = {
        name: frame_features(signal.astype(np.float32), 25, 25)
        for name, signal in {"ee": ee, "oo": oo, "ah": ah, "s": s}.items()
    }
    mean = {
        name: {k: float(getattr(f, k)[5:20].mean()) for k in ("low_formant", "high_formant", "fricative")}
        for name, f in features.items()
    }
    assert mean["ee"]["high_formant"] > mean["oo"]["high_formant"] + 0.3
    assert mean["ah"]["low_formant"] > mean["ee"]["low_formant"] + 0.3
    assert mean["s"]["fricative"] > 0.3 > mean["ah"]["fricative"]
