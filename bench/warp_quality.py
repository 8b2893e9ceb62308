"""The warp engine seen up close: speed at 256/512 px and the quality figures of docs/warp.md.

Speed: each size renders ``--seconds`` of the sample speech chunk by chunk (``prepare`` apart), a
few times (``--repeats``); the table gives the best and the median wall-clock frames/s, and frames
per CPU-second of this process. On a shared machine the best of several runs is the fair figure:
other processes only ever slow a run down. The load average before and after is printed with it.

Quality (``--quality``): the measures of ``tests/models/warp/test_warp_quality.py`` (which imports
them from here) on the sample portraits and voices, and on matplotlib's sample portrait of Grace
Hopper when matplotlib is installed (a closed mouth, glasses and a flag beside the head).

Usage:
    python -m bench.warp_quality [--sizes 256,512] [--seconds 8] [--repeats 5] [--threads 2] [--quality]
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench.machine import cpu_model
from core.media import encode_segment
from models.engine import RenderInputs, make_params
from models.face import Face, MediaPipeFaceAnalyzer
from models.warp.engine import WarpEngine, WarpPrepared
from models.warp.matte import MediaPipeSegmenter, PersonSegmenter
from models.warp.motion import initial_state
from models.warp.mouth import INNER_LOWER_LIP, INNER_UPPER_LIP
from models.warp.options import WarpOptions
from models.warp.rig import COEFFICIENTS

ASSETS = Path(__file__).resolve().parents[1] / "tests" / "assets"
FPS = 25.0
BLINK, JAW = COEFFICIENTS.index("blink"), COEFFICIENTS.index("jaw")


@dataclass
class Rendered:
    """A rendered clip with the face re-detected on every frame."""

    prepared: WarpPrepared
    frames: np.ndarray
    faces: list[Face]
    audio: np.ndarray
    coefficients: np.ndarray

    @property
    def mouth_open(self) -> np.ndarray:
        return np.array([face.mouth_open for face in self.faces])

    @property
    def eyes_open(self) -> np.ndarray:
        return np.array([face.eyes_open for face in self.faces])


def render(
    analyzer: MediaPipeFaceAnalyzer,
    segmenter: PersonSegmenter,
    image: np.ndarray,
    audio: np.ndarray,
    size: int,
    chunk_seconds: float = 2.0,
    **params: Any,
) -> tuple[WarpEngine, WarpPrepared, np.ndarray, np.ndarray]:
    """Engine, prepared job, uint8 frames ``(F, H, W, 3)`` and their rig coefficients ``(F, K)``."""
    engine = WarpEngine(analyzer=analyzer, segmenter=segmenter, chunk_seconds=chunk_seconds)
    prepared = engine.prepare(
        RenderInputs(image=image, audio=audio), make_params(WarpOptions, fps=FPS, size=size, **params)
    )
    chunks, carry = [], None
    for chunk in engine.plan(prepared):
        frames, carry = engine.render_chunk(prepared, chunk, carry)
        chunks.append(frames)
    coefficients = engine.coefficients(prepared, initial_state(prepared.seed), prepared.num_frames)
    return engine, prepared, np.concatenate(chunks), coefficients


def render_and_measure(
    analyzer: MediaPipeFaceAnalyzer,
    segmenter: PersonSegmenter,
    image: np.ndarray,
    audio: np.ndarray,
    size: int,
    **params: Any,
) -> Rendered:
    """``render``, then the face re-detected on every frame (it must be found in each)."""
    _, prepared, video, coefficients = render(analyzer, segmenter, image, audio, size, **params)
    faces = []
    for frame in video:
        found = analyzer.detect(frame)
        if not found:
            raise AssertionError("the face must stay detectable in every frame")
        faces.append(found[0])
    return Rendered(prepared, video, faces, audio, coefficients)


def energy_envelope(audio: np.ndarray, num_frames: int, sample_rate: int = 16000) -> np.ndarray:
    """RMS of the samples shown during each frame (no smoothing, no normalisation)."""
    per_frame = sample_rate / FPS
    return np.array(
        [
            np.sqrt(np.mean(audio[int(i * per_frame) : int((i + 1) * per_frame)] ** 2))
            for i in range(num_frames)
        ]
    )


def lip_energy_pearson(rendered: Rendered) -> float:
    """Pearson correlation of the re-detected lip gap with the per-frame RMS of the audio."""
    envelope = energy_envelope(rendered.audio, len(rendered.frames))
    return float(np.corrcoef(rendered.mouth_open, envelope)[0, 1])


def open_frames(rendered: Rendered, count: int = 8) -> np.ndarray:
    """Indices of the ``count`` frames with the widest jaw opening."""
    order: np.ndarray = np.argsort(-rendered.coefficients[:, JAW])[:count]
    return order


def interior_structure(rendered: Rendered) -> tuple[float, float]:
    """Median over the most open frames of the opening's luma spread (p90 - p10) and bright share
    (luma > 110), inside the moved inner-lip polygon eroded by a pixel."""
    spreads, bright = [], []
    for i in open_frames(rendered):
        moved = rendered.prepared.rig.displaced_points(rendered.coefficients[i])
        polygon = np.concatenate([moved[list(INNER_UPPER_LIP)], moved[list(INNER_LOWER_LIP)][::-1]])
        mask = np.zeros(rendered.frames.shape[1:3], np.uint8)
        cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], (1,))
        inside = cv2.erode(mask, np.ones((3, 3), np.uint8)) > 0
        luma = cv2.cvtColor(rendered.frames[i], cv2.COLOR_RGB2GRAY)[inside].astype(np.float64)
        spreads.append(np.percentile(luma, 90) - np.percentile(luma, 10))
        bright.append(np.mean(luma > 110))
    return float(np.median(spreads)), float(np.median(bright))


def lip_thickness_ratio(rendered: Rendered, analyzer: MediaPipeFaceAnalyzer) -> float:
    """Re-detected lower-lip thickness (inner to outer edge, over mouth width) in the most open
    frames, over the portrait's own."""

    def thickness(landmarks: np.ndarray) -> float:
        return float(
            np.linalg.norm(landmarks[17, :2] - landmarks[14, :2])
            / np.linalg.norm(landmarks[61, :2] - landmarks[291, :2])
        )

    rest = thickness(analyzer.detect(rendered.prepared.crop)[0].landmarks)
    return float(np.median([thickness(rendered.faces[i].landmarks) for i in open_frames(rendered)]) / rest)


