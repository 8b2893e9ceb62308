"""Synthetic speech with known phoneme classes, for the viseme figures (no recordings, no weights).

Vowels are a 140 Hz pulse train through three formant resonators (Peterson & Barney's adult
averages); "m" is a weak, low murmur; "f" is weak noise flat from 1 to 8 kHz; "s" is stronger noise
at 4.5-8 kHz. Each phone fades in and out over 10 ms.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

SAMPLE_RATE = 16000
VOWELS = {
    "oo": (300, 870, 2240),
    "ee": (270, 2290, 3010),
    "ah": (730, 1090, 2440),
    "oh": (570, 840, 2410),
    "eh": (530, 1840, 2480),
}
PHONES = (*VOWELS, "m", "f", "s", "_")


def _resonator(x: np.ndarray, frequency: float, bandwidth: float) -> np.ndarray:
    r = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
    theta = 2 * np.pi * frequency / SAMPLE_RATE
    result: np.ndarray = lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], x)
    return result


def _voiced(duration: float, formants: tuple[int, ...], bandwidths: tuple[int, ...]) -> np.ndarray:
    n = int(duration * SAMPLE_RATE)
    source = np.zeros(n)
    source[np.arange(0, n, SAMPLE_RATE / 140).astype(int)] = 1.0
    y: np.ndarray = lfilter([1], [1, -0.97], source)
    for frequency, bandwidth in zip(formants, bandwidths, strict=True):
        y = _resonator(y, frequency, bandwidth)
    return y


def _noise(duration: float, lo: float, hi: float, rng: np.random.Generator) -> np.ndarray:
    n = int(duration * SAMPLE_RATE)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    spectrum[(freqs < lo) | (freqs > hi)] = 0
    noise: np.ndarray = np.fft.irfft(spectrum, n)
    return noise


def _level(x: np.ndarray, db: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x**2) + 1e-12) * 10 ** (db / 20)


def phones(
    sequence: list[tuple[str, float]], seed: int = 0
) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """float32 audio at 16 kHz of ``(phone, seconds)`` pairs, and each phone's (start, end, phone)."""
    rng = np.random.default_rng(seed)
    pieces, spans, position = [], [], 0
    for phone, duration in sequence:
        if phone in VOWELS:
            x = _level(_voiced(duration, VOWELS[phone], (80, 100, 140)), -20)
        elif phone == "m":
            x = _level(_resonator(_voiced(duration, (250, 1100, 2300), (60, 300, 400)), 250, 60), -30)
        elif phone == "f":
            x = _level(_noise(duration, 1000, 7900, rng), -38)
        elif phone == "s":
            x = _level(_noise(duration, 4500, 7900, rng), -26)
        elif phone == "_":
            x = np.zeros(int(duration * SAMPLE_RATE))
        else:
            raise ValueError(f"unknown phone {phone!r}; one of {PHONES}")
        ramp = np.minimum(1.0, np.minimum(np.arange(len(x)), np.arange(len(x))[::-1]) / (0.01 * SAMPLE_RATE))
        pieces.append(x * ramp)
        spans.append((position / SAMPLE_RATE, (position + len(x)) / SAMPLE_RATE, phone))
        position += len(x)
    return np.concatenate(pieces).astype(np.float32), spans
