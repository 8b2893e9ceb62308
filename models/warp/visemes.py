"""Mouth shapes from the sound, without weights: per-frame acoustic cues -> jaw, wide, round, tuck.

Loudness alone opens and closes the mouth; the shape comes from what the sound says about the vocal
tract, measured per video frame on the same analysis windows as ``models.audio.frame_features``:

- **formants** F1 and F2 from linear prediction (order ``2 + rate / 1000``, pre-emphasis 0.97, roots of
  the predictor with bandwidth below 500 Hz). F1 rises with the jaw opening ("ah"); F2 is low for
  rounded vowels ("oo", "oh", "w": the lips narrow and round) and high for spread ones ("ee", "eh":
  the lips widen);
- **voicing**, the normalised autocorrelation peak at 70-400 Hz lags; formants count only when voiced;
- **nasal murmur** (voiced, almost all power below 500 Hz, little at 1-3 kHz, and at least 4 dB
  quieter than the loudest frame within 150 ms, unlike "oo" and "ee": "m", also "n"): the lips close, as for the silent closure of "p" and "b", which the loudness already shows;
- **frication** (share of power above 3 kHz), told apart by the spectrum's shape: a sibilant ("s",
  "sh") has a concentrated peak, a labiodental ("f", "v") is weak and flat above 1 kHz, and tucks the
  lower lip under the upper teeth.

The cues become four targets per frame (``VISEMES``), which are then smoothed for coarticulation:
each is averaged with a Gaussian window centred a little ahead in time (the lips round for "oo"
before it sounds), wider for the slow lip shapes than for the jaw. ``models.warp.motion`` then follows
the targets causally.
"""

from __future__ import annotations

import numpy as np

from models.audio import AudioFeatures, frame_windows, normalize_loudness

