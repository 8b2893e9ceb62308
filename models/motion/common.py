"""Pieces both motion generators share: reading plain-data pickles safely, strict state-dict loading,
the carry's RNG state, and a rotation-matrix helper.

A published config or template that is a pickle of plain data (dicts, lists, numbers, strings, numpy
arrays) is read by `read_plain_pickle`, an unpickler that admits only the few globals such data needs
(numpy's array reconstructors and dtypes) and refuses everything else: no pickled code ever runs.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from core.errors import WeightsError
from models.sd.checkpoint import assign, check_keys

# (module, name) pairs a plain-data pickle may reference: numpy arrays, scalars and dtypes.
_PLAIN_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
    }
)


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        # numpy >= 1.25 pickles dtypes as numpy.dtypes.Float32DType etc.
        allowed = (module, name) in _PLAIN_GLOBALS or (module == "numpy.dtypes" and name.endswith("DType"))
        if not allowed:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a plain-data pickle")
        return super().find_class(module, name)


def read_plain_pickle(path: Path) -> Any:
    """The plain data (dicts, lists, numbers, strings, numpy arrays) pickled in `path`.

    Raises:
        WeightsError: the file is missing, unreadable, or references any other global (code).
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise WeightsError(f"cannot read {path}: {error}") from error
    try:
        return _PlainUnpickler(io.BytesIO(data)).load()
    except Exception as error:  # UnpicklingError, EOFError, ValueError, ... for bad or unsafe files
        raise WeightsError(f"{path} is not a plain-data pickle: {error}") from error


def load_checked(
    module: nn.Module,
    state: Mapping[str, Any],
    label: str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> None:
    """Strictly fills `module` (built on meta or CPU) from `state`: every key lands in a parameter or
    buffer of the same shape and every one is filled, else `WeightsError` listing the keys."""
    check_keys(module, state, label)
    assign(module, dict(state), device, dtype)


def generator_state(generator: torch.Generator) -> npt.NDArray[np.uint8]:
    """A CPU generator's state as a numpy array (for the carry)."""
    return generator.get_state().numpy().copy()


def restore_generator(state: npt.NDArray[np.uint8]) -> torch.Generator:
    """A CPU generator in the state `generator_state` recorded."""
    generator = torch.Generator(device="cpu")
    generator.set_state(torch.from_numpy(np.ascontiguousarray(state, dtype=np.uint8)))
    return generator


def rotation_matrix(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """LivePortrait's rotation from Euler angles in degrees, transposed as its keypoint code uses it.

    Args:
        pitch, yaw, roll: (F,) or (F, 1) degrees.

    Returns:
        (F, 3, 3) matrices `R` such that keypoints rotate as ``kp @ R``.
    """
    x, y, z = (torch.deg2rad(a.reshape(-1, 1)) for a in (pitch, yaw, roll))
    ones, zeros = torch.ones_like(x), torch.zeros_like(x)
    rot_x = torch.cat([ones, zeros, zeros, zeros, x.cos(), -x.sin(), zeros, x.sin(), x.cos()], 1)
    rot_y = torch.cat([y.cos(), zeros, y.sin(), zeros, ones, zeros, -y.sin(), zeros, y.cos()], 1)
    rot_z = torch.cat([z.cos(), -z.sin(), zeros, z.sin(), z.cos(), zeros, zeros, zeros, ones], 1)
    frames = x.shape[0]
    rot = rot_z.reshape(frames, 3, 3) @ rot_y.reshape(frames, 3, 3) @ rot_x.reshape(frames, 3, 3)
    return rot.transpose(1, 2)
