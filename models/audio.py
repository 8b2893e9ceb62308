"""Audio front-end: decoding, loudness normalisation and per-frame speech features.

Engines receive ``RenderInputs.audio`` already decoded (float32 mono, 16 kHz; the runner keeps the
original file for the final MP4). ``load_audio`` does the same decoding with PyAV for tests, tools
and benchmarks.

Features are aligned to video frame times at any fps: frame ``i`` is shown during
``[i / fps, (i + 1) / fps)`` and its features come from a Hann window centred on ``(i + 0.5) / fps``
that is at least ``MIN_WINDOW_S`` long and at least one frame long.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.engine import FEATURE_SAMPLE_RATE

TARGET_SPEECH_DBFS = -20.0
"""Loudness of the active (speech) part after ``normalize_loudness``."""
MAX_GAIN_DB = 40.0
"""Quieter recordings are amplified at most this much (no amplifying a noise floor to speech level)."""
SILENCE_DBFS = -60.0
"""A recording whose active part is below this is treated as silence and left as it is."""
MIN_WINDOW_S = 0.04
ENERGY_FLOOR_DB = -45.0
ENERGY_CEIL_DB = -14.0
"""Frame loudness (dBFS, after normalisation) mapped linearly onto energy 0..1."""


def load_audio(source: str | Path | bytes, sample_rate: int = FEATURE_SAMPLE_RATE) -> np.ndarray:
    """Decode any format PyAV reads into float32 mono samples in [-1, 1] at ``sample_rate``.

    Returns:
        float32 ``(num_samples,)``.
    """
    import av

    handle = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    pieces: list[np.ndarray] = []
    with av.open(handle, mode="r") as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                pieces.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            pieces.append(out.to_ndarray().reshape(-1))
    if not pieces:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(pieces).astype(np.float32)


def _db(power: np.ndarray) -> np.ndarray:
    return 10.0 * np.log10(np.maximum(power, 1e-12))


def normalize_loudness(audio: np.ndarray, sample_rate: int = FEATURE_SAMPLE_RATE) -> np.ndarray:
    """Scale speech so that its active part is at ``TARGET_SPEECH_DBFS``.

    Activity is gated like EBU R128 (blocks more than 30 dB below the loudest block are ignored), so
    pauses do not count. Peaks beyond full scale are clipped: the result feeds features, not ears.

    Returns:
        float32 ``(num_samples,)``.
    """
    audio = np.asarray(audio, dtype=np.float32)
    block = max(1, int(0.02 * sample_rate))
    count = len(audio) // block
    if count == 0:
        return audio.copy()
    power = np.mean(audio[: count * block].astype(np.float64).reshape(count, block) ** 2, axis=1)
    loudest = _db(power).max()
    active = power[_db(power) > loudest - 30.0]
    level = float(_db(np.array(active.mean())))
    if level < SILENCE_DBFS:
        return audio.copy()
    gain_db = min(TARGET_SPEECH_DBFS - level, MAX_GAIN_DB)
    return np.clip(audio * np.float32(10 ** (gain_db / 20)), -1.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class AudioFeatures:
    """Per-frame speech features, all float32 ``(num_frames,)``.

    Attributes:
        loudness_db: frame loudness in dBFS after normalisation.
        energy: ``loudness_db`` mapped onto 0 (silence) .. 1 (loud speech).
        low_formant: spectral centroid of 200-1000 Hz (the first formant region; open vowels are
            high) scaled to 0..1.
        high_formant: spectral centroid of 800-3000 Hz (second formant; "ee" is high, "oo" low)
            scaled to 0..1.
        fricative: share of the power above 4 kHz ("s", "f", "sh": teeth together).
    """

    loudness_db: np.ndarray
    energy: np.ndarray
    low_formant: np.ndarray
    high_formant: np.ndarray
    fricative: np.ndarray

    @property
    def num_frames(self) -> int:
        return len(self.energy)


def frame_windows(num_samples: int, sample_rate: int, fps: float, num_frames: int) -> tuple[np.ndarray, int]:
    """Start sample of each frame's analysis window, and the window length (see module docstring)."""
    length = round(max(MIN_WINDOW_S, 1.0 / fps) * sample_rate)
    centres = np.round((np.arange(num_frames) + 0.5) / fps * sample_rate).astype(np.int64)
    return centres - length // 2, length


def frame_features(
    audio: np.ndarray, fps: float, num_frames: int, sample_rate: int = FEATURE_SAMPLE_RATE
) -> AudioFeatures:
    """Features of ``num_frames`` video frames at ``fps`` from loudness-normalised ``audio``.

    Args:
        audio: float32 ``(num_samples,)`` mono; normalised here with ``normalize_loudness``.
        fps: video frame rate.
        num_frames: number of frames (usually ``num_frames_for(duration, fps)``).
        sample_rate: of ``audio``.
    """
    samples = normalize_loudness(audio, sample_rate)
    starts, length = frame_windows(len(samples), sample_rate, fps, num_frames)
    index = starts[:, None] + np.arange(length)[None, :]
    valid = (index >= 0) & (index < len(samples))
    windows = np.where(
        valid, samples[np.clip(index, 0, max(0, len(samples) - 1))] if len(samples) else 0.0, 0.0
    )
    windows = windows.astype(np.float32) * np.hanning(length).astype(np.float32)

    n_fft = 1 << int(np.ceil(np.log2(length)))
    spectrum = np.abs(np.fft.rfft(windows, n=n_fft, axis=1)) ** 2
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    window_power = float(np.sum(np.hanning(length) ** 2))
    loudness_db = _db(np.sum(windows.astype(np.float64) ** 2, axis=1) / window_power)
    energy = np.clip((loudness_db - ENERGY_FLOOR_DB) / (ENERGY_CEIL_DB - ENERGY_FLOOR_DB), 0.0, 1.0)

    def centroid(lo: float, hi: float) -> np.ndarray:
        band = (freqs >= lo) & (freqs < hi)
        power = spectrum[:, band]
        return (power @ freqs[band]) / np.maximum(power.sum(axis=1), 1e-12)

    low_formant = np.clip((centroid(200, 1000) - 350) / 450, 0.0, 1.0)
    high_formant = np.clip((centroid(800, 3000) - 1200) / 1200, 0.0, 1.0)
    fricative = spectrum[:, freqs >= 4000].sum(axis=1) / np.maximum(spectrum.sum(axis=1), 1e-12)
    silent = energy <= 0
    low_formant[silent] = 0.0
    high_formant[silent] = 0.0
    fricative[silent] = 0.0
    return AudioFeatures(
        loudness_db=loudness_db.astype(np.float32),
        energy=energy.astype(np.float32),
        low_formant=low_formant.astype(np.float32),
        high_formant=high_formant.astype(np.float32),
        fricative=fricative.astype(np.float32),
    )
