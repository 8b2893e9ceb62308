"""Building Hallo's five modules and loading the published ``net.pth`` (and motion module) into them.

Published layout (``weights_dir``, Hallo's ``pretrained_models/``)::

    hallo/net.pth                          -> all five modules, one state dict with the prefixes
                                              reference_unet. denoising_unet. face_locator. imageproj.
                                              audioproj. (the reference loads it strictly)
    motion_module/mm_sd_v15_v2.ckpt        -> the denoiser's motion modules (AnimateDiff v2); the
                                              reference loads it first and net.pth overwrites it, so
                                              it is only checked (`check_motion_module_file`)
    stable-diffusion-v1-5/unet/config.json    (the UNet hyperparameters)
    sd-vae-ft-mse/, wav2vec/wav2vec2-base-960h/, face_analysis/models/   (front-end and VAE)

Loading is the skeleton's strict loading (``models.sd.checkpoint``): ``torch.load(weights_only=True)``
(pickled code never runs), memory-mapped, every key accounted for per module (missing, unexpected and
mis-shaped keys listed in one `WeightsError`), tensors assigned into modules built on the meta device.

Our converted layout (`convert_to_safetensors`): ``<prefix>.safetensors`` per module, the UNet config
and ``manifest.json`` (written last).
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
from models.hallo.configs import audio_projection_config, face_locator_config, image_projection_config
from models.hallo.modules import AudioProjection, FaceLocator, ImageProjection
from models.hallo.unet_3d import HalloReferenceNet, HalloUNet3D
from models.sd.checkpoint import (
    assign,
    build_on_meta,
    check_keys,
    is_motion_module_key,
    load_safetensors,
    read_bin,
    read_json,
    read_manifest,
    save_safetensors,
    write_manifest,
)

NET_FILE = "hallo/net.pth"
HALLO2_NET_FILE = "hallo2/net.pth"
"""Hallo2's checkpoint (``pretrained_models/hallo2/net.pth``): the same modules and prefixes."""
MOTION_MODULE_FILE = "motion_module/mm_sd_v15_v2.ckpt"
UNET_CONFIG_PATH = "stable-diffusion-v1-5/unet/config.json"
EXTERNAL_MODELS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("sd-vae-ft-mse", "config.json", ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")),
    ("wav2vec/wav2vec2-base-960h", "config.json", ("model.safetensors", "pytorch_model.bin")),
)
FACE_ANALYSIS_DIR = "face_analysis/models"
ARCFACE_FILE = "face_analysis/models/glintr100.onnx"

CONVERTED_FORMAT = "parla-hallo"
CONVERTED_FORMAT_VERSION = 1
CONVERTED_MANIFEST = "manifest.json"
CONVERTED_UNET_CONFIG = "unet_config.json"


@dataclass
class HalloModules:
    """The five modules of ``net.pth``; field names are its key prefixes."""

    reference_unet: HalloReferenceNet
    denoising_unet: HalloUNet3D
    face_locator: FaceLocator
    imageproj: ImageProjection
    audioproj: AudioProjection

    def items(self) -> Iterator[tuple[str, nn.Module]]:
        for field in fields(self):
            yield field.name, getattr(self, field.name)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The combined state dict, as ``net.pth`` holds it (``<prefix>.<key>``)."""
        return {
            f"{name}.{key}": tensor
            for name, module in self.items()
            for key, tensor in module.state_dict().items()
        }


@dataclass(frozen=True)
class ModuleSizes:
    """Constructor arguments of the small modules and the denoiser's ``unet_additional_kwargs``."""

    face_locator: Mapping[str, Any]
    imageproj: Mapping[str, Any]
    audioproj: Mapping[str, Any]
    unet_additional_kwargs: Mapping[str, Any]

    @classmethod
    def published(cls) -> ModuleSizes:
        return cls(face_locator_config(), image_projection_config(), audio_projection_config(), {})


