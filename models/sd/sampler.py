"""The chunked sampler's schedule: windows, chunks, and the carry that continues a clip across chunks.

Two ways to render a clip longer than one window (``SDVideoPipeline`` runs both):

- ``motion_frames``: windows one after another; window ``k > 0`` starts with the last
  ``motion_frames`` frames of window ``k - 1``, held to their known latents. One chunk per window;
  the ``ChunkCarry`` between chunks holds those latents and the noise generator's state, so a
  resumed job reproduces an uninterrupted one exactly and memory does not depend on the clip length.
- ``overlap_average``: every step, the prediction of overlapping windows is averaged over the whole
  clip (V-Express's reference schedule); it needs the whole clip's latents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch

from core.errors import EngineFailure
from models.engine import ChunkCarry, ChunkSpec

Continuity = Literal["motion_frames", "overlap_average"]


def check_window_options(context_frames: int, motion_frames: int, max_context_frames: int = 32) -> None:
    """Raise ``ValueError`` unless ``0 <= motion_frames < context_frames <= max_context_frames``.

    ``max_context_frames`` is the motion modules' position-encoding length (32 in V-Express).
    """
    if not 1 <= context_frames <= max_context_frames:
        raise ValueError(f"context_frames must be in [1, {max_context_frames}], got {context_frames}")
    if not 0 <= motion_frames < context_frames:
        raise ValueError(
            f"motion_frames must be >= 0 and < context_frames ({context_frames}), got {motion_frames}"
        )


def motion_frame_windows(num_frames: int, context_frames: int, motion_frames: int) -> list[tuple[int, int]]:
    """Windows ``[start, stop)`` of the motion-frames schedule, one per chunk.

    The first window is frames ``[0, context_frames)``; each later one starts ``motion_frames``
    before the end of the previous one and adds up to ``context_frames - motion_frames`` new frames
    (the last may add fewer). New frames of window ``k > 0`` are ``[start + motion_frames, stop)``.
    """
    windows = [(0, min(context_frames, num_frames))]
    while windows[-1][1] < num_frames:
        start = windows[-1][1] - motion_frames
        windows.append((start, min(start + context_frames, num_frames)))
    return windows


def overlap_windows(num_frames: int, context_frames: int, motion_frames: int) -> list[tuple[int, int]]:
    """Windows ``[start, stop)`` of the reference's overlap-average schedule.

    Windows of ``context_frames`` at a stride of ``context_frames - motion_frames``. The reference
    trims the clip so that the last window ends on the last frame; we keep every frame and, when the
    stride does not land there, add one last window ending on the last frame (more overlap there).
    A clip of at most ``context_frames`` frames is one window.
    """
    if num_frames <= context_frames:
        return [(0, num_frames)]
    stride = context_frames - motion_frames
    windows = [(start, start + context_frames) for start in range(0, num_frames - context_frames + 1, stride)]
    if windows[-1][1] < num_frames:
        windows.append((num_frames - context_frames, num_frames))
    return windows


def as_uint8_state(generator: torch.Generator) -> npt.NDArray[np.uint8]:
    """A CPU generator's state as a uint8 numpy array (what ``ChunkCarry`` stores)."""
    state: torch.Tensor = generator.get_state()
    return state.numpy().copy()


def generator_from_state(state: npt.NDArray[np.uint8]) -> torch.Generator:
    """A CPU generator restored from ``as_uint8_state``."""
    generator = torch.Generator()
    generator.set_state(torch.from_numpy(np.ascontiguousarray(state, dtype=np.uint8)))
    return generator


@dataclass(frozen=True)
class ChunkSchedule:
    """How one clip is cut into chunks and seeded: the motion-frames windows of `num_frames` frames.

    Both continuity modes render the same chunks (the new frames of each window), so the runner's
    plan does not depend on the mode.
    """

    num_frames: int
    context_frames: int
    motion_frames: int
    seed: int

    def windows(self) -> list[tuple[int, int]]:
        return motion_frame_windows(self.num_frames, self.context_frames, self.motion_frames)

    def plan(self) -> list[ChunkSpec]:
        """One chunk per window: the window's new frames."""
        return [
            ChunkSpec(index=index, start=start if index == 0 else start + self.motion_frames, stop=stop)
            for index, (start, stop) in enumerate(self.windows())
        ]

    def start_chunk(
        self, chunk: ChunkSpec, carry: ChunkCarry | None
    ) -> tuple[tuple[int, int], torch.Generator, torch.Tensor | None]:
        """What chunk `chunk` starts from: its window, the noise generator (seeded for chunk 0, else
        restored from `carry`) and the motion latents ``(1, C, M, h, w)`` float32 from `carry` (None for
        chunk 0 or without motion frames).

        Raises:
            EngineFailure: the chunk is not in the plan, or a later chunk comes without its carry.
        """
        windows = self.windows()
        if not 0 <= chunk.index < len(windows):
            raise EngineFailure(f"chunk {chunk.index} is not in this job's plan of {len(windows)} chunks")
        start, stop = windows[chunk.index]
        motion_latents = None
        if chunk.index == 0:
            generator = torch.Generator().manual_seed(self.seed)
        else:
            if carry is None:
                raise EngineFailure(f"chunk {chunk.index} needs the carry of chunk {chunk.index - 1}")
            generator = generator_from_state(carry.arrays["generator_state"])
            if self.motion_frames:
                motion_latents = torch.from_numpy(carry.arrays["motion_latents"]).float()
        num_motion = 0 if motion_latents is None else self.motion_frames
        if chunk.start != start + num_motion or chunk.stop != stop:
            raise EngineFailure(f"chunk {chunk} does not match the plan's window [{start}, {stop})")
        return (start, stop), generator, motion_latents

    def carry_after(self, chunk: ChunkSpec, latents: torch.Tensor, generator: torch.Generator) -> ChunkCarry:
        """The carry chunk `chunk` hands on: the last ``motion_frames`` latents of its window
        ``(1, C, F, h, w)`` and the generator state after its draws."""
        last = latents[:, :, latents.shape[2] - self.motion_frames :]
        return ChunkCarry(
            arrays={
                "motion_latents": last.cpu().numpy().astype(np.float32),
                "generator_state": as_uint8_state(generator),
            },
            meta={"continuity": "motion_frames", "chunk_index": chunk.index, "frames_done": chunk.stop},
        )
