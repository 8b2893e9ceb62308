"""Building the four V-Express modules and loading the published checkpoint files into them.

Published layout (``weights_dir``)::

    v-express/reference_net.bin         -> ReferenceNet          (684 tensors, fp16)
    v-express/denoising_unet.bin        -> VExpressUNet3D        (1386 tensors, motion modules included)
    v-express/motion_module.bin         -> VExpressUNet3D        (588 motion-module tensors; loaded second, wins)
    v-express/v_kps_guider.bin          -> VKpsGuider            (16 tensors)
    v-express/audio_projection.bin      -> AudioProjection       (52 tensors)
    stable-diffusion-v1-5/unet/config.json                       (the UNet hyperparameters)
    sd-vae-ft-mse/, wav2vec2-base-960h/                          (loaded by the pipeline, checked here)

Loading is strict (every file key lands in a parameter or buffer of the same shape and every parameter
and buffer is filled, else `WeightsError` listing the keys), never unpickles code
(``torch.load(weights_only=True)``), memory-maps the files and assigns the converted tensors into a
model built on the meta device, so no second copy of the weights is ever allocated.

Our converted layout (``out_dir``, made once by `convert_to_safetensors`): ``<module>.safetensors`` per
module (published dtype, motion-module values merged into the denoiser), ``unet_config.json`` and
``manifest.json`` (format name and version, module configs, tensor counts), written last.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.errors import WeightsError
from models.vexpress.audio_projection import AudioProjection
from models.vexpress.configs import vexpress_audio_projection_config, vexpress_guider_config
from models.vexpress.guider import VKpsGuider
from models.vexpress.reference_net import ReferenceNet
from models.vexpress.unet_3d import VExpressUNet3D

VEXPRESS_DIR = "v-express"
UNET_CONFIG_PATH = "stable-diffusion-v1-5/unet/config.json"
MOTION_MODULE_FILE = "motion_module.bin"

# Published file name -> the module (field of `VExpressModules`) it fills. Order = loading order.
PUBLISHED_FILES: dict[str, str] = {
    "reference_net.bin": "reference_net",
    "denoising_unet.bin": "denoising_unet",
    MOTION_MODULE_FILE: "denoising_unet",
    "v_kps_guider.bin": "v_kps_guider",
    "audio_projection.bin": "audio_projection",
}

# Models the pipeline loads itself from the same directory: (folder, config file, weight file choices).
EXTERNAL_MODELS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("sd-vae-ft-mse", "config.json", ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")),
    ("wav2vec2-base-960h", "config.json", ("model.safetensors", "pytorch_model.bin")),
)

CONVERTED_FORMAT = "parla-vexpress"
CONVERTED_FORMAT_VERSION = 1
CONVERTED_MANIFEST = "manifest.json"
CONVERTED_UNET_CONFIG = "unet_config.json"

_MAX_KEYS_LISTED = 20


@dataclass
class VExpressModules:
    """The four V-Express modules; field names are the published files' stems."""

    reference_net: ReferenceNet
    denoising_unet: VExpressUNet3D
    v_kps_guider: VKpsGuider
    audio_projection: AudioProjection

    def items(self) -> Iterator[tuple[str, nn.Module]]:
        for field in fields(self):
            yield field.name, getattr(self, field.name)


