"""The engine seam: the small interface every renderer offers to the chunk runner.

The runner (``worker/runner.py``) never knows which model it drives. It calls, in order:

1. ``prepare(inputs, params)`` once per job, ``params.options`` being the engine's own typed
   options (also again when a job resumes after a crash: it must be deterministic, so that a
   resumed job sees the same prepared state);
2. ``plan(prepared)`` to get the chunks, contiguous frame ranges covering ``[0, prepared.num_frames)``;
3. ``render_chunk(prepared, chunk, carry)`` for each chunk in order, handing over the ``ChunkCarry``
   the previous chunk returned (``None`` for the first chunk). The runner stores every carry, so a
   resumed job calls ``render_chunk`` for chunk ``k`` with the carry that chunk ``k-1`` returned in
   an earlier process. Rendering in chunks with carries must give the same frames as an
   uninterrupted run. The runner stores chunk ``k`` on another thread while ``k + 1`` renders:
   the frames returned must not be buffers the engine reuses for the next chunk.

A job may ask for outputs besides the video (``RenderParams.outputs``, e.g. ``motion`` or
``landmarks``; an engine lists those it makes in its registry ``Capabilities.outputs``). Such an
engine also implements ``OutputEngine``: the runner then calls ``render_chunk_outputs`` instead of
``render_chunk`` and stores each chunk's arrays beside its segment, and when the last chunk is done
calls ``write_output`` once per extra output with the chunks' arrays joined along axis 0 (memory
mapped from disk) and a file to write the output into.

Engines are generic over their prepared state and their options model (``models.options``); the
registry (``models.registry``) names each engine's options, capabilities and constructor. This
module depends on numpy, pydantic and ``core.jobs`` only, so that the API process can import it without torch.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Generic, Literal, Protocol, TypeVar, runtime_checkable

import numpy as np
import numpy.typing as npt

from core.jobs import OutputName
from models.options import OptionsT

Frames = npt.NDArray[np.uint8]
"""Rendered frames, uint8 RGB, shape ``(F, H, W, 3)``."""

FEATURE_SAMPLE_RATE = 16_000
"""Sample rate of ``RenderInputs.audio`` (what wav2vec2 and the warp engine's features expect)."""


def num_frames_for(duration_s: float, fps: float) -> int:
    """Number of video frames for ``duration_s`` seconds of audio: ``round(duration * fps)``, >= 1."""
    return max(1, round(duration_s * fps))


@dataclass(frozen=True)
class RenderInputs:
    """What a job gives an engine.

    Attributes:
        image: the portrait, uint8 RGB ``(H, W, 3)``, already EXIF-oriented.
        audio: the speech, float32 mono samples in [-1, 1] at ``sample_rate`` Hz.
        sample_rate: sample rate of ``audio``; always ``FEATURE_SAMPLE_RATE`` from the runner.
        driving_video: optional encoded video (bytes of an MP4/WebM/...) whose head motion drives
            the portrait, for engines that support it.
    """

    image: npt.NDArray[np.uint8]
    audio: npt.NDArray[np.float32]
    sample_rate: int = FEATURE_SAMPLE_RATE
    driving_video: bytes | None = None

    @property
    def duration_s(self) -> float:
        return float(len(self.audio)) / float(self.sample_rate)


Framing = Literal["crop", "full"]

ChunkOutputs = dict[str, dict[str, npt.NDArray[Any]]]
"""One chunk's part of the extra outputs: output name -> named arrays whose axis 0 is the chunk's
frames (``chunk.num_frames`` rows). The runner joins a name's arrays over the chunks in order."""


@dataclass(frozen=True)
class RenderParams(Generic[OptionsT]):
    """Render options of one job: the common ones, and the engine's own (``options``).

    Attributes:
        options: the engine's options (its ``Engine.options_model``), validated, defaults filled in.
        fps: frames per second of the output.
        size: side of the square face crop, pixels.
        seed: random seed of the job.
        framing: ``crop`` (square video of the face) or ``full`` (pasted back into the photo).
        face_index: which face to animate (largest first); None for the largest.
        outputs: what the job produces, ``video`` first (validated against the engine's
            ``Capabilities.outputs`` at submit).
    """

    options: OptionsT
    fps: float = 25.0
    size: int = 512
    seed: int = 0
    framing: Framing = "crop"
    face_index: int | None = None
    outputs: tuple[OutputName, ...] = ("video",)


COMMON_PARAMS = ("fps", "size", "seed", "framing", "face_index", "outputs")


def make_params(options_model: type[OptionsT], **values: Any) -> RenderParams[OptionsT]:
    """``RenderParams`` from flat values: the common ones, the rest validated as ``options_model``.

    For tests, benchmarks and scripts; raises pydantic's ``ValidationError`` for refused options.
    """
    common = {name: values.pop(name) for name in COMMON_PARAMS if name in values}
    return RenderParams(options_model.model_validate(values), **common)


@dataclass(frozen=True)
class ChunkSpec:
    """One chunk of output frames: frames ``start`` (inclusive) to ``stop`` (exclusive)."""

    index: int
    start: int
    stop: int

    @property
    def num_frames(self) -> int:
        return self.stop - self.start


@dataclass
class ChunkCarry:
    """Continuity state handed from one chunk to the next; serialises to bytes without pickle.

    Attributes:
        arrays: numeric state (latents, smoothing filters, RNG state as uint8, ...). Numpy has no
            bfloat16: store such tensors as float32.
        meta: small JSON-serialisable values (counters, floats, strings).
    """

    arrays: dict[str, npt.NDArray[Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        payload: dict[str, npt.NDArray[Any]] = {
            f"a.{k}": np.ascontiguousarray(v) for k, v in self.arrays.items()
        }
        payload["meta"] = np.frombuffer(json.dumps(self.meta).encode(), dtype=np.uint8)
        np.savez(buffer, **payload)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ChunkCarry:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {k[2:]: archive[k] for k in archive.files if k.startswith("a.")}
            meta = json.loads(archive["meta"].tobytes().decode())
        return cls(arrays=arrays, meta=meta)


class Prepared(Protocol):
    """Per-job state computed once by ``Engine.prepare`` and read by every chunk.

    Engines return their own class; the runner reads only these attributes.
    """

    num_frames: int
    fps: float
    height: int
    width: int


PreparedT = TypeVar("PreparedT", bound=Prepared)


class Engine(Protocol[PreparedT, OptionsT]):
    """A renderer, generic over its prepared state and its options model.

    ``options_model`` is the ``models.options.EngineOptions`` subclass of the job options this
    engine reads (also named by its ``models.registry.EngineSpec``, which the API reads without
    importing the engine).
    """

    name: str
    options_model: type[OptionsT]

    def warmup(self) -> None:
        """Run a tiny render once so that the first job does not pay for lazy initialisation."""

    def prepare(self, inputs: RenderInputs, params: RenderParams[OptionsT]) -> PreparedT: ...

    def plan(self, prepared: PreparedT) -> list[ChunkSpec]: ...

    def render_chunk(
        self, prepared: PreparedT, chunk: ChunkSpec, carry: ChunkCarry | None
    ) -> tuple[Frames, ChunkCarry]: ...


@runtime_checkable
class OutputEngine(Engine[PreparedT, OptionsT], Protocol[PreparedT, OptionsT]):
    """An engine that can make outputs besides the video (its ``Capabilities.outputs``)."""

    def render_chunk_outputs(
        self, prepared: PreparedT, chunk: ChunkSpec, carry: ChunkCarry | None, outputs: frozenset[str]
    ) -> tuple[Frames, ChunkCarry, ChunkOutputs]:
        """``render_chunk``, plus this chunk's arrays of every output in ``outputs`` (not ``video``).

        The frames and carry must equal ``render_chunk``'s for the same arguments.
        """
        ...

    def write_output(
        self, prepared: PreparedT, name: str, arrays: dict[str, npt.NDArray[Any]], target: BinaryIO
    ) -> None:
        """Write the file of output ``name`` into ``target`` from all chunks' arrays joined (axis 0 =
        every frame; read-only memory-mapped arrays: read them, do not copy them whole needlessly)."""
        ...


AnyEngine = Engine[Any, Any]
"""An engine whose prepared state and options are not known statically (the runner's view)."""


def even_chunks(num_frames: int, chunk_frames: int) -> list[ChunkSpec]:
    """Split ``[0, num_frames)`` into consecutive chunks of ``chunk_frames`` (the last may be shorter)."""
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    return [
        ChunkSpec(index=i, start=start, stop=min(start + chunk_frames, num_frames))
        for i, start in enumerate(range(0, num_frames, chunk_frames))
    ]