def build_modules(
    unet_config: Mapping[str, Any],
    sizes: ModuleSizes | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> HalloModules:
    """Builds the five modules (random initial weights; ``device="meta"`` for structure only), eval mode.

    Raises:
        ValueError: from the modules' config validation.
    """
    sizes = sizes or ModuleSizes.published()
    with torch.device(device):
        modules = HalloModules(
            reference_unet=HalloReferenceNet.from_unet_config(unet_config),
            denoising_unet=HalloUNet3D.from_unet_config(unet_config, **sizes.unet_additional_kwargs),
            face_locator=FaceLocator(**sizes.face_locator),
            imageproj=ImageProjection(**sizes.imageproj),
            audioproj=AudioProjection(**sizes.audioproj),
        )
    for _, module in modules.items():
        if dtype != torch.float32:
            nn.Module.to(module, dtype=dtype)
        module.eval().requires_grad_(False)
    return modules


def key_manifest(modules: HalloModules) -> dict[str, list[int]]:
    """``net.pth`` key -> shape of `modules` (build them on the meta device: no memory)."""
    return {key: list(tensor.shape) for key, tensor in modules.state_dict().items()}


def split_net_state(
    state: Mapping[str, Any], modules: HalloModules, net_file: str = NET_FILE
) -> dict[str, dict[str, Any]]:
    """``net.pth``'s state split by prefix and checked strictly against each module.

    Raises:
        WeightsError: listing keys under no known prefix, and per module the missing, unexpected and
            mis-shaped keys.
    """
    names = [name for name, _ in modules.items()]
    parts: dict[str, dict[str, Any]] = {name: {} for name in names}
    orphans = []
    for key, value in state.items():
        prefix, _, rest = key.partition(".")
        if prefix in parts and rest:
            parts[prefix][rest] = value
        else:
            orphans.append(key)
    problems = []
    if orphans:
        shown = ", ".join(orphans[:20]) + (f", ... ({len(orphans) - 20} more)" if len(orphans) > 20 else "")
        problems.append(f"{len(orphans)} keys under no module prefix ({', '.join(names)}): {shown}")
    for name, module in modules.items():
        try:
            check_keys(module, parts[name], f"{net_file} [{name}.]")
        except WeightsError as error:
            problems.append(str(error))
    if problems:
        raise WeightsError("; ".join(problems))
    return parts


def missing_files(
    weights_dir: Path, *, include_external: bool = False, net_file: str = NET_FILE
) -> list[str]:
    """The published files `load_published` needs (and with `include_external`, the pipeline's) that
    `weights_dir` lacks."""
    missing = [path for path in (net_file, UNET_CONFIG_PATH) if not (weights_dir / path).is_file()]
    if include_external:
        for folder, config, weight_names in EXTERNAL_MODELS:
            if not (weights_dir / folder / config).is_file():
                missing.append(f"{folder}/{config}")
            if not any((weights_dir / folder / name).is_file() for name in weight_names):
                missing.append("|".join(f"{folder}/{name}" for name in weight_names))
    return missing


def load_published(
    weights_dir: Path,
    *,
    unet_config: Mapping[str, Any] | None = None,
    sizes: ModuleSizes | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    net_file: str = NET_FILE,
) -> HalloModules:
    """Loads ``hallo/net.pth`` (or `net_file`, e.g. `HALLO2_NET_FILE`) strictly into freshly built
    modules (see the module docstring).

    Raises:
        WeightsError: a file is missing or unreadable, or its keys/shapes do not match the modules.
    """
    weights_dir = Path(weights_dir)
    missing = missing_files(weights_dir, net_file=net_file)
    if unet_config is not None:
        missing = [path for path in missing if path != UNET_CONFIG_PATH]
    if missing:
        raise WeightsError(f"{weights_dir} lacks {', '.join(missing)}")
    if unet_config is None:
        unet_config = read_json(weights_dir / UNET_CONFIG_PATH)
    config = unet_config
    modules = build_on_meta(lambda: build_modules(config, sizes, device="meta", dtype=dtype))
    state = read_bin(weights_dir / net_file)
    parts = split_net_state(state, modules, net_file)
    del state
    for name, module in modules.items():
        assign(module, parts.pop(name), device, dtype)
    return modules


def check_motion_module_file(path: Path, denoiser: nn.Module) -> None:
    """Checks an AnimateDiff motion-module checkpoint strictly against `denoiser`'s motion-module keys
    (the reference merges it into the denoiser before ``net.pth`` overwrites every key).

    Raises:
        WeightsError: unreadable, or missing/unexpected/mis-shaped motion-module keys.
    """
    state = read_bin(Path(path))
    check_keys(denoiser, state, str(path), only=is_motion_module_key)


def save_published(
    modules: HalloModules,
    weights_dir: Path,
    unet_config: Mapping[str, Any],
    *,
    dtype: torch.dtype = torch.float16,
) -> None:
    """Writes `modules` in the published layout: ``net.pth`` (every prefix), the motion-module file
    (the denoiser's motion-module keys) and the UNet config. For test fixtures and random full-size
    checkpoints; the external folders are not written."""
    weights_dir = Path(weights_dir)
    state = {
        key: tensor.detach().to(device="cpu", dtype=dtype).clone()
        for key, tensor in modules.state_dict().items()
    }
    (weights_dir / NET_FILE).parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, weights_dir / NET_FILE)
    motion = {
        key.removeprefix("denoising_unet."): tensor
        for key, tensor in state.items()
        if key.startswith("denoising_unet.") and is_motion_module_key(key)
    }
    (weights_dir / MOTION_MODULE_FILE).parent.mkdir(parents=True, exist_ok=True)
    torch.save(motion, weights_dir / MOTION_MODULE_FILE)
    config_path = weights_dir / UNET_CONFIG_PATH
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(json.dumps(dict(unet_config), indent=2))


