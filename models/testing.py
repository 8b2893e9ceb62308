"""A deterministic engine without weights or face analysis, for tests of the job machinery."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from models.engine import (
    ChunkCarry,
    ChunkSpec,
    Frames,
    RenderInputs,
    RenderParams,
    even_chunks,
    num_frames_for,
)
from models.options import EngineOptions


class PatternOptions(EngineOptions):
    """The test engine's options (it has none of its own: any option is refused)."""


@dataclass
class PatternPrepared:
    num_frames: int
    fps: float
    height: int
    width: int
    portrait: npt.NDArray[np.uint8]
    loudness: npt.NDArray[np.float32]


class PatternEngine:
    """Shows the resized portrait with a bar whose height follows the audio loudness.

    ``carry.meta["frames_rendered"]`` counts frames so far and ``carry.arrays["level"]`` holds a
    smoothed level, so the output depends on the carry exactly as a real engine's does.
    ``chunk_frames`` sets the chunk length; ``frame_delay_s`` slows rendering down for tests that
    need a job to be mid-flight; ``device`` and ``weights_dir`` (given by the worker) are ignored.
    """

    name = "test"
    options_model = PatternOptions

    def __init__(
        self,
        chunk_frames: int = 8,
        frame_delay_s: float = 0.0,
        device: str | None = None,
        weights_dir: str | Path | None = None,
    ) -> None:
        self.chunk_frames = chunk_frames
        self.frame_delay_s = frame_delay_s

    def warmup(self) -> None:
        return None

    def prepare(self, inputs: RenderInputs, params: RenderParams[PatternOptions]) -> PatternPrepared:
        from PIL import Image

        size = params.size
        portrait = np.asarray(Image.fromarray(inputs.image).resize((size, size), Image.Resampling.BILINEAR))
        num_frames = num_frames_for(inputs.duration_s, params.fps)
        samples_per_frame = inputs.sample_rate / params.fps
        loudness = np.zeros(num_frames, dtype=np.float32)
        for i in range(num_frames):
            window = inputs.audio[int(i * samples_per_frame) : int((i + 1) * samples_per_frame)]
            loudness[i] = float(np.sqrt(np.mean(window**2))) if len(window) else 0.0
        return PatternPrepared(num_frames, params.fps, size, size, portrait, loudness)

    def plan(self, prepared: PatternPrepared) -> list[ChunkSpec]:
        return even_chunks(prepared.num_frames, self.chunk_frames)

    def render_chunk(
        self, prepared: PatternPrepared, chunk: ChunkSpec, carry: ChunkCarry | None
    ) -> tuple[Frames, ChunkCarry]:
        import time

        level = float(carry.arrays["level"][0]) if carry else 0.0
        done = int(carry.meta["frames_rendered"]) if carry else 0
        if done != chunk.start:
            raise ValueError(f"carry is for frame {done}, chunk starts at {chunk.start}")
        frames = np.repeat(prepared.portrait[None], chunk.num_frames, axis=0)
        for offset, frame_index in enumerate(range(chunk.start, chunk.stop)):
            level = 0.7 * level + 0.3 * min(1.0, float(prepared.loudness[frame_index]) * 8)
            bar = int(level * prepared.height)
            frames[offset, prepared.height - bar :, : prepared.width // 16] = 255
            if self.frame_delay_s:
                time.sleep(self.frame_delay_s)
        new_carry = ChunkCarry(
            arrays={"level": np.array([level], dtype=np.float32)},
            meta={"frames_rendered": chunk.stop},
        )
        return frames, new_carry
