"""Measured quality of the warp engine: landmarks re-detected on the rendered frames, and pixels.

Bounds (documented in docs/warp.md, with the figures measured before and after each change):
- lip gap vs audio energy envelope, Pearson >= 0.8 (real speech, a held-out portrait and voice, and
  an unseen portrait with a closed mouth and glasses);
- silence: the re-detected lip gap never exceeds the portrait's own by more than 0.03 of mouth width;
- at least one blink (eyelid ratio below 80 % of its median) in 10 s of video;
- crop framing: SSIM >= 0.95 between every frame and the portrait crop outside the face region
  (the mesh box grown by 25 % per side);
- landmark jitter: the 95th percentile of the frame-to-frame motion of the rigid landmarks
  (eye corners, nose, face contour) stays below 2.5 % of the inter-ocular distance;
- mouth interior: in the most open frames the opening shows teeth-like structure (luma spread
  p90 - p10 >= 60 and >= 15 % bright pixels), not a flat fill; the lower lip keeps >= 75 % of its
  re-detected thickness;
- eyelids: at full blink the re-detected eye opening is <= 55 % of its median, also behind glasses;
- background: beside the head (1/24 to 1/8 of the crop side outside the person) it stays the photo
  at ``head_motion = 1``: mean change <= 0.05 grey levels, <= 0.2 % of pixels change by > 2; no chunk-boundary pulse after encoding (still pixels differ across a boundary
  no more than within a chunk);
- visemes on synthetic vowels and consonants: "ee" at least 1.3 times as wide as "oo"; "m" closes
  the lips (gap within 0.03 of the resting one); "f" tucks the lower lip.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.synthetic_speech import SAMPLE_RATE, phones
from bench.warp_quality import (
    FPS,
    Rendered,
    background_change,
    boundary_and_inner_differences,
    closed_eye_ratio,
    interior_structure,
    lip_energy_pearson,
    lip_thickness_ratio,
)
from bench.warp_quality import render as render_clip
from bench.warp_quality import render_and_measure as measure_clip
from models.audio import frame_features
from models.face import MediaPipeFaceAnalyzer
from models.warp.engine import WarpEngine, WarpPrepared
from models.warp.matte import MediaPipeSegmenter
from models.warp.visemes import VISEMES, viseme_targets
from tests.models.warp.conftest import load_image

SIZE = 256
MIN_PEARSON = 0.8
SILENT_MOUTH_TOLERANCE = 0.03
BLINK_RATIO = 0.8
MIN_SSIM_OUTSIDE_FACE = 0.95
MAX_JITTER = 0.025
RIGID_LANDMARKS = [33, 133, 362, 263, 1, 4, 6, 168, 234, 454, 10, 127, 356]
MIN_INTERIOR_SPREAD, MIN_BRIGHT_SHARE = 60.0, 0.15
MIN_LIP_THICKNESS = 0.75
MAX_CLOSED_EYE_RATIO = 0.55
MAX_BACKGROUND_CHANGE, MAX_BACKGROUND_CHANGED = 0.05, 0.002
"""Background beside the head: mean abs change (grey levels), share of pixels changed by > 2."""
MIN_EE_OVER_OO = 1.3
MAX_BOUNDARY_EXCESS = 0.05
"""Grey levels by which still pixels may change more across a chunk boundary than within a chunk."""

SEGMENTER = MediaPipeSegmenter()


def render(
    analyzer: MediaPipeFaceAnalyzer, image: np.ndarray, audio: np.ndarray, **params: object
) -> tuple[WarpEngine, WarpPrepared, np.ndarray, np.ndarray]:
    return render_clip(analyzer, SEGMENTER, image, audio, SIZE, **params)


def render_and_measure(
    analyzer: MediaPipeFaceAnalyzer, image: np.ndarray, audio: np.ndarray, **params: object
) -> Rendered:
    return measure_clip(analyzer, SEGMENTER, image, audio, SIZE, **params)


@pytest.fixture(scope="module")
def speaking(analyzer: MediaPipeFaceAnalyzer, portrait: np.ndarray, speech: np.ndarray) -> Rendered:
    return render_and_measure(analyzer, portrait, speech)


@pytest.fixture(scope="module")
def heldout(
    analyzer: MediaPipeFaceAnalyzer, heldout_portrait: np.ndarray, heldout_speech: np.ndarray
) -> Rendered:
    return render_and_measure(analyzer, heldout_portrait, heldout_speech, seed=11)


@pytest.fixture(scope="session")
def hopper_portrait() -> np.ndarray:
    """An unseen portrait: closed mouth, glasses, a flag beside the head (matplotlib's sample photo)."""
    cbook = pytest.importorskip("matplotlib.cbook")
    path = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    return load_image(str(path.resolve()))


@pytest.fixture(scope="module")
def hopper(
    analyzer: MediaPipeFaceAnalyzer, hopper_portrait: np.ndarray, heldout_speech: np.ndarray
) -> Rendered:
    return render_and_measure(analyzer, hopper_portrait, heldout_speech, seed=11)


@pytest.fixture(scope="module")
def silent(analyzer: MediaPipeFaceAnalyzer, portrait: np.ndarray) -> Rendered:
    return render_and_measure(analyzer, portrait, np.zeros(10 * 16000, np.float32))


@pytest.mark.parametrize("case", ["speaking", "heldout", pytest.param("hopper", marks=pytest.mark.slow)])
def test_lip_gap_follows_speech_energy(case: str, request: pytest.FixtureRequest) -> None:
    rendered: Rendered = request.getfixturevalue(case)
    pearson = lip_energy_pearson(rendered)
    assert pearson >= MIN_PEARSON, pearson
    # And the mouth really opens: the widest gap is well beyond the resting one.
    assert rendered.mouth_open.max() > rendered.mouth_open.min() + 0.15


def test_mouth_rests_in_silence(silent: Rendered, analyzer: MediaPipeFaceAnalyzer) -> None:
    resting = analyzer.detect(silent.prepared.crop)[0].mouth_open
    assert silent.mouth_open.max() <= resting + SILENT_MOUTH_TOLERANCE


def count_blinks(eyes_open: np.ndarray) -> int:
    closed = eyes_open < BLINK_RATIO * np.median(eyes_open)
    return int(np.sum(closed[1:] & ~closed[:-1]) + closed[0])


def test_blinks(silent: Rendered, speaking: Rendered) -> None:
    assert len(silent.frames) == 250
    blinks = count_blinks(silent.eyes_open)
    assert 1 <= blinks <= 8, blinks  # irregular, a few times in 10 s: not a flutter
    assert count_blinks(speaking.eyes_open) >= 1


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM of two grey images (Gaussian window, sigma 1.5, the usual constants)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    blur = lambda x: cv2.GaussianBlur(x, (11, 11), 1.5)  # noqa: E731
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b, cov = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))