VISEMES = ("jaw", "wide", "round", "tuck")
"""Mouth targets, each 0..1: jaw opening, lip spreading, lip rounding, lower lip tucked (f/v)."""
SMOOTHING_S = {"jaw": 0.012, "wide": 0.035, "round": 0.04, "tuck": 0.02}
"""Coarticulation: standard deviation (seconds) of the Gaussian each target is averaged with."""
LEAD_S = {"jaw": 0.0, "wide": 0.02, "round": 0.03, "tuck": 0.01}
"""How far ahead (seconds) that window is centred: lips anticipate the coming sound."""
PRE_EMPHASIS = 0.97
MAX_BANDWIDTH_HZ = 500.0


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _windows(samples: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    index = starts[:, None] + np.arange(length)[None, :]
    valid = (index >= 0) & (index < len(samples))
    if not len(samples):
        return np.zeros(index.shape, np.float64)
    return np.where(valid, samples[np.clip(index, 0, len(samples) - 1)], 0.0).astype(np.float64)


def _levinson(autocorrelation: np.ndarray, order: int) -> np.ndarray:
    """Predictor coefficients ``(F, order + 1)`` (a[0] = 1) of each row's autocorrelation."""
    frames = autocorrelation.shape[0]
    a = np.zeros((frames, order + 1))
    a[:, 0] = 1.0
    error = autocorrelation[:, 0] * (1 + 1e-9) + 1e-12
    for i in range(1, order + 1):
        acc = np.einsum("fj,fj->f", a[:, :i], autocorrelation[:, i:0:-1])
        k = -acc / error
        a[:, 1 : i + 1] = a[:, 1 : i + 1] + k[:, None] * a[:, i - 1 :: -1][:, :i]
        error = error * (1 - k * k)
        error = np.maximum(error, 1e-12)
    return a


def formants(windows: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """F1, F2 in Hz per row of ``windows`` (float ``(F, L)``); NaN where none is found."""
    order = int(min(2 + sample_rate // 1000, 24))
    emphasised = np.concatenate([windows[:, :1], windows[:, 1:] - PRE_EMPHASIS * windows[:, :-1]], axis=1)
    emphasised = emphasised * np.hamming(windows.shape[1])[None, :]
    n_fft = 1 << int(np.ceil(np.log2(2 * windows.shape[1])))
    power = np.abs(np.fft.rfft(emphasised, n=n_fft, axis=1)) ** 2
    autocorrelation = np.fft.irfft(power, n=n_fft, axis=1)[:, : order + 1]
    a = _levinson(autocorrelation, order)
    # Roots of the predictor polynomial as eigenvalues of its companion matrices (all frames at once).
    companion = np.zeros((len(a), order, order))
    companion[:, 0, :] = -a[:, 1:]
    companion[:, np.arange(1, order), np.arange(order - 1)] = 1.0
    roots = np.linalg.eigvals(companion)
    frequency = np.angle(roots) * sample_rate / (2 * np.pi)
    bandwidth = -np.log(np.maximum(np.abs(roots), 1e-12)) * sample_rate / np.pi
    usable = (frequency > 150) & (frequency < sample_rate / 2 - 200) & (bandwidth < MAX_BANDWIDTH_HZ)
    candidates = np.sort(np.where(usable, frequency, np.inf), axis=1)
    f1 = np.full(len(a), np.nan)
    f2 = np.full(len(a), np.nan)
    for row, values in enumerate(candidates):
        values = values[np.isfinite(values)]
        first = values[(values >= 200) & (values <= 1100)]
        if not len(first):
            continue
        f1[row] = first[0]
        second = values[(values > first[0] + 200) & (values >= 600) & (values <= 3200)]
        if len(second):
            f2[row] = second[0]
    return f1, f2


def _band(power: np.ndarray, freqs: np.ndarray, lo: float, hi: float) -> np.ndarray:
    sel: np.ndarray = power[:, (freqs >= lo) & (freqs < hi)].sum(axis=1)
    return sel


def _coarticulate(values: np.ndarray, fps: float, sigma_s: float, lead_s: float) -> np.ndarray:
    """Average with a Gaussian of ``sigma_s`` centred ``lead_s`` ahead (edges replicated)."""
    sigma, lead = sigma_s * fps, lead_s * fps
    if sigma < 0.3 and abs(lead) < 0.5:
        return values
    radius = int(np.ceil(3 * sigma + abs(lead))) + 1
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * ((offsets - lead) / max(sigma, 1e-3)) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(values, radius, mode="edge")
    # out[t] = sum_k kernel[k] * values[t + offsets[k]]
    result: np.ndarray = np.correlate(padded, kernel, mode="valid")
    return result


def viseme_targets(audio: np.ndarray, sample_rate: int, fps: float, features: AudioFeatures) -> np.ndarray:
    """``(F, 4)`` jaw / wide / round / tuck targets (0..1) for the frames of ``features``.

    Args:
        audio: float32 ``(num_samples,)`` mono, as given to ``frame_features``.
        sample_rate: of ``audio``.
        fps: video frame rate.
        features: ``frame_features`` of the same audio (energy, alignment).
    """
    energy = features.energy.astype(np.float64)
    num_frames = len(energy)
    samples = normalize_loudness(audio, sample_rate).astype(np.float64)
    starts, length = frame_windows(len(samples), sample_rate, fps, num_frames)
    windows = _windows(samples, starts, length)

    # Spectrum shape.
    n_fft = 1 << int(np.ceil(np.log2(length)))
    power = np.abs(np.fft.rfft(windows * np.hanning(length)[None, :], n=n_fft, axis=1)) ** 2 + 1e-12
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    total = power.sum(axis=1)
    low = _band(power, freqs, 0, 500) / total
    mid = _band(power, freqs, 1000, 3000) / total
    high = _band(power, freqs, 3000, sample_rate / 2 + 1) / total
    upper = power[:, freqs >= 1000]
    flatness = np.exp(np.log(upper).mean(axis=1)) / upper.mean(axis=1)

    # Voicing: normalised autocorrelation peak at pitch lags.
    centred = windows - windows.mean(axis=1, keepdims=True)
    spectrum = np.abs(np.fft.rfft(centred, n=2 * n_fft, axis=1)) ** 2
    autocorrelation = np.fft.irfft(spectrum, axis=1)
    lags = slice(max(1, sample_rate // 400), max(2, sample_rate // 70))
    voicing = np.clip(autocorrelation[:, lags].max(axis=1) / np.maximum(autocorrelation[:, 0], 1e-12), 0, 1)
    voiced = _smoothstep((voicing - 0.3) / 0.3)

    # Vowel shape from the formants (where voiced).
    f1, f2 = formants(windows, sample_rate)
    has = np.isfinite(f1) & np.isfinite(f2)
    f1 = np.where(has, f1, 500.0)
    f2 = np.where(has, f2, 1500.0)
    vowel = voiced * has * (1 - _smoothstep((high - 0.15) / 0.25))
    openness = _smoothstep((f1 - 300) / 450)
    spread = _smoothstep((f2 - 1500) / 800) * vowel
    rounded = _smoothstep((1350 - f2) / 500) * vowel * (1 - 0.5 * openness)

    # Consonants.
    # A murmur is also quieter than the vowels around it, which tells "m" from "oo" and "ee".
    loudness = features.loudness_db.astype(np.float64)
    reach = max(1, round(0.15 * fps))
    padded = np.pad(loudness, reach, mode="edge")
    local_peak = np.max(np.stack([padded[i : i + num_frames] for i in range(2 * reach + 1)]), axis=0)
    quieter = _smoothstep((local_peak - loudness - 4) / 6)
    nasal = voiced * quieter * _smoothstep((low - 0.8) / 0.15) * _smoothstep((0.03 - mid) / 0.03)
    fricative = _smoothstep((high - 0.25) / 0.3)
    sibilant = _smoothstep((0.32 - flatness) / 0.2)
    labiodental = fricative * (1 - sibilant) * _smoothstep((flatness - 0.25) / 0.25)

    speaking = _smoothstep(energy / 0.12)
    jaw = energy * (0.6 + 0.4 * np.where(vowel > 0.3, openness, 0.5)) * (1 - 0.9 * nasal)
    jaw = jaw * (1 - 0.55 * fricative)
    targets = {
        "jaw": jaw,
        "wide": speaking * np.maximum(spread, 0.6 * sibilant * fricative),
        "round": speaking * rounded,
        "tuck": _smoothstep(energy / 0.05) * labiodental,
    }
    silent = energy <= 0
    columns = []
    for name in VISEMES:
        values = np.where(silent, 0.0, targets[name])
        columns.append(_coarticulate(values, fps, SMOOTHING_S[name], LEAD_S[name]))
    return np.clip(np.stack(columns, axis=1), 0.0, 1.0)
