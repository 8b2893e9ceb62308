"""Outputs besides the video (``outputs``): checking what a job asks of its engine, the chunk
parts stored beside each segment (NPZ, no pickle), and joining them when the job ends."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from core.errors import InvalidInput
from core.storage import Storage, output_part_key
from models.engine import AnyEngine, ChunkOutputs, ChunkSpec, OutputEngine, RenderParams


def side_outputs(engine: AnyEngine, params: RenderParams[Any]) -> frozenset[str]:
    """The outputs besides the video that the job asks for, checked against what the engine makes.

    Raises:
        InvalidInput: ``invalid_params`` when the engine cannot make one (the API checks this at
            submit; a record from a deployment with another engine gets here).
    """
    wanted = frozenset(params.outputs) - {"video"}
    if wanted and not isinstance(engine, OutputEngine):
        raise InvalidInput(
            f"outputs: engine {engine.name!r} makes only the video, not {', '.join(sorted(wanted))}",
            code="invalid_params",
        )
    return wanted


def encode_part(arrays: dict[str, npt.NDArray[Any]]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def read_part(data: bytes) -> dict[str, npt.NDArray[Any]]:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def check_chunk_outputs(chunk: ChunkSpec, wanted: frozenset[str], outputs: ChunkOutputs) -> None:
    """An engine's side outputs of one chunk: exactly the wanted names, each array one row a frame."""
    if set(outputs) != wanted:
        raise RuntimeError(
            f"engine returned outputs {sorted(outputs)} for chunk {chunk}, expected {sorted(wanted)}"
        )
    for name, arrays in outputs.items():
        for key, array in arrays.items():
            if array.ndim == 0 or array.shape[0] != chunk.num_frames or array.dtype == object:
                raise RuntimeError(
                    f"engine returned {name}.{key} {array.dtype} {array.shape} for chunk {chunk}, "
                    f"expected {chunk.num_frames} rows"
                )


def join_parts(
    storage: Storage, job_id: str, name: str, chunks: list[ChunkSpec], tmp: Path
) -> dict[str, npt.NDArray[Any]]:
    """Output ``name``'s stored chunk parts joined along axis 0 into memory-mapped files in ``tmp``
    (one part in memory at a time).

    Raises:
        RuntimeError: the chunks hold different arrays, or arrays of another dtype or frame shape.
    """
    total = chunks[-1].stop - chunks[0].start
    joined: dict[str, npt.NDArray[Any]] = {}
    row = 0
    for chunk in chunks:
        part = read_part(storage.get_bytes(output_part_key(job_id, name, chunk.index)))
        if not joined:
            joined = {
                key: np.lib.format.open_memmap(  # type: ignore[no-untyped-call]
                    tmp / f"{index}.npy", mode="w+", dtype=array.dtype, shape=(total, *array.shape[1:])
                )
                for index, (key, array) in enumerate(sorted(part.items()))
            }
        if set(part) != set(joined):
            raise RuntimeError(f"the chunks of output {name!r} hold different arrays")
        for key, array in part.items():
            target = joined[key]
            if array.dtype != target.dtype or array.shape[1:] != target.shape[1:]:
                raise RuntimeError(
                    f"output {name!r}: chunk {chunk.index}'s {key} is {array.dtype} {array.shape}, "
                    f"chunk 0's {target.dtype} {target.shape[1:]} per frame"
                )
            target[row : row + chunk.num_frames] = array
        row += chunk.num_frames
    return joined
