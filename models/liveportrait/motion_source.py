"""The motion-source seam: where the renderer's per-frame keypoint motion comes from.

A motion source hands the renderer, chunk by chunk, a `MotionFrames`: per-frame motion in the
reference's kp-info convention (numpy float32)::

    scale (F, 1)            pitch, yaw, roll (F, 1), degrees      t (F, 3)      exp (F, K, 3)
    eye_ratio (F, 1) | None     driving eye-close ratio (eyelid gap / eye width), through R_eyes
    lip_ratio (F, 1) | None     driving lip-close ratio (lip gap / mouth width), through R_lip

and says how to apply it (`MotionSource.reference`):

- **relative** (``reference`` is one frame): frame ``i`` moves the portrait by its change from the
  reference, as the reference implementation's relative driving mode does with the first driving
  frame: ``R = R_i R_0^T R_s``, ``exp = exp_s + exp_i - exp_0``, ``scale = s_s * s_i / s_0``,
  ``t = t_s + t_i - t_0``;
- **absolute** (``reference`` is None): frame ``i`` is the portrait's target motion itself (what
  audio-to-motion models that predict LivePortrait motion directly produce).

Sources implemented here: `models.liveportrait.driving.DrivingVideoSource` (motion extracted from a
driving video), `models.liveportrait.procedural.ProceduralAudioSource` (weight-free: lips from speech
energy, blinks, head sway), `StillSource`. Audio-to-motion models plug in by implementing
`MotionSource`.

Continuity: `MotionSource.frames` takes and returns a `SourceCarry` (plain named numpy arrays, stored
with the job's chunk carry), so that rendering ``[a, b)`` then ``[b, c)`` with the carry gives exactly
the frames of ``[a, c)``, also when the second call happens in another process.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float32]
SourceCarry = dict[str, npt.NDArray[Any]]
"""A motion source's continuity state between chunks (an empty dict for stateless sources)."""

MOTION_KEYS = ("scale", "pitch", "yaw", "roll", "t", "exp")


@dataclass(frozen=True)
class MotionFrames:
    """Per-frame keypoint motion (see the module docstring for shapes and meaning).

    Raises:
        ValueError: (at construction) shapes that disagree.
    """

    scale: Array
    pitch: Array
    yaw: Array
    roll: Array
    t: Array
    exp: Array
    eye_ratio: Array | None = None
    lip_ratio: Array | None = None

    def __post_init__(self) -> None:
        n = len(self.scale)
        expected = {"scale": (n, 1), "pitch": (n, 1), "yaw": (n, 1), "roll": (n, 1), "t": (n, 3)}
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise ValueError(
                    f"MotionFrames.{name} has shape {getattr(self, name).shape}, expected {shape}"
                )
        if self.exp.ndim != 3 or self.exp.shape[0] != n or self.exp.shape[2] != 3:
            raise ValueError(f"MotionFrames.exp has shape {self.exp.shape}, expected ({n}, K, 3)")
        for name in ("eye_ratio", "lip_ratio"):
            value = getattr(self, name)
            if value is not None and value.shape != (n, 1):
                raise ValueError(f"MotionFrames.{name} has shape {value.shape}, expected ({n}, 1)")

    def __len__(self) -> int:
        return len(self.scale)

    @property
    def num_kp(self) -> int:
        return int(self.exp.shape[1])

    def slice(self, start: int, stop: int) -> MotionFrames:
        """Frames ``[start, stop)``."""
        return MotionFrames(
            **{key: getattr(self, key)[start:stop] for key in MOTION_KEYS},
            eye_ratio=None if self.eye_ratio is None else self.eye_ratio[start:stop],
            lip_ratio=None if self.lip_ratio is None else self.lip_ratio[start:stop],
        )

    def take(self, index: npt.NDArray[np.int64]) -> MotionFrames:
        """Frames at `index` (any order, repeats allowed)."""
        return MotionFrames(
            **{key: getattr(self, key)[index] for key in MOTION_KEYS},
            eye_ratio=None if self.eye_ratio is None else self.eye_ratio[index],
            lip_ratio=None if self.lip_ratio is None else self.lip_ratio[index],
        )

    def without_ratios(self) -> MotionFrames:
        return replace(self, eye_ratio=None, lip_ratio=None)

    @classmethod
    def neutral(cls, num_frames: int, num_kp: int) -> MotionFrames:
        """No rotation, translation or expression, unit scale (the reference frame of synthetic motion)."""
        zeros = np.zeros((num_frames, 1), np.float32)
        return cls(
            scale=np.ones((num_frames, 1), np.float32),
            pitch=zeros,
            yaw=zeros.copy(),
            roll=zeros.copy(),
            t=np.zeros((num_frames, 3), np.float32),
            exp=np.zeros((num_frames, num_kp, 3), np.float32),
        )

    @classmethod
    def concat(cls, parts: list[MotionFrames]) -> MotionFrames:
        """Frames of `parts` one after another (ratios kept only if every part has them)."""
        if not parts:
            raise ValueError("MotionFrames.concat needs at least one part")

        def ratio(name: str) -> Array | None:
            values = [getattr(part, name) for part in parts]
            return None if any(v is None for v in values) else np.concatenate(values)

        return cls(
            **{key: np.concatenate([getattr(part, key) for part in parts]) for key in MOTION_KEYS},
            eye_ratio=ratio("eye_ratio"),
            lip_ratio=ratio("lip_ratio"),
        )


@runtime_checkable
class MotionSource(Protocol):
    """Per-frame keypoint motion for the frames of a job.

    Attributes:
        num_frames: frames the source covers (the job's frame count).
        reference: one frame to apply `frames` relative to, or None when they are absolute motion.
    """

    num_frames: int
    reference: MotionFrames | None

    def frames(self, start: int, stop: int, carry: SourceCarry | None) -> tuple[MotionFrames, SourceCarry]:
        """Motion of frames ``[start, stop)``; `carry` is what the call for the previous range returned
        (None for ``start == 0``). Must be deterministic given ``(start, stop, carry)``."""
        ...


class StillSource:
    """No motion at all: every frame is the reference (the portrait as it is, stitched)."""

    def __init__(self, num_frames: int, num_kp: int) -> None:
        self.num_frames = num_frames
        self.reference: MotionFrames | None = MotionFrames.neutral(1, num_kp)
        self._num_kp = num_kp

    def frames(self, start: int, stop: int, carry: SourceCarry | None) -> tuple[MotionFrames, SourceCarry]:
        return MotionFrames.neutral(stop - start, self._num_kp), {}
