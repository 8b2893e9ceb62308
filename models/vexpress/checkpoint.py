"""Building the four V-Express modules and loading the published checkpoint files into them.

Published layout (``weights_dir``)::

    v-express/reference_net.bin         -> ReferenceNet          (684 tensors, fp16)
    v-express/denoising_unet.bin        -> VExpressUNet3D        (1386 tensors, motion modules included)
    v-express/motion_module.bin         -> VExpressUNet3D        (588 motion-module tensors; loaded second, wins)
    v-express/v_kps_guider.bin          -> VKpsGuider            (16 tensors)
    v-express/audio_projection.bin      -> AudioProjection       (52 tensors)
    stable-diffusion-v1-5/unet/config.json                       (the UNet hyperparameters)
    sd-vae-ft-mse/, wav2vec2-base-960h/                          (loaded by the pipeline, checked here)

Loading is the skeleton's strict loading (``models.sd.checkpoint``): every file key lands in a parameter
or buffer of the same shape and every parameter and buffer is filled, else `WeightsError` listing the
keys; code is never unpickled (``torch.load(weights_only=True)``); the files are memory-mapped and the
converted tensors assigned into modules built on the meta device, so no second copy of the weights is
ever allocated. This module holds only V-Express's layout: which file fills which module.

Our converted layout (``out_dir``, made once by `convert_to_safetensors`): ``<module>.safetensors`` per
module (published dtype, motion-module values merged into the denoiser), ``unet_config.json`` and
``manifest.json`` (format name and version, module configs, tensor counts), written last.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.errors import WeightsError
from models.sd.checkpoint import (
    StateSource,
    assign,
    build_on_meta,
    is_motion_module_key,
    load_safetensors,
    read_checked_state,
    read_json,
    read_manifest,
    save_safetensors,
    write_manifest,
)
from models.sd.reference_net import ReferenceNet
from models.vexpress.audio_projection import AudioProjection
from models.vexpress.configs import vexpress_audio_projection_config, vexpress_guider_config
from models.vexpress.guider import VKpsGuider
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
        unet_config = read_json(weights_dir / UNET_CONFIG_PATH)
    modules = _build_for_loading(unet_config, guider_config, audio_projection_config, dtype)
    for _, module, state in _published_states(weights_dir, modules):
        assign(module, state, device, dtype)
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
            state = {key: tensor for key, tensor in state.items() if is_motion_module_key(key)}
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
    weights_dir, out_dir = Path(weights_dir), Path(out_dir)
    missing = missing_files(weights_dir)
    if missing:
        raise WeightsError(f"{weights_dir} lacks {', '.join(missing)}")
    unet_config = read_json(weights_dir / UNET_CONFIG_PATH)
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
        manifest["modules"][name] = save_safetensors(module, state, target, CONVERTED_FORMAT, name)
        del state
    (out_dir / CONVERTED_UNET_CONFIG).write_text(json.dumps(dict(unet_config), indent=2))
    write_manifest(out_dir, CONVERTED_MANIFEST, manifest)


def load_converted(
    out_dir: Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> VExpressModules:
    """Loads modules from `convert_to_safetensors`' output (memory-mapped, strict).

    Raises:
        WeightsError: no or unknown manifest, missing file, or key/shape mismatch.
    """
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir, CONVERTED_MANIFEST, CONVERTED_FORMAT, CONVERTED_FORMAT_VERSION)
    unet_config = read_json(out_dir / manifest["unet_config"])
    entries = manifest["modules"]
    modules = _build_for_loading(
        unet_config, entries["v_kps_guider"]["config"], entries["audio_projection"]["config"], dtype
    )
    for name, module in modules.items():
        load_safetensors(module, out_dir / entries[name]["file"], device, dtype)
    return modules


def _published_states(
    weights_dir: Path, modules: VExpressModules
) -> Iterator[tuple[str, nn.Module, dict[str, Any]]]:
    """Each module (name, module) with its checked state dict from the published files, one at a time.
    ``motion_module.bin`` holds exactly the motion-module keys; its values replace the full file's."""
    folder = weights_dir / VEXPRESS_DIR
    for name, module in modules.items():
        sources: list[StateSource] = [
            (
                folder / file,
                f"{VEXPRESS_DIR}/{file}",
                is_motion_module_key if file == MOTION_MODULE_FILE else None,
            )
            for file, target in PUBLISHED_FILES.items()
            if target == name
        ]
        yield name, module, read_checked_state(module, sources)


def _build_for_loading(
    unet_config: Mapping[str, Any],
    guider_config: Mapping[str, Any] | None,
    audio_projection_config: Mapping[str, Any] | None,
    dtype: torch.dtype,
) -> VExpressModules:
    return build_on_meta(
        lambda: build_modules(
            unet_config,
            guider_config=guider_config,
            audio_projection_config=audio_projection_config,
            device="meta",
            dtype=dtype,
        )
    )
