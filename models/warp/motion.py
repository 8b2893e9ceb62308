"""Per-frame rig coefficients from audio features: mouth, blinks and head motion, with carried state.

Everything here is causal and frame-by-frame: the state after frame ``i`` (``MotionState``) is all
that frame ``i + 1`` needs besides the per-job inputs, so chunks rendered with the state carried
over give exactly the frames of one uninterrupted run. Time constants are in seconds, so the motion
looks the same at any fps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MOUTH_ATTACK_S = 0.025
MOUTH_RELEASE_S = 0.05
"""One-pole smoothing of the mouth coefficients (opening is faster than closing)."""
ACTIVITY_S = 0.6
"""Time constant of the speech-activity envelope that scales head motion."""
DRIFT_S = 0.9
HEAD_SPRING_HZ = 1.1
"""Head motion: low-passed noise, followed by a critically damped spring."""
HEAD_AMPLITUDE = np.array([math.radians(5.0), math.radians(3.0), math.radians(2.0), 0.008, 0.005])
"""yaw, pitch, roll (radians) and shift x, y (fraction of the crop side) at head_motion = 1."""
NOD = math.radians(2.5)
"""Extra pitch at a speech onset (the head dips slightly on stressed syllables) at head_motion=1."""
BLINK_INTERVAL_S = (1.6, 6.0)
"""Blinks come at irregular intervals (gamma distributed, mean about 3.6 s) clipped to this range."""
FIRST_BLINK_S = (0.5, 2.5)
BLINK_CLOSE_S, BLINK_HOLD_S, BLINK_OPEN_S = 0.08, 0.07, 0.16


@dataclass
class MotionState:
    """What the next frame needs from the previous ones (float64 array + counters)."""

    frame: int
    mouth: np.ndarray  # (4,) jaw, wide, round, tuck
    activity: float
    drift: np.ndarray  # (5,)
    head: np.ndarray  # (5,) position
    head_velocity: np.ndarray  # (5,)
    blink_start: float  # seconds; start of the current or next blink
    blink_count: int

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "mouth": self.mouth,
            "scalars": np.array([self.activity, self.blink_start], dtype=np.float64),
            "drift": self.drift,
            "head": self.head,
            "head_velocity": self.head_velocity,
        }

    def to_meta(self) -> dict[str, int]:
        return {"frame": self.frame, "blink_count": self.blink_count}

    @classmethod
    def from_parts(cls, arrays: dict[str, np.ndarray], meta: dict[str, int]) -> MotionState:
        return cls(
            frame=int(meta["frame"]),
            # A carry written before the tuck target existed has three mouth values.
            mouth=np.pad(
                np.asarray(arrays["mouth"], dtype=np.float64), (0, max(0, 4 - len(arrays["mouth"])))
            ),
            activity=float(arrays["scalars"][0]),
            drift=np.asarray(arrays["drift"], dtype=np.float64).copy(),
            head=np.asarray(arrays["head"], dtype=np.float64).copy(),
            head_velocity=np.asarray(arrays["head_velocity"], dtype=np.float64).copy(),
            blink_start=float(arrays["scalars"][1]),
            blink_count=int(meta["blink_count"]),
        )


def _blink_rng(seed: int, count: int) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, count, 0xB1])


def initial_state(seed: int) -> MotionState:
    first = float(_blink_rng(seed, 0).uniform(*FIRST_BLINK_S))
    return MotionState(
        frame=0,
        mouth=np.zeros(4),
        activity=0.0,
        drift=np.zeros(5),
        head=np.zeros(5),
        head_velocity=np.zeros(5),
        blink_start=first,
        blink_count=0,
    )


def blink_profile(elapsed: float) -> float:
    """Lid closure 0..1 at ``elapsed`` seconds after a blink starts."""
    if elapsed < 0:
        return 0.0
    if elapsed < BLINK_CLOSE_S:
        x = elapsed / BLINK_CLOSE_S
    elif elapsed < BLINK_CLOSE_S + BLINK_HOLD_S:
        return 1.0
    elif elapsed < BLINK_CLOSE_S + BLINK_HOLD_S + BLINK_OPEN_S:
        x = 1 - (elapsed - BLINK_CLOSE_S - BLINK_HOLD_S) / BLINK_OPEN_S
    else:
        return 0.0
    return x * x * (3 - 2 * x)


def advance(
    state: MotionState,
    targets: np.ndarray,
    energy: np.ndarray,
    noise: np.ndarray,
    fps: float,
    seed: int,
    head_motion: float,
    crop_size: int,
) -> np.ndarray:
    """Advance ``state`` by one frame (in place) and return that frame's ``(10,)`` rig coefficients.

    Args:
        targets: ``(F, 4)`` from ``models.warp.visemes.viseme_targets``.
        energy: ``(F,)`` speech energy 0..1.
        noise: ``(F, 5)`` standard normal draws for the head drift (fixed per job and seed).
    """
    i = state.frame
    dt = 1.0 / fps
    t = i * dt

    # Mouth: asymmetric one-pole smoothing towards this frame's targets.
    rising = targets[i] > state.mouth
    rate = np.where(rising, 1 - math.exp(-dt / MOUTH_ATTACK_S), 1 - math.exp(-dt / MOUTH_RELEASE_S))
    state.mouth = state.mouth + rate * (targets[i] - state.mouth)

    # Blinks at irregular intervals; each one is drawn from (seed, blink number), not from a stream.
    closure = blink_profile(t - state.blink_start)
    blink_end = state.blink_start + BLINK_CLOSE_S + BLINK_HOLD_S + BLINK_OPEN_S
    if t + dt >= blink_end:
        state.blink_count += 1
        interval = float(np.clip(_blink_rng(seed, state.blink_count).gamma(3.0, 1.2), *BLINK_INTERVAL_S))
        state.blink_start = state.blink_start + interval
        closure = max(closure, blink_profile(t - state.blink_start))

    # Head: drifting noise, livelier while speaking, plus a nod on onsets, followed by a spring.
    activity_rate = 1 - math.exp(-dt / ACTIVITY_S)
    onset = max(0.0, float(energy[i]) - state.activity)
    state.activity += activity_rate * (float(energy[i]) - state.activity)
    drift_rate = 1 - math.exp(-dt / DRIFT_S)
    # Scaled so that the drift has unit variance whatever the fps.
    state.drift = state.drift + drift_rate * (
        noise[i] * math.sqrt((2 - drift_rate) / drift_rate) - state.drift
    )
    target = HEAD_AMPLITUDE * np.clip(state.drift, -1.6, 1.6) * (0.45 + 0.55 * state.activity)
    target[1] += NOD * onset
    target *= head_motion
    omega = 2 * math.pi * HEAD_SPRING_HZ
    acceleration = omega * omega * (target - state.head) - 2 * omega * state.head_velocity
    state.head_velocity = state.head_velocity + dt * acceleration
    state.head = state.head + dt * state.head_velocity
    state.frame += 1

    head = state.head.copy()
    head[3:] *= crop_size
    return np.concatenate([state.mouth, [closure], head])
