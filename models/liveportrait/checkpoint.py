"""Building the LivePortrait networks and loading the published files into them strictly.

Published layout (``weights_dir``, as in the reference's ``pretrained_weights/liveportrait``)::

    base_models/appearance_feature_extractor.pth       -> AppearanceFeatureExtractor (F)
    base_models/motion_extractor.pth                   -> MotionExtractor (M)
    base_models/warping_module.pth                     -> WarpingNetwork (W)
    base_models/spade_generator.pth                    -> SPADEDecoder (G)
    retargeting_models/stitching_retargeting_module.pth
        {"retarget_shoulder": ..., "retarget_mouth": ..., "retarget_eye": ...}
                                                       -> the stitching, lip and eye MLPs
                                                          (keys may carry DDP's ``module.`` prefix)

Loading is the shared strict loading (``models.sd.checkpoint``): ``torch.load(weights_only=True)``,
memory-mapped, every key lands in a parameter or buffer of the same shape and every one is filled,
else `WeightsError` listing the keys; modules are built on the meta device and the tensors assigned.

Our converted layout (``out_dir``, made once by `convert_to_safetensors`): ``<module>.safetensors`` per
module (stored dtype kept) and ``manifest.json`` (format, version, the architecture config, tensor
counts), written last.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.errors import WeightsError
from models.liveportrait.configs import LivePortraitConfig, liveportrait_config
from models.liveportrait.networks import (
    AppearanceFeatureExtractor,
    MotionExtractor,
    SPADEDecoder,
    StitchingRetargetingNetwork,
    WarpingNetwork,
)
from models.sd.checkpoint import (
    assign,
    build_on_meta,
    check_keys,
    load_safetensors,
    read_bin,
    read_manifest,
    save_safetensors,
    write_manifest,
)

RETARGETING_FILE = "retargeting_models/stitching_retargeting_module.pth"

# Module (field of `LivePortraitModules`) -> (published file, entry inside it or None for a whole file).
PUBLISHED_FILES: dict[str, tuple[str, str | None]] = {
    "appearance_feature_extractor": ("base_models/appearance_feature_extractor.pth", None),
    "motion_extractor": ("base_models/motion_extractor.pth", None),
    "warping_module": ("base_models/warping_module.pth", None),
    "spade_generator": ("base_models/spade_generator.pth", None),
    "stitching": (RETARGETING_FILE, "retarget_shoulder"),
    "retarget_lip": (RETARGETING_FILE, "retarget_mouth"),
    "retarget_eye": (RETARGETING_FILE, "retarget_eye"),
}
DDP_PREFIX = "module."

CONVERTED_FORMAT = "parla-liveportrait"
CONVERTED_FORMAT_VERSION = 1
CONVERTED_MANIFEST = "manifest.json"


@dataclass
class LivePortraitModules:
    """The seven modules (four networks, three MLPs) and the config they were built from."""

    config: LivePortraitConfig
    appearance_feature_extractor: AppearanceFeatureExtractor
    motion_extractor: MotionExtractor
    warping_module: WarpingNetwork
    spade_generator: SPADEDecoder
    stitching: StitchingRetargetingNetwork
    retarget_lip: StitchingRetargetingNetwork
    retarget_eye: StitchingRetargetingNetwork

    def items(self) -> Iterator[tuple[str, nn.Module]]:
        for field in fields(self):
            if field.name != "config":
                yield field.name, getattr(self, field.name)

    def to(
        self, device: str | torch.device | None = None, dtype: torch.dtype | None = None
    ) -> LivePortraitModules:
        """Moves every module in place; returns self."""
        for _, module in self.items():
            module.to(device=device, dtype=dtype)
        return self


def build_modules(
    config: LivePortraitConfig | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LivePortraitModules:
    """Builds the modules with random initial weights, in eval mode without gradients.

    Args:
        config: The architecture; the published human model's (`liveportrait_config`) by default.
        device: Where to allocate; ``"meta"`` builds the structure without memory.
        dtype: Parameter dtype.

    Raises:
        ValueError: `LivePortraitConfig.validate` found widths that do not chain.
    """
    config = config or liveportrait_config()
    config.validate()
    with torch.device(device):
        modules = LivePortraitModules(
            config=config,
            appearance_feature_extractor=AppearanceFeatureExtractor(config.appearance),
            motion_extractor=MotionExtractor(config.motion),
            warping_module=WarpingNetwork(config.warping),
            spade_generator=SPADEDecoder(config.spade),
            stitching=StitchingRetargetingNetwork(config.retargeting.stitching),
            retarget_lip=StitchingRetargetingNetwork(config.retargeting.lip),
            retarget_eye=StitchingRetargetingNetwork(config.retargeting.eye),
        )
    for _, module in modules.items():
        module.to(dtype=dtype).eval().requires_grad_(False)
    return modules


def state_manifest(config: LivePortraitConfig | None = None) -> dict[str, dict[str, list[int]]]:
    """Key -> shape of every module's state dict (in order), from modules built on the meta device."""
    modules = build_modules(config, device="meta")
    return {
        name: {key: list(tensor.shape) for key, tensor in module.state_dict().items()}
        for name, module in modules.items()
    }


def missing_files(weights_dir: Path) -> list[str]:
    """Published files (relative to `weights_dir`) that `load_published` needs and that are absent."""
    needed = dict.fromkeys(file for file, _ in PUBLISHED_FILES.values())
    return [file for file in needed if not (Path(weights_dir) / file).is_file()]


