"""Measured quality of the warp engine: landmarks re-detected on the rendered frames.

Bounds (documented in docs/warp.md):
- lip gap vs audio energy envelope, Pearson >= 0.6 (real speech, and a held-out portrait and voice);
- silence: the re-detected lip gap never exceeds the portrait's own by more than 0.03 of mouth width;
- at least one blink (eyelid ratio below 80 % of its median) in 10 s of video;
- crop framing: SSIM >= 0.95 between every frame and the portrait crop outside the face region
  (the mesh box grown by 25 % per side);
- landmark jitter: the 95th percentile of the frame-to-frame motion of the rigid landmarks
  (eye corners, nose, face contour) stays below 2.5 % of the inter-ocular distance.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from models.engine import RenderInputs, make_params
from models.face import Face, MediaPipeFaceAnalyzer
from models.warp.engine import WarpEngine, WarpPrepared
from models.warp.options import WarpOptions

SIZE = 256
FPS = 25.0
MIN_PEARSON = 0.6
SILENT_MOUTH_TOLERANCE = 0.03
BLINK_RATIO = 0.8
MIN_SSIM_OUTSIDE_FACE = 0.95
MAX_JITTER = 0.025
RIGID_LANDMARKS = [33, 133, 362, 263, 1, 4, 6, 168, 234, 454, 10, 127, 356]


@dataclass
class Rendered:
    prepared: WarpPrepared
    frames: np.ndarray
    faces: list[Face]
    audio: np.ndarray

    @property
    def mouth_open(self) -> np.ndarray:
        return np.array([face.mouth_open for face in self.faces])

    @property
    def eyes_open(self) -> np.ndarray:
        return np.array([face.eyes_open for face in self.faces])


def render_and_measure(
    analyzer: MediaPipeFaceAnalyzer, image: np.ndarray, audio: np.ndarray, **params: object
) -> Rendered:
    engine = WarpEngine(analyzer=analyzer)
    prepared = engine.prepare(
        RenderInputs(image=image, audio=audio), make_params(WarpOptions, fps=FPS, size=SIZE, **params)
    )
    chunks, carry = [], None
    for chunk in engine.plan(prepared):
        frames, carry = engine.render_chunk(prepared, chunk, carry)
        chunks.append(frames)
    video = np.concatenate(chunks)
    faces = []
    for frame in video:
        found = analyzer.detect(frame)
        assert found, "the face must stay detectable in every frame"
        faces.append(found[0])
    return Rendered(prepared, video, faces, audio)


def energy_envelope(audio: np.ndarray, num_frames: int) -> np.ndarray:
    """RMS of the samples shown during each frame (no smoothing, no normalisation)."""
    per_frame = 16000 / FPS
    return np.array(
        [
            np.sqrt(np.mean(audio[int(i * per_frame) : int((i + 1) * per_frame)] ** 2))
            for i in range(num_frames)
        ]
    )


@pytest.fixture(scope="module")
def speaking(analyzer: MediaPipeFaceAnalyzer, portrait: np.ndarray, speech: np.ndarray) -> Rendered:
    return render_and_measure(analyzer, portrait, speech)


@pytest.fixture(scope="module")
def heldout(
    analyzer: MediaPipeFaceAnalyzer, heldout_portrait: np.ndarray, heldout_speech: np.ndarray
) -> Rendered:
    return render_and_measure(analyzer, heldout_portrait, heldout_speech, seed=11)


@pytest.fixture(scope="module")
def silent(analyzer: MediaPipeFaceAnalyzer, portrait: np.ndarray) -> Rendered:
    return render_and_measure(analyzer, portrait, np.zeros(10 * 16000, np.float32))


@pytest.mark.parametrize("case", ["speaking", "heldout"])
def test_lip_gap_follows_speech_energy(case: str, request: pytest.FixtureRequest) -> None:
    rendered: Rendered = request.getfixturevalue(case)
    envelope = energy_envelope(rendered.audio, len(rendered.frames))
    pearson = float(np.corrcoef(rendered.mouth_open, envelope)[0, 1])
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