def _sizes_entry(sizes: ModuleSizes) -> dict[str, Any]:
    def plain(mapping: Mapping[str, Any]) -> dict[str, Any]:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in mapping.items()}

    return {
        "face_locator": plain(sizes.face_locator),
        "imageproj": plain(sizes.imageproj),
        "audioproj": plain(sizes.audioproj),
        "unet_additional_kwargs": dict(sizes.unet_additional_kwargs),
    }


def convert_to_safetensors(
    weights_dir: Path, out_dir: Path, *, sizes: ModuleSizes | None = None, net_file: str = NET_FILE
) -> None:
    """One-time conversion of ``net.pth`` into our layout; as strict as `load_published`; the manifest
    is written last.

    Raises:
        WeightsError: as `load_published`.
    """
    weights_dir, out_dir = Path(weights_dir), Path(out_dir)
    missing = missing_files(weights_dir, net_file=net_file)
    if missing:
        raise WeightsError(f"{weights_dir} lacks {', '.join(missing)}")
    sizes = sizes or ModuleSizes.published()
    unet_config = read_json(weights_dir / UNET_CONFIG_PATH)
    modules = build_on_meta(lambda: build_modules(unet_config, sizes, device="meta"))
    state = read_bin(weights_dir / net_file)
    parts = split_net_state(state, modules, net_file)
    del state
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CONVERTED_MANIFEST).unlink(missing_ok=True)
    manifest: dict[str, Any] = {
        "format": CONVERTED_FORMAT,
        "format_version": CONVERTED_FORMAT_VERSION,
        "source": f"published Hallo {net_file}",
        "unet_config": CONVERTED_UNET_CONFIG,
        "sizes": _sizes_entry(sizes),
        "modules": {},
    }
    for name, module in modules.items():
        manifest["modules"][name] = save_safetensors(
            module, parts.pop(name), out_dir / f"{name}.safetensors", CONVERTED_FORMAT, name
        )
    (out_dir / CONVERTED_UNET_CONFIG).write_text(json.dumps(dict(unet_config), indent=2))
    write_manifest(out_dir, CONVERTED_MANIFEST, manifest)


def load_converted(
    out_dir: Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> HalloModules:
    """Loads `convert_to_safetensors`' output (memory-mapped, strict).

    Raises:
        WeightsError: no or unknown manifest, missing file, or key/shape mismatch.
    """
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir, CONVERTED_MANIFEST, CONVERTED_FORMAT, CONVERTED_FORMAT_VERSION)
    unet_config = read_json(out_dir / manifest["unet_config"])
    entry = manifest["sizes"]
    sizes = ModuleSizes(
        {**entry["face_locator"], "block_out_channels": tuple(entry["face_locator"]["block_out_channels"])},
        entry["imageproj"],
        entry["audioproj"],
        entry["unet_additional_kwargs"],
    )
    modules = build_on_meta(lambda: build_modules(unet_config, sizes, device="meta", dtype=dtype))
    for name, module in modules.items():
        load_safetensors(module, out_dir / manifest["modules"][name]["file"], device, dtype)
    return modules
