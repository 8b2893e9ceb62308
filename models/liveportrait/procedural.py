"""A weight-free motion source from the audio: lips from speech energy, blinks, gentle head sway.

Everything is driven through LivePortrait's own retargeting MLPs, so that the engine talks with only
the LivePortrait weights:

- **lips**: the per-frame speech energy (`models.audio.frame_features`) mapped to a lip close ratio
  ``LIP_CLOSED + energy * (LIP_OPEN - LIP_CLOSED)``, smoothed by an attack/release follower (opening
  faster than closing, as speech does), fed to R_lip;
- **blinks**: eye close ratio ``eye_open`` (the portrait's own, so open eyes stay as they are) dipping
  to ``EYE_CLOSED`` for ``BLINK_S`` every 2-6 s (seeded), fed to R_eyes;
- **head**: pitch/yaw/roll as sums of two slow sinusoids (seeded phases) of ``sway_degrees``
  amplitude, louder speech nodding a little more; applied relative to the neutral pose, i.e. on top
  of the source's own pose.

The follower's last value is the carry, so chunks resume exactly; everything else is a function of the
absolute frame index.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from models.audio import frame_features
from models.liveportrait.motion_source import MotionFrames, SourceCarry

LIP_CLOSED, LIP_OPEN = 0.0, 0.45
EYE_OPEN, EYE_CLOSED = 0.36, 0.02
BLINK_S = 0.2
ATTACK, RELEASE = 0.6, 0.3
"""Follower coefficients per frame at 25 fps (fraction of the gap closed each frame)."""


class ProceduralAudioSource:
    """See the module docstring.

    Args:
        audio: float32 mono samples.
        sample_rate: of `audio`.
        fps: output frame rate.
        num_frames: frames of the job.
        num_kp: keypoints of the model (21).
        seed: blink times and sway phases.
        sway_degrees: head sway amplitude (0 keeps the head still).
        blink: whether to blink.
        eye_open: eye close ratio between blinks (the portrait's; ``EYE_OPEN`` if unknown).
    """

    def __init__(
        self,
        audio: npt.NDArray[np.float32],
        sample_rate: int,
        fps: float,
        num_frames: int,
        num_kp: int,
        *,
        seed: int = 0,
        sway_degrees: float = 3.0,
        blink: bool = True,
        eye_open: float = EYE_OPEN,
    ) -> None:
        self.num_frames = num_frames
        self.reference: MotionFrames | None = MotionFrames.neutral(1, num_kp)
        self._fps = fps
        self._eye_open = max(float(eye_open), EYE_CLOSED)
        self._num_kp = num_kp
        self._energy = frame_features(audio, fps, num_frames, sample_rate).energy.astype(np.float32)
        rng = np.random.default_rng(seed)
        self._phases = rng.uniform(0, 2 * np.pi, size=(3, 2))
        self._frequencies = np.array([[0.21, 0.53], [0.13, 0.37], [0.09, 0.29]])  # Hz: pitch, yaw, roll
        self._amplitude = np.array([0.8, 1.0, 0.4]) * sway_degrees
        duration = num_frames / fps
        gaps = rng.uniform(2.0, 6.0, size=int(duration / 2.0) + 2)
        self._blinks = np.cumsum(gaps) - gaps[0] / 2 if blink else np.zeros(0)
        scale = fps / 25.0
        self._attack = 1 - (1 - ATTACK) ** (1 / scale)
        self._release = 1 - (1 - RELEASE) ** (1 / scale)

    def frames(self, start: int, stop: int, carry: SourceCarry | None) -> tuple[MotionFrames, SourceCarry]:
        index = np.arange(start, stop)
        time = index / self._fps
        energy = self._energy[start:stop]
        # 1. Lips: attack/release follower over the energy-mapped target.
        level = float(carry["lip_level"][0]) if carry else LIP_CLOSED
        lips = np.empty(len(index), np.float32)
        for i, target in enumerate(LIP_CLOSED + energy * (LIP_OPEN - LIP_CLOSED)):
            level += (self._attack if target > level else self._release) * (float(target) - level)
            lips[i] = level
        # 2. Blinks: a raised-cosine dip around each blink time.
        eyes = np.full(len(index), self._eye_open, np.float32)
        for moment in self._blinks:
            closeness = np.clip(1 - np.abs(time - moment) / (BLINK_S / 2), 0, 1)
            eyes -= ((self._eye_open - EYE_CLOSED) * (0.5 - 0.5 * np.cos(np.pi * closeness))).astype(
                np.float32
            )
        # 3. Head: slow sinusoids, a little more pitch with speech.
        angles = np.sum(
            self._amplitude[:, None, None]
            / 2
            * np.sin(
                2 * np.pi * self._frequencies[:, :, None] * time[None, None, :] + self._phases[:, :, None]
            ),
            axis=1,
        )
        angles[0] += 1.5 * (lips - LIP_CLOSED)  # nod with the syllables
        motion = MotionFrames.neutral(len(index), self._num_kp)
        frames = MotionFrames(
            scale=motion.scale,
            pitch=angles[0][:, None].astype(np.float32),
            yaw=angles[1][:, None].astype(np.float32),
            roll=angles[2][:, None].astype(np.float32),
            t=motion.t,
            exp=motion.exp,
            eye_ratio=eyes[:, None],
            lip_ratio=lips[:, None],
        )
        return frames, {"lip_level": np.array([level], np.float64)}
