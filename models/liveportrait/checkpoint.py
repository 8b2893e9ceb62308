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

Ditto's PyTorch release (digital-avatar/ditto-talkinghead, ``ditto_pytorch/models/``) ships the same
networks under other names (its module classes are LivePortrait's, built with the same sizes; the key
layouts are identical, checked against the manifest of the reference's modules)::

    ditto_pytorch/models/appearance_extractor.pth      -> F
    ditto_pytorch/models/motion_extractor.pth          -> M
    ditto_pytorch/models/warp_network.pth              -> W
    ditto_pytorch/models/decoder.pth                   -> G
    ditto_pytorch/models/stitch_network.pth["retarget_shoulder"]
                                                       -> the stitching MLP (Ditto reads only this entry)

Ditto does not use the eye and lip retargeting MLPs; they are read from ``stitch_network.pth``'s
``retarget_mouth``/``retarget_eye`` entries when it has them, else from LivePortrait's retargeting file
in the same `weights_dir`, else loading fails naming both.

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

DITTO_MODELS_DIR = "ditto_pytorch/models"
DITTO_STITCH_FILE = f"{DITTO_MODELS_DIR}/stitch_network.pth"
# Ditto's file names for the same modules; the retargeting MLPs are resolved by `layout_files`.
DITTO_FILES: dict[str, tuple[str, str | None]] = {
    "appearance_feature_extractor": (f"{DITTO_MODELS_DIR}/appearance_extractor.pth", None),
    "motion_extractor": (f"{DITTO_MODELS_DIR}/motion_extractor.pth", None),
    "warping_module": (f"{DITTO_MODELS_DIR}/warp_network.pth", None),
    "spade_generator": (f"{DITTO_MODELS_DIR}/decoder.pth", None),
    "stitching": (DITTO_STITCH_FILE, "retarget_shoulder"),
}
LAYOUTS: dict[str, dict[str, tuple[str, str | None]]] = {
    "liveportrait": PUBLISHED_FILES,
    "ditto": DITTO_FILES,
}

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


def missing_files(weights_dir: Path, layout: str = "liveportrait") -> list[str]:
    """Files of `layout` (``"liveportrait"`` or ``"ditto"``, relative to `weights_dir`) that are absent."""
    needed = dict.fromkeys(file for file, _ in LAYOUTS[layout].values())
    return [file for file in needed if not (Path(weights_dir) / file).is_file()]


def detect_layout(weights_dir: Path) -> str:
    """``"liveportrait"`` when all of LivePortrait's files are in `weights_dir`, else ``"ditto"`` when all
    of Ditto's are.

    Raises:
        WeightsError: neither layout is complete; names what each lacks.
    """
    weights_dir = Path(weights_dir)
    missing = {layout: missing_files(weights_dir, layout) for layout in LAYOUTS}
    for layout, absent in missing.items():
        if not absent:
            return layout
    raise WeightsError(
        f"{weights_dir} lacks {', '.join(missing['liveportrait'])} (LivePortrait's layout), "
        f"or {', '.join(missing['ditto'])} (Ditto's layout)"
    )


def layout_files(weights_dir: Path, layout: str) -> dict[str, tuple[str, str | None]]:
    """Module -> (file, entry) for every module in `layout`; for Ditto's, where the eye and lip
    retargeting MLPs come from (module docstring).

    Raises:
        WeightsError: Ditto's layout without any source for the retargeting MLPs.
    """
    if layout == "liveportrait":
        return dict(PUBLISHED_FILES)
    files = dict(DITTO_FILES)
    stitch = read_bin(Path(weights_dir) / DITTO_STITCH_FILE)
    if "retarget_mouth" in stitch or "retarget_eye" in stitch:
        source = DITTO_STITCH_FILE
    elif (Path(weights_dir) / RETARGETING_FILE).is_file():
        source = RETARGETING_FILE
    else:
        raise WeightsError(
            f"{DITTO_STITCH_FILE} in {weights_dir} has no 'retarget_mouth'/'retarget_eye' entries "
            f"(entries: {sorted(stitch)}) and {RETARGETING_FILE} is absent: the eye and lip "
            "retargeting MLPs are LivePortrait's (KwaiVGI/LivePortrait's pretrained_weights/liveportrait)"
        )
    files["retarget_lip"] = (source, "retarget_mouth")
    files["retarget_eye"] = (source, "retarget_eye")
    return files


def load_published(
    weights_dir: Path,
    *,
    config: LivePortraitConfig | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    layout: str | None = None,
) -> LivePortraitModules:
    """Loads the published ``.pth`` files strictly into freshly built modules.

    Args:
        layout: ``"liveportrait"`` or ``"ditto"`` (file names, module docstring); by default the
            complete one (`detect_layout`, LivePortrait's first).

    Raises:
        WeightsError: a file is missing or unreadable, or keys/shapes do not match a module.
    """
    weights_dir = Path(weights_dir)
    files = _checked_layout(weights_dir, layout)
    modules = build_on_meta(lambda: build_modules(config, device="meta", dtype=dtype))
    for _, module, state in _published_states(weights_dir, modules, files):
        assign(module, state, device, dtype)
    return modules


def save_published(
    modules: LivePortraitModules,
    weights_dir: Path,
    *,
    layout: str = "liveportrait",
    with_retargeting: bool = True,
) -> None:
    """Writes `modules` in a published layout (entries of a multi-entry file with DDP's ``module.``
    prefix, as LivePortrait's retargeting file has them). Used for test fixtures and random full-size
    checkpoints.

    Args:
        layout: ``"liveportrait"`` or ``"ditto"``.
        with_retargeting: Ditto's layout only: whether ``stitch_network.pth`` also holds the eye and
            lip MLPs (``retarget_mouth``, ``retarget_eye``); without them they are not written.
    """
    weights_dir = Path(weights_dir)
    files = dict(LAYOUTS[layout])
    if layout == "ditto" and with_retargeting:
        files["retarget_lip"] = (DITTO_STITCH_FILE, "retarget_mouth")
        files["retarget_eye"] = (DITTO_STITCH_FILE, "retarget_eye")
    entries: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
    for name, module in modules.items():
        if name not in files:
            continue
        file, entry = files[name]
        state = {key: tensor.detach().cpu().clone() for key, tensor in module.state_dict().items()}
        target = weights_dir / file
        target.parent.mkdir(parents=True, exist_ok=True)
        if entry is None:
            torch.save(state, target)
        else:
            entries.setdefault(file, {})[entry] = {DDP_PREFIX + key: tensor for key, tensor in state.items()}
    for file, container in entries.items():
        torch.save(container, weights_dir / file)


def convert_to_safetensors(
    weights_dir: Path, out_dir: Path, *, config: LivePortraitConfig | None = None, layout: str | None = None
) -> None:
    """One-time conversion of the published files into our layout (see the module docstring), checked
    as strictly as `load_published`; the manifest is written last.

    Raises:
        WeightsError: as `load_published`.
    """
    weights_dir, out_dir = Path(weights_dir), Path(out_dir)
    files = _checked_layout(weights_dir, layout)
    modules = build_on_meta(lambda: build_modules(config, device="meta"))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CONVERTED_MANIFEST).unlink(missing_ok=True)
    manifest: dict[str, Any] = {
        "format": CONVERTED_FORMAT,
        "format_version": CONVERTED_FORMAT_VERSION,
        "source": "published files: " + ", ".join(dict.fromkeys(f for f, _ in files.values())),
        "config": modules.config.to_dict(),
        "modules": {},
    }
    for name, module, state in _published_states(weights_dir, modules, files):
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


def _checked_layout(weights_dir: Path, layout: str | None) -> dict[str, tuple[str, str | None]]:
    if layout is None:
        layout = detect_layout(weights_dir)
    elif layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
    else:
        missing = missing_files(weights_dir, layout)
        if missing:
            raise WeightsError(f"{weights_dir} lacks {', '.join(missing)}")
    return layout_files(weights_dir, layout)


def _published_states(
    weights_dir: Path, modules: LivePortraitModules, files: Mapping[str, tuple[str, str | None]]
) -> Iterator[tuple[str, nn.Module, dict[str, Any]]]:
    """Each module with its checked state dict, one at a time (a file of several entries is read once)."""
    cache: dict[str, dict[str, Any]] = {}
    for name, module in modules.items():
        file, entry = files[name]
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