def closed_eye_ratio(rendered: Rendered) -> float:
    """Re-detected eye opening at full blink over its median (mean over the fully closed frames)."""
    closed = rendered.coefficients[:, BLINK] >= 0.999
    if not closed.any():
        raise AssertionError("no full blink in the clip")
    return float(rendered.eyes_open[closed].mean() / np.median(rendered.eyes_open))


def background_change(crop: np.ndarray, frames: np.ndarray, person: np.ndarray) -> tuple[float, float]:
    """How the background beside the head changes: mean abs change (grey levels) and the share of
    pixels changed by more than 2 levels, over the frames, in the band 1/24 to 1/8 of the crop side
    outside the person mask (beyond what hair at the outline moves at ``head_motion = 1``)."""
    size = crop.shape[0]
    outside = cv2.distanceTransform((~person).astype(np.uint8), cv2.DIST_L2, 5)
    band = (outside > size / 24) & (outside <= size / 8)
    if band.mean() < 0.02:
        raise AssertionError(f"only {band.mean():.1%} of the crop is background beside the head")
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float64)
    changes = np.stack(
        [np.abs(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float64) - grey)[band] for frame in frames]
    )
    return float(changes.mean()), float((changes > 2).mean())


def boundary_and_inner_differences(
    engine: WarpEngine, prepared: WarpPrepared, frames: np.ndarray
) -> tuple[float, float]:
    """Largest mean abs difference of still pixels between consecutive decoded frames: across a
    chunk boundary, and within chunks (each chunk encoded as its own segment, as the worker does).

    Still pixels: those that never change in ``frames``, a macroblock (16 px) from any that do.
    """
    import av

    chunks = engine.plan(prepared)
    decoded = []
    for chunk in chunks:
        data = encode_segment(np.ascontiguousarray(frames[chunk.start : chunk.stop]), FPS)
        with av.open(io.BytesIO(data), mode="r") as container:
            decoded += [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    video = np.stack(decoded).astype(np.float32)
    still = (frames == frames[:1]).all(axis=(0, 3))
    still = cv2.erode(still.astype(np.uint8), np.ones((33, 33), np.uint8)) > 0
    if still.mean() < 0.15:
        raise AssertionError(f"only {still.mean():.0%} of the frame is still")
    steps = np.abs(np.diff(video, axis=0))[:, still].mean(axis=1)
    boundary = np.array([chunk.start - 1 for chunk in chunks[1:]])
    inner = np.setdiff1d(np.arange(len(steps)), boundary)
    return float(steps[boundary].max()), float(steps[inner].max())


def hopper_portrait() -> np.ndarray | None:
    """matplotlib's sample photo of Grace Hopper (RGB), or None without matplotlib."""
    try:
        from matplotlib import cbook
    except ImportError:
        return None
    from PIL import Image

    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return np.asarray(Image.open(str(path)).convert("RGB"))


def load_portrait(name: str) -> np.ndarray:
    from PIL import Image, ImageOps

    return np.asarray(ImageOps.exif_transpose(Image.open(ASSETS / name)).convert("RGB"))


def speed(sizes: list[int], seconds: float, repeats: int) -> None:
    """Print the speed table (see module docstring)."""
    from models.audio import load_audio

    image = load_portrait("portrait.png")
    audio = load_audio(ASSETS / "speech.wav")
    audio = np.tile(audio, int(np.ceil(seconds * 16000 / len(audio))))[: int(seconds * 16000)]
    engine = WarpEngine()
    engine.warmup()
    print(f"{'size':>5} {'frames':>7} {'prepare s':>10} {'best fps':>9} {'median fps':>11} {'CPU fps':>8}")
    for size in sizes:
        started = time.perf_counter()
        prepared = engine.prepare(RenderInputs(image=image, audio=audio), make_params(WarpOptions, size=size))
        prepare_s = time.perf_counter() - started
        walls, cpus = [], []
        for _ in range(repeats):
            cpu0, wall0 = time.process_time(), time.perf_counter()
            carry = None
            for chunk in engine.plan(prepared):
                _, carry = engine.render_chunk(prepared, chunk, carry)
            walls.append(time.perf_counter() - wall0)
            cpus.append(time.process_time() - cpu0)
        n = prepared.num_frames
        print(
            f"{size:>5} {n:>7} {prepare_s:>10.2f} {n / min(walls):>9.1f} "
            f"{n / statistics.median(walls):>11.1f} {n / statistics.median(cpus):>8.1f}"
        )


def quality() -> None:
    """Print the quality table (see module docstring and docs/warp.md)."""
    from models.audio import load_audio

    analyzer, segmenter = MediaPipeFaceAnalyzer(), MediaPipeSegmenter()
    cases: list[tuple[str, np.ndarray, np.ndarray, int]] = [
        ("astronaut + speech.wav", load_portrait("portrait.png"), load_audio(ASSETS / "speech.wav"), 0),
        (
            "held-out portrait + voice",
            load_portrait("portrait_heldout.jpg"),
            load_audio(ASSETS / "speech_heldout.flac"),
            11,
        ),
    ]
    hopper = hopper_portrait()
    if hopper is not None:
        cases.append(
            ("Grace Hopper + held-out voice", hopper, load_audio(ASSETS / "speech_heldout.flac"), 11)
        )
    print(
        f"{'case (256 px, 25 fps)':<30} {'lip/energy r':>12} {'interior spread':>15} {'bright':>7} "
        f"{'lip thick':>9} {'closed eye':>10} {'bg change':>9} {'changed':>7} {'join / in-chunk':>16}"
    )
    for name, image, audio, seed in cases:
        rendered = render_and_measure(analyzer, segmenter, image, audio, 256, seed=seed)
        spread, bright = interior_structure(rendered)
        engine, prepared, frames, _ = render(
            analyzer, segmenter, image, audio, 256, chunk_seconds=1.0, head_motion=1.0, seed=5
        )
        change, changed = background_change(prepared.crop, frames, segmenter.person_mask(prepared.crop))
        join, inner = boundary_and_inner_differences(engine, prepared, frames)
        print(
            f"{name:<30} {lip_energy_pearson(rendered):>12.3f} {spread:>15.0f} {bright:>7.2f} "
            f"{lip_thickness_ratio(rendered, analyzer):>9.2f} {closed_eye_ratio(rendered):>10.2f} "
            f"{change:>9.3f} {changed:>7.1%} {join:>7.3f} / {inner:.3f}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="OpenCV threads")
    parser.add_argument("--quality", action="store_true", help="also print the quality figures")
    args = parser.parse_args(argv)
    cv2.setNumThreads(args.threads)
    load = os.getloadavg()
    print(
        f"CPU: {cpu_model()}, {os.cpu_count()} cores visible, {args.threads} OpenCV threads; "
        f"{args.seconds:g} s of speech, best of {args.repeats}; load average {load[0]:.1f}"
    )
    speed([int(s) for s in args.sizes.split(",")], args.seconds, args.repeats)
    if args.quality:
        quality()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"load average after: {os.getloadavg()[0]:.1f}; peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
