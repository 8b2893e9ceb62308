"""Strict checkpoint loading for modules built on the meta device, and our safetensors layout.

An engine describes its published files (which file fills which module, and which keys a partial file
holds) and builds its modules on the meta device; these functions do the rest the same way for every
engine:

- reading never unpickles code (``torch.load(weights_only=True)``) and memory-maps the files;
- every key is accounted for: each file key lands in a parameter or buffer of the same shape and every
  parameter and buffer is filled, else `WeightsError` listing the keys (`check_keys`);
- the checked tensors are converted once and assigned into the meta-built module, so no second copy of
  the weights is ever allocated (`assign`);
- the converted layout is one ``<module>.safetensors`` per module, each written atomically, and a
  manifest (format name and version, module classes and configs, tensor counts) written last, so an
  interrupted conversion is never mistaken for a complete one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from core.errors import WeightsError

KeyFilter = Callable[[str], bool]
"""Selects the keys a partial file holds (e.g. `is_motion_module_key`)."""

StateSource = tuple[Path, str, KeyFilter | None]
"""A published file for one module: its path, the name errors give it, and the keys it holds (None: all)."""

_MAX_KEYS_LISTED = 20
_Built = TypeVar("_Built")


def is_motion_module_key(key: str) -> bool:
    """Whether `key` belongs to a motion module (what an AnimateDiff-style motion-module file holds)."""
    return "motion_module" in key


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; `WeightsError` if it is unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise WeightsError(f"cannot read {path}: {error}") from error
    if not isinstance(data, dict):
        raise WeightsError(f"{path} is not a JSON object")
    return data


def read_bin(path: Path) -> dict[str, Any]:
    """The state dict in a pickled ``.bin``/``.pth``, memory-mapped; never runs pickled code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, ... for bad files
        raise WeightsError(f"cannot load {path} as a plain tensor state dict: {error}") from error
    if not isinstance(state, Mapping):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state dict")
    return dict(state)


def check_keys(
    module: nn.Module,
    state: Mapping[str, Any],
    label: str,
    only: KeyFilter | None = None,
) -> None:
    """Strict comparison of a file's keys and shapes with `module`'s state dict.

    Args:
        module: The target (may be on the meta device).
        state: Key -> tensor, or key -> `torch.Size` (shapes read without loading the data).
        label: Names the file in the error.
        only: Predicate restricting the expected keys (a partial file, e.g. a motion-module file).

    Raises:
        WeightsError: listing missing keys, unexpected keys, non-tensor values and shape mismatches.
    """
    expected = {key: tensor.shape for key, tensor in module.state_dict().items() if only is None or only(key)}
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    wrong_type = [key for key, value in state.items() if not isinstance(value, torch.Tensor | torch.Size)]
    mismatched = [
        f"{key} (file {tuple(_shape(state[key]))}, model {tuple(shape)})"
        for key, shape in expected.items()
        if key in state and key not in wrong_type and _shape(state[key]) != shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}")
    if wrong_type:
        problems.append(f"{len(wrong_type)} values that are not tensors: {_listing(wrong_type)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {_listing(mismatched)}")
    if problems:
        raise WeightsError(f"{label} does not match {type(module).__name__}: " + "; ".join(problems))


def read_checked_state(module: nn.Module, sources: Sequence[StateSource]) -> dict[str, Any]:
    """`module`'s state dict from its published files, each read (`read_bin`) and checked (`check_keys`)
    against the keys it must hold; a later file's values replace an earlier one's."""
    state: dict[str, Any] = {}
    for path, label, only in sources:
        part = read_bin(path)
        check_keys(module, part, label, only=only)
        state.update(part)
        del part
    return state


def build_on_meta(build: Callable[[], _Built]) -> _Built:
    """Runs `build` (which builds modules on the meta device); its `ValueError` becomes a `WeightsError`."""
    try:
        return build()
    except ValueError as error:
        raise WeightsError(f"invalid module configuration: {error}") from error


