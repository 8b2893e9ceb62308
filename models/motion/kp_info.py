"""The motion seam the LivePortrait renderer consumes, and "motion as an output" (an NPZ file).

A `MotionSequence` holds per-frame LivePortrait kp-info arrays (the motion extractor's convention,
poses already in degrees):

    scale (F, 1)   pitch (F, 1)   yaw (F, 1)   roll (F, 1)   t (F, 3)   exp (F, 21, 3)

all float32. Motion NPZ format (``parla-motion`` version 1): a NumPy ``.npz`` without pickled objects,
holding those six arrays under their names and ``meta``, the UTF-8 bytes (uint8) of a JSON object:
``{"format": "parla-motion", "version": 1, "convention": "liveportrait-kp-info", "fps": <float>,
"num_frames": <int>, "model": <str>, ...}`` (extra keys allowed). Read it with ``numpy.load(path)``
(``allow_pickle`` may stay False) from any language with an npz reader.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]

MOTION_FORMAT = "parla-motion"
MOTION_FORMAT_VERSION = 1
FIELDS: dict[str, tuple[int, ...]] = {
    "scale": (1,),
    "pitch": (1,),
    "yaw": (1,),
    "roll": (1,),
    "t": (3,),
    "exp": (21, 3),
}


class MotionFormatError(ValueError):
    """A motion array set or file does not follow the documented format."""


@dataclass(frozen=True)
class MotionSequence:
    """Per-frame kp-info arrays (see the module docstring)."""

    scale: FloatArray
    pitch: FloatArray
    yaw: FloatArray
    roll: FloatArray
    t: FloatArray
    exp: FloatArray

    def __post_init__(self) -> None:
        frames = self.scale.shape[0] if self.scale.ndim else -1
        for name, tail in FIELDS.items():
            value = getattr(self, name)
            if not isinstance(value, np.ndarray) or value.shape != (frames, *tail):
                shape = getattr(value, "shape", None)
                raise MotionFormatError(
                    f"{name} has shape {shape}, expected ({frames}, {', '.join(map(str, tail))})"
                )
            if value.dtype != np.float32:
                raise MotionFormatError(f"{name} is {value.dtype}, expected float32")

    @property
    def num_frames(self) -> int:
        return int(self.scale.shape[0])

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any]) -> MotionSequence:
        """From a mapping with the six fields (``exp`` may be (F, 63)); values are cast to float32."""
        missing = [name for name in FIELDS if name not in arrays]
        if missing:
            raise MotionFormatError(f"motion lacks {', '.join(missing)}")
        values = {name: np.asarray(arrays[name], dtype=np.float32) for name in FIELDS}
        frames = values["scale"].shape[0] if values["scale"].ndim else 0
        values["exp"] = (
            values["exp"].reshape(frames, 21, 3) if values["exp"].size == frames * 63 else values["exp"]
        )
        for name in ("scale", "pitch", "yaw", "roll"):
            if values[name].ndim == 1:
                values[name] = values[name][:, None]
        return cls(**values)

    def arrays(self) -> dict[str, FloatArray]:
        return {name: getattr(self, name) for name in FIELDS}

    def slice(self, start: int, stop: int) -> MotionSequence:
        return MotionSequence(**{name: value[start:stop].copy() for name, value in self.arrays().items()})

    @staticmethod
    def concat(parts: list[MotionSequence]) -> MotionSequence:
        if not parts:
            raise MotionFormatError("nothing to concatenate")
        return MotionSequence(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in FIELDS})


def write_motion_npz(
    target: str | Path | BinaryIO,
    motion: MotionSequence,
    fps: float,
    model: str,
    *,
    extra_arrays: dict[str, npt.NDArray[Any]] | None = None,
    **meta: Any,
) -> None:
    """Writes `motion` in the documented NPZ format (`meta` adds JSON-serialisable keys,
    `extra_arrays` more arrays beside the six, e.g. a renderer's reference frame)."""
    header = {
        "format": MOTION_FORMAT,
        "version": MOTION_FORMAT_VERSION,
        "convention": "liveportrait-kp-info",
        "fps": float(fps),
        "num_frames": motion.num_frames,
        "model": model,
        **meta,
    }
    clash = sorted(set(extra_arrays or {}) & {*FIELDS, "meta"})
    if clash:
        raise MotionFormatError(f"extra arrays may not be named {', '.join(clash)}")
    payload: dict[str, Any] = {**(extra_arrays or {}), **motion.arrays()}
    payload["meta"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    if isinstance(target, str | Path):
        with open(target, "wb") as handle:
            np.savez(handle, **payload)
    else:
        np.savez(target, **payload)


def read_motion_npz(source: str | Path | bytes | BinaryIO) -> tuple[MotionSequence, dict[str, Any]]:
    """A motion file written by `write_motion_npz` (or by anyone following the format).

    Raises:
        MotionFormatError: not an npz, wrong format/version, missing or misshapen arrays.
    """
    handle: Any = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with np.load(handle, allow_pickle=False) as archive:
            data = {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as error:
        raise MotionFormatError(f"not a motion npz: {error}") from error
    if "meta" not in data:
        raise MotionFormatError("motion npz lacks meta")
    try:
        header = json.loads(data.pop("meta").tobytes().decode())
    except (UnicodeDecodeError, ValueError) as error:
        raise MotionFormatError(f"motion npz meta is not JSON: {error}") from error
    if not isinstance(header, dict) or header.get("format") != MOTION_FORMAT:
        raise MotionFormatError(f"not a {MOTION_FORMAT} file")
    if header.get("version") != MOTION_FORMAT_VERSION:
        raise MotionFormatError(f"unsupported {MOTION_FORMAT} version {header.get('version')!r}")
    motion = MotionSequence.from_arrays(data)
    if header.get("num_frames") != motion.num_frames:
        raise MotionFormatError(
            f"meta says {header.get('num_frames')} frames, arrays hold {motion.num_frames}"
        )
    return motion, header