def load_published(
    weights_dir: Path,
    *,
    config: LivePortraitConfig | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LivePortraitModules:
    """Loads the published ``.pth`` files strictly into freshly built modules.

    Raises:
        WeightsError: a file is missing or unreadable, or keys/shapes do not match a module.
    """
    weights_dir = Path(weights_dir)
    missing = missing_files(weights_dir)
    if missing:
        raise WeightsError(f"{weights_dir} lacks {', '.join(missing)}")
    modules = build_on_meta(lambda: build_modules(config, device="meta", dtype=dtype))
    for _, module, state in _published_states(weights_dir, modules):
        assign(module, state, device, dtype)
    return modules


def save_published(modules: LivePortraitModules, weights_dir: Path) -> None:
    """Writes `modules` in the published layout (the retargeting entries with DDP's ``module.`` prefix,
    as the published file has them). Used for test fixtures and random full-size checkpoints."""
    weights_dir = Path(weights_dir)
    retargeting: dict[str, dict[str, torch.Tensor]] = {}
    for name, module in modules.items():
        file, entry = PUBLISHED_FILES[name]
        state = {key: tensor.detach().cpu().clone() for key, tensor in module.state_dict().items()}
        target = weights_dir / file
        target.parent.mkdir(parents=True, exist_ok=True)
        if entry is None:
            torch.save(state, target)
        else:
            retargeting[entry] = {DDP_PREFIX + key: tensor for key, tensor in state.items()}
    torch.save(retargeting, weights_dir / RETARGETING_FILE)


def convert_to_safetensors(
    weights_dir: Path, out_dir: Path, *, config: LivePortraitConfig | None = None
) -> None:
    """One-time conversion of the published files into our layout (see the module docstring), checked
    as strictly as `load_published`; the manifest is written last.

    Raises:
        WeightsError: as `load_published`.
    """
    weights_dir, out_dir = Path(weights_dir), Path(out_dir)
    missing = missing_files(weights_dir)
    if missing:
        raise WeightsError(f"{weights_dir} lacks {', '.join(missing)}")
    modules = build_on_meta(lambda: build_modules(config, device="meta"))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CONVERTED_MANIFEST).unlink(missing_ok=True)
    manifest: dict[str, Any] = {
        "format": CONVERTED_FORMAT,
        "format_version": CONVERTED_FORMAT_VERSION,
        "source": "published LivePortrait files: "
        + ", ".join(dict.fromkeys(f for f, _ in PUBLISHED_FILES.values())),
        "config": modules.config.to_dict(),
        "modules": {},
    }
    for name, module, state in _published_states(weights_dir, modules):
        manifest["modules"][name] = save_safetensors(
            module, state, out_dir / f"{name}.safetensors", CONVERTED_FORMAT, name
        )
    write_manifest(out_dir, CONVERTED_MANIFEST, manifest)


def load_converted(
    out_dir: Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> LivePortraitModules:
    """Loads modules from `convert_to_safetensors`' output (memory-mapped, strict).

    Raises:
        WeightsError: no or unknown manifest, missing file, or key/shape mismatch.
    """
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir, CONVERTED_MANIFEST, CONVERTED_FORMAT, CONVERTED_FORMAT_VERSION)
    try:
        config = LivePortraitConfig.from_dict(manifest["config"])
        entries = {name: manifest["modules"][name]["file"] for name in PUBLISHED_FILES}
    except (KeyError, TypeError, ValueError) as error:
        raise WeightsError(f"{out_dir / CONVERTED_MANIFEST} is malformed: {error!r}") from error
    modules = build_on_meta(lambda: build_modules(config, device="meta", dtype=dtype))
    for name, module in modules.items():
        load_safetensors(module, out_dir / entries[name], device, dtype)
    return modules


def is_converted(directory: Path) -> bool:
    """Whether `directory` holds our converted layout (its manifest exists)."""
    return (Path(directory) / CONVERTED_MANIFEST).is_file()


def load_weights(
    weights_dir: Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> LivePortraitModules:
    """Our converted layout if `weights_dir` holds one, else the published layout."""
    if is_converted(weights_dir):
        return load_converted(weights_dir, device=device, dtype=dtype)
    return load_published(weights_dir, device=device, dtype=dtype)


def _published_states(
    weights_dir: Path, modules: LivePortraitModules
) -> Iterator[tuple[str, nn.Module, dict[str, Any]]]:
    """Each module with its checked state dict, one at a time (the retargeting file is read once)."""
    cache: dict[str, dict[str, Any]] = {}
    for name, module in modules.items():
        file, entry = PUBLISHED_FILES[name]
        if file not in cache:
            cache = {file: read_bin(weights_dir / file)}
        label = file if entry is None else f"{file}[{entry!r}]"
        state = cache[file] if entry is None else _entry(cache[file], entry, file)
        check_keys(module, state, label)
        yield name, module, dict(state)


def _entry(container: Mapping[str, Any], entry: str, file: str) -> dict[str, Any]:
    if entry not in container:
        raise WeightsError(f"{file} has no {entry!r} entry (entries: {sorted(container)})")
    part = container[entry]
    if not isinstance(part, Mapping):
        raise WeightsError(f"{file}[{entry!r}] holds a {type(part).__name__}, not a state dict")
    return {key.removeprefix(DDP_PREFIX): value for key, value in part.items()}
