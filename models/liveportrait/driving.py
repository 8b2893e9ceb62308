"""Motion from a driving video: the reference's motion template, made chunk-free at prepare time.

The video is decoded with PyAV one frame at a time; output frame ``i`` takes the driving frame shown at
time ``i / fps``. Each used frame is cropped around its largest face with the driving crop
(`models.liveportrait.crop`, ``scale=2.2, vy_ratio=-0.1``) and its kp info extracted by the motion
extractor in batches, together with its eye and lip close ratios; only these numbers are kept (about
80 floats per frame), never the frames. A frame without a face repeats the motion of the nearest
earlier frame (the first found, for leading frames). A video shorter than the audio plays forwards
and backwards (ping-pong) so that the motion never jumps.

`DrivingVideoSource` applies the motion relative to the first driving frame, as the reference's
relative mode does. With eye or lip retargeting on, it does what the reference's retargeting branch
does: the pose and expression stay the source's, and only the driving eye/lip ratios move the face.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import numpy.typing as npt

from core.errors import InvalidInput
from models.face import FaceAnalyzer
from models.liveportrait.crop import (
    DRIVING_SCALE,
    DRIVING_VY_RATIO,
    crop_face,
    eye_close_ratios,
    lip_close_ratio,
)
from models.liveportrait.motion_source import MOTION_KEYS, MotionFrames, SourceCarry
from models.liveportrait.pipeline import LivePortraitPipeline

EXTRACT_BATCH = 16


def sample_indices(num_driving: int, num_frames: int) -> npt.NDArray[np.int64]:
    """Driving frame per output frame when the video has `num_driving` usable frames: the first
    `num_driving` one to one, then ping-pong (``0 1 2 3 2 1 0 1 ...``)."""
    if num_driving <= 1:
        return np.zeros(num_frames, dtype=np.int64)
    period = 2 * (num_driving - 1)
    phase = np.arange(num_frames) % period
    return np.where(phase < num_driving, phase, period - phase).astype(np.int64)


def driving_motion(
    video: bytes, analyzer: FaceAnalyzer, pipeline: LivePortraitPipeline, num_frames: int, fps: float
) -> MotionFrames:
    """kp info and eye (first eye) / lip ratios of the driving video, one frame per output frame.

    Raises:
        InvalidInput: ``invalid_driving_video`` when the bytes do not decode or no frame shows a face.
    """
    import av

    crops: list[npt.NDArray[np.uint8]] = []
    ratios: list[tuple[float, float]] = []
    found: list[bool] = []
    parts: list[MotionFrames] = []

    def use(frame: Any) -> None:
        image = frame.to_ndarray(format="rgb24")
        faces = analyzer.detect(image)
        found.append(bool(faces))
        if not faces:
            return
        face = faces[0]
        crops.append(
            crop_face(image, face, pipeline.config.input_size, DRIVING_SCALE, DRIVING_VY_RATIO).image
        )
        ratios.append((float(eye_close_ratios(face)[0]), lip_close_ratio(face)))
        if len(crops) == EXTRACT_BATCH:
            flush()

    def flush() -> None:
        if crops:
            parts.append(pipeline.extract_motion(np.stack(crops), batch_size=EXTRACT_BATCH))
            crops.clear()

    try:
        with av.open(io.BytesIO(video), mode="r") as container:
            stream = container.streams.video[0]
            pending: Any = None
            for frame in container.decode(stream):
                time = float(frame.time) if frame.time is not None else len(found) / fps
                while pending is not None and len(found) < num_frames and len(found) / fps < time:
                    use(pending)
                    pending = None
                pending = frame
                if len(found) >= num_frames:
                    break
            if pending is not None and len(found) < num_frames:
                use(pending)
    except (av.error.FFmpegError, IndexError) as error:
        raise InvalidInput(
            f"cannot decode the driving video: {error}", code="invalid_driving_video"
        ) from None
    flush()
    if not parts:
        raise InvalidInput("no face was found in the driving video", code="invalid_driving_video")
    motion = MotionFrames.concat(parts)
    ratio_array = np.asarray(ratios, dtype=np.float32)
    motion = MotionFrames(
        **{key: getattr(motion, key) for key in MOTION_KEYS},
        eye_ratio=ratio_array[:, :1],
        lip_ratio=ratio_array[:, 1:],
    )
    # Frames without a face repeat the motion of the last frame with one (the first, for leading ones).
    face_index = np.cumsum(found) - 1
    face_index = np.where(face_index < 0, 0, face_index)
    per_frame = motion.take(face_index.astype(np.int64))
    return per_frame.take(sample_indices(len(per_frame), num_frames))


class DrivingVideoSource:
    """Driving-video motion relative to its first frame (see the module docstring).

    Args:
        motion: one frame per output frame, with eye/lip ratios (`driving_motion`).
        eye_retargeting, lip_retargeting: the reference's ``flag_eye_retargeting``/``flag_lip_retargeting``.
    """

    def __init__(self, motion: MotionFrames, *, eye_retargeting: bool = False, lip_retargeting: bool = False):
        self.num_frames = len(motion)
        self.reference: MotionFrames | None = motion.slice(0, 1).without_ratios()
        self._motion = motion
        self._eyes = eye_retargeting
        self._lips = lip_retargeting

    def frames(self, start: int, stop: int, carry: SourceCarry | None) -> tuple[MotionFrames, SourceCarry]:
        part = self._motion.slice(start, stop)
        if not (self._eyes or self._lips):
            return part.without_ratios(), {}
        assert self.reference is not None
        still = self.reference.take(np.zeros(stop - start, dtype=np.int64))
        return (
            MotionFrames(
                **{key: getattr(still, key) for key in MOTION_KEYS},
                eye_ratio=part.eye_ratio if self._eyes else None,
                lip_ratio=part.lip_ratio if self._lips else None,
            ),
            {},
        )