def assign(module: nn.Module, state: dict[str, Any], device: str | torch.device, dtype: torch.dtype) -> None:
    """Moves `state` into `module` (built on meta) without keeping a second copy: each tensor is
    converted once and the memory-mapped original dropped, then the result is assigned, not copied."""
    converted: dict[str, torch.Tensor] = {}
    for key in list(state):
        tensor = state.pop(key)
        converted[key] = tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else tensor.dtype)
    module.load_state_dict(converted, strict=True, assign=True)
    module.eval().requires_grad_(False)
    if torch.device(device).type != "meta":
        assert_materialized(module, type(module).__name__)


def assert_materialized(module: nn.Module, label: str) -> None:
    """Raises `WeightsError` if any parameter or buffer of `module` is still on the meta device."""
    on_meta = [
        name for name, tensor in (*module.named_parameters(), *module.named_buffers()) if tensor.is_meta
    ]
    if on_meta:
        raise WeightsError(
            f"{label}: {len(on_meta)} tensors left unfilled on the meta device: {_listing(on_meta)}"
        )


def save_safetensors(
    module: nn.Module, state: dict[str, torch.Tensor], target: Path, fmt: str, name: str
) -> dict[str, Any]:
    """Writes `state` (checked for `module`) to `target` atomically; returns its manifest entry
    (``file``, ``class``, ``config``, ``tensors``, ``dtypes``)."""
    from safetensors.torch import save_file

    partial = target.with_suffix(".safetensors.partial")
    save_file(_unshared(state), str(partial), metadata={"format": fmt, "module": name})
    os.replace(partial, target)
    target.chmod(0o644)  # safetensors writes 0600; workers may run as another user than the converter
    return {
        "file": target.name,
        "class": type(module).__name__,
        "config": _plain_config(module),
        "tensors": len(state),
        "dtypes": sorted({str(tensor.dtype).removeprefix("torch.") for tensor in state.values()}),
    }


def write_manifest(out_dir: Path, name: str, manifest: Mapping[str, Any]) -> None:
    """Writes the manifest atomically; call it last, after every file it lists."""
    partial = out_dir / (name + ".partial")
    partial.write_text(json.dumps(manifest, indent=2))
    os.replace(partial, out_dir / name)


def read_manifest(out_dir: Path, name: str, fmt: str, version: int) -> dict[str, Any]:
    """The manifest of a converted directory, checked to be of format `fmt` at `version`.

    Raises:
        WeightsError: no manifest (an incomplete or foreign directory), or another format or version.
    """
    path = out_dir / name
    if not path.is_file():
        raise WeightsError(f"{out_dir} has no {name}: not a converted {fmt} directory")
    manifest = read_json(path)
    if manifest.get("format") != fmt or manifest.get("format_version") != version:
        raise WeightsError(
            f"{path}: format {manifest.get('format')!r} version {manifest.get('format_version')!r}, "
            f"expected {fmt!r} version {version}"
        )
    return manifest


def load_safetensors(module: nn.Module, path: Path, device: str | torch.device, dtype: torch.dtype) -> None:
    """Fills `module` (built on meta) from one safetensors file, memory-mapped and strictly checked.

    Raises:
        WeightsError: the file is missing, or its keys/shapes do not match.
    """
    from safetensors import safe_open

    if not path.is_file():
        raise WeightsError(f"{path.parent} lacks {path.name}")
    open_device = "cpu" if torch.device(device).type == "meta" else str(torch.device(device))
    with safe_open(str(path), framework="pt", device=open_device) as handle:
        shapes = {key: torch.Size(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
        check_keys(module, shapes, path.name)
        state = {key: handle.get_tensor(key) for key in shapes}
    assign(module, state, device, dtype)


def _shape(value: torch.Tensor | torch.Size) -> torch.Size:
    return value if isinstance(value, torch.Size) else value.shape


def _unshared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share storage; published files have none, but be safe.
    seen: set[int] = set()
    result = {}
    for key, tensor in state.items():
        pointer = tensor.untyped_storage().data_ptr()
        result[key] = tensor.contiguous() if pointer not in seen else tensor.clone()
        seen.add(pointer)
    return result


def _plain_config(module: nn.Module) -> dict[str, Any]:
    config = getattr(module, "config", {})
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in config.items()
        if not key.startswith("_")
    }


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_KEYS_LISTED])
    return shown + (f", ... ({len(keys) - _MAX_KEYS_LISTED} more)" if len(keys) > _MAX_KEYS_LISTED else "")