def build_modules(
    unet_config: Mapping[str, Any],
    *,
    guider_config: Mapping[str, Any] | None = None,
    audio_projection_config: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> VExpressModules:
    """Builds the four modules with random initial weights, in eval mode without gradients.

    Args:
        unet_config: A diffusers UNet config (SD1.5's, or `tiny_unet_config()` for tests).
        guider_config: `VKpsGuider` kwargs; V-Express's by default.
        audio_projection_config: `AudioProjection` kwargs; V-Express's by default.
        device: Where to allocate; ``"meta"`` builds the structure without memory (for loading or checks).
        dtype: Parameter dtype.

    Raises:
        ValueError: from the modules' config validation.
    """
    with torch.device(device):
        modules = VExpressModules(
            reference_net=ReferenceNet.from_unet_config(unet_config),
            denoising_unet=VExpressUNet3D.from_unet_config(unet_config),
            v_kps_guider=VKpsGuider(**(guider_config or vexpress_guider_config())),
            audio_projection=AudioProjection(
                **(audio_projection_config or vexpress_audio_projection_config())
            ),
        )
    for _, module in modules.items():
        if dtype != torch.float32:
            # nn.Module.to: diffusers' ModelMixin.to logs a spurious fp32-modules warning for any dtype.
            nn.Module.to(module, dtype=dtype)
        module.eval().requires_grad_(False)
    return modules


def missing_files(weights_dir: Path, *, include_external: bool = False) -> list[str]:
    """Paths (relative to `weights_dir`) that `load_published` needs and that are absent; empty when
    complete: the five ``v-express/*.bin`` files and ``stable-diffusion-v1-5/unet/config.json``.

    With `include_external`, the VAE and wav2vec2 folders the pipeline loads are checked too (their
    ``config.json`` and one weights file, named ``a|b`` when either would do).
    """
    weights_dir = Path(weights_dir)
    missing = [
        f"{VEXPRESS_DIR}/{name}"
        for name in PUBLISHED_FILES
        if not (weights_dir / VEXPRESS_DIR / name).is_file()
    ]
    if not (weights_dir / UNET_CONFIG_PATH).is_file():
        missing.append(UNET_CONFIG_PATH)
    if include_external:
        for folder, config_name, weight_names in EXTERNAL_MODELS:
            if not (weights_dir / folder / config_name).is_file():
                missing.append(f"{folder}/{config_name}")
            if not any((weights_dir / folder / name).is_file() for name in weight_names):
                missing.append("|".join(f"{folder}/{name}" for name in weight_names))
    return missing


def load_published(
    weights_dir: Path,
    *,
    unet_config: Mapping[str, Any] | None = None,
    guider_config: Mapping[str, Any] | None = None,
    audio_projection_config: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> VExpressModules:
    """Loads the published ``v-express/*.bin`` files strictly into freshly built modules.

    Args:
        weights_dir: A directory in the published layout (see the module docstring).
        unet_config: Defaults to ``stable-diffusion-v1-5/unet/config.json`` in `weights_dir`.
        guider_config, audio_projection_config: Defaults: V-Express's (what the published files hold).
        device, dtype: Where and in which dtype the modules end up (the files are fp16).

    Raises:
        WeightsError: a file is missing or unreadable, or its keys/shapes do not match the module.
    """
    weights_dir = Path(weights_dir)
    missing = missing_files(weights_dir)
    if unet_config is not None:
        missing = [path for path in missing if path != UNET_CONFIG_PATH]
    if missing:
        raise WeightsError(f"{weights_dir} lacks {', '.join(missing)}")
    if unet_config is None:
        unet_config = _read_json(weights_dir / UNET_CONFIG_PATH)
    modules = _build_for_loading(unet_config, guider_config, audio_projection_config, dtype)
    for _, module, state in _published_states(weights_dir, modules):
        _assign(module, state, device, dtype)
        del state
    return modules


def save_published(
    modules: VExpressModules,
    weights_dir: Path,
    unet_config: Mapping[str, Any],
    *,
    dtype: torch.dtype = torch.float16,
) -> None:
    """Writes `modules` in the published layout, as V-Express's train.py saves them (whole state dicts,
    plus the motion-module subset; fp16 by default). Used to make test fixtures and random full-size
    checkpoints; the external VAE/wav2vec2 folders are not written."""
    folder = Path(weights_dir) / VEXPRESS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for file, target in PUBLISHED_FILES.items():
        module = getattr(modules, target)
        state = {
            key: tensor.detach().to(device="cpu", dtype=dtype).clone()
            for key, tensor in module.state_dict().items()
        }
        if file == MOTION_MODULE_FILE:
            state = {key: tensor for key, tensor in state.items() if "motion_module" in key}
        torch.save(state, folder / file)
    config_path = Path(weights_dir) / UNET_CONFIG_PATH
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(json.dumps(dict(unet_config), indent=2))


def convert_to_safetensors(
    weights_dir: Path,
    out_dir: Path,
    *,
    guider_config: Mapping[str, Any] | None = None,
    audio_projection_config: Mapping[str, Any] | None = None,
) -> None:
    """One-time conversion of the published files into our layout (see the module docstring).

    The files are checked as strictly as by `load_published`; tensors keep their stored dtype. The
    manifest is written last, so an interrupted conversion is never mistaken for a complete one.

    Raises:
        WeightsError: as `load_published`.
    """
    from safetensors.torch import save_file

    weights_dir, out_dir = Path(weights_dir), Path(out_dir)
    missing = missing_files(weights_dir)
    if missing:
        raise WeightsError(f"{weights_dir} lacks {', '.join(missing)}")
    unet_config = _read_json(weights_dir / UNET_CONFIG_PATH)
    modules = _build_for_loading(unet_config, guider_config, audio_projection_config, torch.float32)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CONVERTED_MANIFEST).unlink(missing_ok=True)
    manifest: dict[str, Any] = {
        "format": CONVERTED_FORMAT,
        "format_version": CONVERTED_FORMAT_VERSION,
        "source": f"published V-Express files: {', '.join(PUBLISHED_FILES)}",
        "unet_config": CONVERTED_UNET_CONFIG,
        "modules": {},
    }
    for name, module, state in _published_states(weights_dir, modules):
        target = out_dir / f"{name}.safetensors"
        partial = target.with_suffix(".safetensors.partial")
        save_file(_unshared(state), str(partial), metadata={"format": CONVERTED_FORMAT, "module": name})
        os.replace(partial, target)
        target.chmod(0o644)  # safetensors writes 0600; workers may run as another user than the converter
        dtypes = sorted({str(tensor.dtype).removeprefix("torch.") for tensor in state.values()})
        manifest["modules"][name] = {
            "file": target.name,
            "class": type(module).__name__,
            "config": _plain_config(module),
            "tensors": len(state),
            "dtypes": dtypes,
        }
        del state
    (out_dir / CONVERTED_UNET_CONFIG).write_text(json.dumps(dict(unet_config), indent=2))
    partial_manifest = out_dir / (CONVERTED_MANIFEST + ".partial")
    partial_manifest.write_text(json.dumps(manifest, indent=2))
    os.replace(partial_manifest, out_dir / CONVERTED_MANIFEST)


def load_converted(
    out_dir: Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> VExpressModules:
    """Loads modules from `convert_to_safetensors`' output (memory-mapped, strict).

    Raises:
        WeightsError: no or unknown manifest, missing file, or key/shape mismatch.
    """
    from safetensors import safe_open

    out_dir = Path(out_dir)
    manifest_path = out_dir / CONVERTED_MANIFEST
    if not manifest_path.is_file():
        raise WeightsError(f"{out_dir} has no {CONVERTED_MANIFEST}: not a converted V-Express directory")
    manifest = _read_json(manifest_path)
    if (
        manifest.get("format") != CONVERTED_FORMAT
        or manifest.get("format_version") != CONVERTED_FORMAT_VERSION
    ):
        raise WeightsError(
            f"{manifest_path}: format {manifest.get('format')!r} version {manifest.get('format_version')!r}, "
            f"expected {CONVERTED_FORMAT!r} version {CONVERTED_FORMAT_VERSION}"
        )
    unet_config = _read_json(out_dir / manifest["unet_config"])
    entries = manifest["modules"]
    modules = _build_for_loading(
        unet_config, entries["v_kps_guider"]["config"], entries["audio_projection"]["config"], dtype
    )
    open_device = "cpu" if torch.device(device).type == "meta" else str(torch.device(device))
    for name, module in modules.items():
        path = out_dir / entries[name]["file"]
        if not path.is_file():
            raise WeightsError(f"{out_dir} lacks {path.name}")
        with safe_open(str(path), framework="pt", device=open_device) as handle:
            shapes = {key: torch.Size(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
            check_keys(module, shapes, path.name)
            state = {key: handle.get_tensor(key) for key in shapes}
        _assign(module, state, device, dtype)
        del state
    return modules


def assert_materialized(module: nn.Module, label: str) -> None:
    """Raises `WeightsError` if any parameter or buffer of `module` is still on the meta device."""
    on_meta = [
        name for name, tensor in (*module.named_parameters(), *module.named_buffers()) if tensor.is_meta
    ]
    if on_meta:
        raise WeightsError(
            f"{label}: {len(on_meta)} tensors left unfilled on the meta device: {_listing(on_meta)}"
        )


def _published_states(
    weights_dir: Path, modules: VExpressModules
) -> Iterator[tuple[str, nn.Module, dict[str, Any]]]:
    """Each module (name, module) with its checked state dict from the published files, one at a time."""
    folder = weights_dir / VEXPRESS_DIR
    for name, module in modules.items():
        files = [file for file, target in PUBLISHED_FILES.items() if target == name]
        state = _read_bin(folder / files[0])
        check_keys(module, state, f"{VEXPRESS_DIR}/{files[0]}")
        for extra_file in files[1:]:
            # motion_module.bin: exactly the motion-module keys; its values replace the full file's.
            extra = _read_bin(folder / extra_file)
            check_keys(module, extra, f"{VEXPRESS_DIR}/{extra_file}", only=lambda key: "motion_module" in key)
            state.update(extra)
            del extra
        yield name, module, state


def _build_for_loading(
    unet_config: Mapping[str, Any],
    guider_config: Mapping[str, Any] | None,
    audio_projection_config: Mapping[str, Any] | None,
    dtype: torch.dtype,
) -> VExpressModules:
    try:
        return build_modules(
            unet_config,
            guider_config=guider_config,
            audio_projection_config=audio_projection_config,
            device="meta",
            dtype=dtype,
        )
    except ValueError as error:
        raise WeightsError(f"invalid module configuration: {error}") from error


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise WeightsError(f"cannot read {path}: {error}") from error
    if not isinstance(data, dict):
        raise WeightsError(f"{path} is not a JSON object")
    return data


def _read_bin(path: Path) -> dict[str, Any]:
    """The state dict in a published ``.bin``, memory-mapped; never runs pickled code."""
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
    only: Any = None,
) -> None:
    """Strict comparison of a file's keys and shapes with `module`'s state dict.

    Args:
        module: The target (may be on the meta device).
        state: Key -> tensor, or key -> `torch.Size` (shapes read without loading the data).
        label: Names the file in the error.
        only: Predicate restricting the expected keys (``motion_module.bin`` holds the motion keys only).

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


def _shape(value: torch.Tensor | torch.Size) -> torch.Size:
    return value if isinstance(value, torch.Size) else value.shape


def _assign(module: nn.Module, state: dict[str, Any], device: str | torch.device, dtype: torch.dtype) -> None:
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