def test_background_stays_close_to_the_portrait(speaking: Rendered, analyzer: MediaPipeFaceAnalyzer) -> None:
    crop = speaking.prepared.crop
    x0, y0, x1, y1 = analyzer.detect(crop)[0].box
    grow_x, grow_y = 0.25 * (x1 - x0), 0.25 * (y1 - y0)
    outside = np.ones(crop.shape[:2], bool)
    outside[
        max(0, int(y0 - grow_y)) : int(y1 + grow_y) + 1, max(0, int(x0 - grow_x)) : int(x1 + grow_x) + 1
    ] = False
    assert 0.3 < outside.mean() < 0.8
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    scores = [
        float(ssim_map(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), grey)[outside].mean()) for f in speaking.frames
    ]
    assert min(scores) >= MIN_SSIM_OUTSIDE_FACE, min(scores)


@pytest.mark.parametrize("case", ["speaking", "heldout"])
def test_landmark_jitter_is_small(case: str, request: pytest.FixtureRequest) -> None:
    rendered: Rendered = request.getfixturevalue(case)
    points = np.stack([face.landmarks[RIGID_LANDMARKS, :2] for face in rendered.faces])
    interocular = float(np.median([np.linalg.norm(f.keypoints[0] - f.keypoints[1]) for f in rendered.faces]))
    step = np.linalg.norm(np.diff(points, axis=0), axis=2).mean(axis=1) / interocular
    assert float(np.percentile(step, 95)) < MAX_JITTER, float(np.percentile(step, 95))


# --- mouth interior


@pytest.mark.parametrize("case", ["heldout", pytest.param("hopper", marks=pytest.mark.slow)])
def test_open_mouth_shows_teeth(case: str, request: pytest.FixtureRequest) -> None:
    rendered: Rendered = request.getfixturevalue(case)
    spread, bright = interior_structure(rendered)
    assert spread >= MIN_INTERIOR_SPREAD and bright >= MIN_BRIGHT_SHARE, (spread, bright)


@pytest.mark.parametrize("case", ["heldout", pytest.param("hopper", marks=pytest.mark.slow)])
def test_lips_keep_their_thickness(
    case: str, request: pytest.FixtureRequest, analyzer: MediaPipeFaceAnalyzer
) -> None:
    rendered: Rendered = request.getfixturevalue(case)
    ratio = lip_thickness_ratio(rendered, analyzer)
    assert ratio >= MIN_LIP_THICKNESS, ratio


# --- eyes


@pytest.mark.parametrize("case", ["heldout", pytest.param("hopper", marks=pytest.mark.slow)])
def test_blink_closes_the_eye(case: str, request: pytest.FixtureRequest) -> None:
    rendered: Rendered = request.getfixturevalue(case)
    assert closed_eye_ratio(rendered) <= MAX_CLOSED_EYE_RATIO, closed_eye_ratio(rendered)


# --- background and chunk boundaries


@pytest.fixture(scope="module")
def swaying(
    analyzer: MediaPipeFaceAnalyzer, hopper_portrait: np.ndarray, heldout_speech: np.ndarray
) -> tuple[WarpEngine, WarpPrepared, np.ndarray]:
    """The unseen portrait with the flag beside the head, at full head motion, in 1 s chunks."""
    engine, prepared, frames, _ = render(
        analyzer, hopper_portrait, heldout_speech, chunk_seconds=1.0, head_motion=1.0, seed=5
    )
    return engine, prepared, frames


@pytest.mark.slow
def test_background_beside_the_head_stays(swaying: tuple[WarpEngine, WarpPrepared, np.ndarray]) -> None:
    _, prepared, frames = swaying
    change, changed = background_change(prepared.crop, frames, SEGMENTER.person_mask(prepared.crop))
    assert change <= MAX_BACKGROUND_CHANGE and changed <= MAX_BACKGROUND_CHANGED, (change, changed)


@pytest.mark.slow
def test_no_pulse_at_chunk_boundaries(swaying: tuple[WarpEngine, WarpPrepared, np.ndarray]) -> None:
    boundary, inner = boundary_and_inner_differences(*swaying)
    assert boundary <= inner + MAX_BOUNDARY_EXCESS, (boundary, inner)


# --- visemes


VISEME_SEQUENCE = (
    [("_", 0.3)]
    + [(phone, 0.3) for phone in ("ah", "m", "ee", "f", "oo", "s", "oh", "ee", "oo", "m", "ah")]
    + [("_", 0.3)]
)


def phone_frames(spans: list[tuple[float, float, str]], phone: str) -> np.ndarray:
    """Frames well inside the phone's spans (80 ms from each edge)."""
    times = (np.arange(int(spans[-1][1] * FPS)) + 0.5) / FPS
    inside = np.zeros(len(times), bool)
    for start, end, name in spans:
        if name == phone:
            inside |= (times > start + 0.08) & (times < end - 0.08)
    return np.where(inside)[0]


def test_viseme_targets_follow_phoneme_classes() -> None:
    audio, spans = phones(VISEME_SEQUENCE)
    num_frames = int(len(audio) / SAMPLE_RATE * FPS)
    targets = viseme_targets(audio, SAMPLE_RATE, FPS, frame_features(audio, FPS, num_frames))
    mean = {
        phone: targets[phone_frames(spans, phone)].mean(axis=0)
        for phone in ("ah", "m", "ee", "f", "oo", "s", "oh")
    }
    jaw, wide, rounded, tuck = (VISEMES.index(name) for name in ("jaw", "wide", "round", "tuck"))
    assert mean["ee"][wide] > 0.6 > mean["oo"][wide] + 0.5, mean
    assert mean["oo"][rounded] > 0.6 and mean["oh"][rounded] > 0.4 and mean["ee"][rounded] < 0.1, mean
    assert mean["ah"][jaw] > 1.4 * mean["ee"][jaw] and mean["m"][jaw] < 0.25 * mean["ah"][jaw], mean
    assert mean["f"][tuck] > 0.6 and max(mean[v][tuck] for v in ("ah", "ee", "oo", "s", "m")) < 0.1, mean
    assert targets[phone_frames(spans, "_")].max() < 0.01


@pytest.mark.slow
def test_rendered_visemes(analyzer: MediaPipeFaceAnalyzer, heldout_portrait: np.ndarray) -> None:
    audio, spans = phones(VISEME_SEQUENCE)
    _, prepared, frames, _ = render(analyzer, heldout_portrait, audio, head_motion=0.0)
    width, gap = {}, {}
    for phone in ("ee", "oo", "m"):
        faces = [analyzer.detect(frames[i])[0] for i in phone_frames(spans, phone)]
        width[phone] = float(
            np.mean(
                [
                    np.linalg.norm(f.landmarks[61, :2] - f.landmarks[291, :2])
                    / np.linalg.norm(f.keypoints[0] - f.keypoints[1])
                    for f in faces
                ]
            )
        )
        gap[phone] = float(np.mean([f.mouth_open for f in faces]))
    assert width["ee"] >= MIN_EE_OVER_OO * width["oo"], width
    resting = analyzer.detect(prepared.crop)[0].mouth_open
    assert gap["m"] <= resting + SILENT_MOUTH_TOLERANCE, (gap["m"], resting)
