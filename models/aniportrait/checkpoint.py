"""Building the AniPortrait modules and loading the published files into them, strictly.

Published layout (``weights_dir``, the reference's ``pretrained_model/``)::

    audio2mesh.pt                   -> Audio2Mesh      (wav2vec2 copy + in_fn/out_fn)
    audio2pose.pt                   -> Audio2Pose      (wav2vec2 copy + decoder)
    wav2vec2-base-960h/config.json                     (the audio encoders' architecture)
    pose_guider.pth                 -> PoseGuider      (184 tensors, BatchNorm statistics included)
    reference_unet.pth              -> AniPortraitReferenceNet (682 tensors: SD1.5 without its output head)
    denoising_unet.pth              -> AniPortraitUNet3D (the 686 non-motion-module tensors)
    motion_module.pth               -> AniPortraitUNet3D (the 588 motion-module tensors)
    stable-diffusion-v1-5/unet/config.json             (the UNet hyperparameters)

Loading uses the skeleton's strict primitives (``models.sd.checkpoint``): ``torch.load(weights_only=True)``
memory-mapped, every file key lands in a parameter or buffer of the same shape and every one is
filled, else `WeightsError` listing the keys; modules are built on the meta device and the tensors
assigned. The one conversion: files saved by older transformers name the positional convolution's
weight norm ``weight_g``/``weight_v``; today's modules call them
``parametrizations.weight.original0``/``original1`` (transformers renames them the same way).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import Wav2Vec2Config

from core.errors import WeightsError
from models.aniportrait.audio2landmarks import Audio2Mesh, Audio2Pose
from models.aniportrait.configs import Audio2MeshConfig, Audio2PoseConfig
from models.aniportrait.guider import PoseGuider
from models.aniportrait.unet import AniPortraitReferenceNet, AniPortraitUNet3D
from models.sd.checkpoint import (
    assign,
    build_on_meta,
    check_keys,
    is_motion_module_key,
    read_bin,
    read_checked_state,
    read_json,
)
from models.sd.configs import unet_kwargs_from_config

AUDIO_ENCODER_DIR = "wav2vec2-base-960h"
POSE_GUIDER_FILE = "pose_guider.pth"
UNET_CONFIG_PATH = "stable-diffusion-v1-5/unet/config.json"
REFERENCE_UNET_FILE = "reference_unet.pth"
DENOISING_UNET_FILE = "denoising_unet.pth"
MOTION_MODULE_FILE = "motion_module.pth"
A2L_FILES: dict[str, str] = {"audio2mesh.pt": "audio2mesh", "audio2pose.pt": "audio2pose"}
_LEGACY_WEIGHT_NORM = {
    "pos_conv_embed.conv.weight_g": "pos_conv_embed.conv.parametrizations.weight.original0",
    "pos_conv_embed.conv.weight_v": "pos_conv_embed.conv.parametrizations.weight.original1",
}


@dataclass
class A2LModules:
    """The A2L stage; field names are the published files' stems."""

    audio2mesh: Audio2Mesh
    audio2pose: Audio2Pose

    def items(self) -> Iterator[tuple[str, nn.Module]]:
        for field in fields(self):
            yield field.name, getattr(self, field.name)


def build_a2l(
    audio_encoder_config: Wav2Vec2Config,
    mesh_config: Audio2MeshConfig | None = None,
    pose_config: Audio2PoseConfig | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> A2LModules:
    """Builds both A2L modules (published sizes unless configs are given) in eval mode without gradients;
    ``device="meta"`` builds the structure without memory."""
    mesh_config = mesh_config or Audio2MeshConfig()
    pose_config = pose_config or Audio2PoseConfig()
    with torch.device(device):
        modules = A2LModules(
            audio2mesh=Audio2Mesh(audio_encoder_config, mesh_config.latent_dim, mesh_config.out_dim),
            audio2pose=Audio2Pose(audio_encoder_config, **pose_config.kwargs()),
        )
    for _, module in modules.items():
        module.to(dtype=dtype).eval().requires_grad_(False)
    return modules


def audio_encoder_config(weights_dir: Path) -> Wav2Vec2Config:
    """The encoders' architecture from ``wav2vec2-base-960h/config.json``; `WeightsError` if unusable."""
    data = read_json(weights_dir / AUDIO_ENCODER_DIR / "config.json")
    try:
        config = Wav2Vec2Config(**data)
    except (TypeError, ValueError) as error:
        raise WeightsError(f"{AUDIO_ENCODER_DIR}/config.json is not a wav2vec2 config: {error}") from error
    if config.model_type != "wav2vec2":
        raise WeightsError(
            f"{AUDIO_ENCODER_DIR}/config.json has model_type {config.model_type!r}, not 'wav2vec2'"
        )
    return config


def rename_legacy_keys(state: dict[str, Any]) -> dict[str, Any]:
    """Maps the old weight-norm names to today's; refuses a file that has both spellings of one tensor."""
    renamed: dict[str, Any] = {}
    for key, value in state.items():
        new_key = key
        for old, new in _LEGACY_WEIGHT_NORM.items():
            if key.endswith(old):
                new_key = key[: -len(old)] + new
        if new_key in renamed:
            raise WeightsError(f"{key} and {new_key} both present: cannot tell which to load")
        renamed[new_key] = value
    return renamed


def load_a2l(
    weights_dir: Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    mesh_config: Audio2MeshConfig | None = None,
    pose_config: Audio2PoseConfig | None = None,
) -> A2LModules:
    """Loads ``audio2mesh.pt`` and ``audio2pose.pt`` strictly (see the module docstring).

    Raises:
        WeightsError: a missing or unreadable file or config, or any key or shape mismatch (all listed).
    """
    missing = [
        name
        for name in (*A2L_FILES, f"{AUDIO_ENCODER_DIR}/config.json")
        if not (weights_dir / name).is_file()
    ]
    if missing:
        raise WeightsError(f"{weights_dir} lacks {', '.join(missing)}")
    encoder_config = audio_encoder_config(weights_dir)
    modules = build_on_meta(
        lambda: build_a2l(encoder_config, mesh_config, pose_config, device="meta", dtype=dtype)
    )
    for file, name in A2L_FILES.items():
        module = getattr(modules, name)
        state = rename_legacy_keys(read_bin(weights_dir / file))
        check_keys(module, state, file)
        assign(module, state, device, dtype)
    return modules


def save_a2l(modules: A2LModules, weights_dir: Path, *, legacy_names: bool = True) -> None:
    """Writes the modules in the published layout (test fixtures; ``legacy_names`` uses the old
    weight-norm names as the published files do). The encoder config must be written separately."""
    weights_dir.mkdir(parents=True, exist_ok=True)
    inverse = {new: old for old, new in _LEGACY_WEIGHT_NORM.items()}
    for file, name in A2L_FILES.items():
        state = {}
        for key, tensor in getattr(modules, name).state_dict().items():
            for new, old in inverse.items():
                if legacy_names and key.endswith(new):
                    key = key[: -len(new)] + old
            state[key] = tensor.detach().clone()
        torch.save(state, weights_dir / file)


def build_pose_guider(
    config: dict[str, Any] | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> PoseGuider:
    """The pose guider (published sizes unless `config` gives `PoseGuider` kwargs), eval mode, no gradients."""
    with torch.device(device):
        guider: PoseGuider = PoseGuider(**(config or {}))
    nn.Module.to(guider, dtype=dtype)  # ModelMixin.to logs a spurious warning for any dtype
    guider.eval().requires_grad_(False)
    return guider


def load_pose_guider(
    weights_dir: Path,
    *,
    config: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> PoseGuider:
    """Loads ``pose_guider.pth`` strictly (parameters and BatchNorm buffers, ``num_batches_tracked`` too).

    Raises:
        WeightsError: a missing or unreadable file, or any key or shape mismatch (all listed).
    """
    path = weights_dir / POSE_GUIDER_FILE
    if not path.is_file():
        raise WeightsError(f"{weights_dir} lacks {POSE_GUIDER_FILE}")
    guider: PoseGuider = build_on_meta(lambda: build_pose_guider(config, device="meta", dtype=dtype))
    state = read_bin(path)
    check_keys(guider, state, POSE_GUIDER_FILE)
    assign(guider, state, device, dtype)
    return guider


def build_unets(
    unet_config: dict[str, Any], *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[AniPortraitReferenceNet, AniPortraitUNet3D]:
    """The ReferenceNet and the denoiser from a diffusers UNet config, eval mode, no gradients."""
    with torch.device(device):
        reference = AniPortraitReferenceNet(**unet_kwargs_from_config(unet_config))
        denoiser = AniPortraitUNet3D.from_unet_config(unet_config)
    for module in (reference, denoiser):
        nn.Module.to(module, dtype=dtype)
        module.eval().requires_grad_(False)
    return reference, denoiser


def load_unets(
    weights_dir: Path,
    *,
    unet_config: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[AniPortraitReferenceNet, AniPortraitUNet3D]:
    """Loads ``reference_unet.pth`` and ``denoising_unet.pth`` + ``motion_module.pth`` strictly: the
    denoiser's file must hold exactly its non-motion-module tensors and the motion-module file exactly
    the others (the reference loads both with ``strict=False``; we refuse anything left over or missing).

    Raises:
        WeightsError: a missing or unreadable file or config, or any key or shape mismatch (all listed).
    """
    needed = [REFERENCE_UNET_FILE, DENOISING_UNET_FILE, MOTION_MODULE_FILE]
    if unet_config is None:
        needed.append(UNET_CONFIG_PATH)
    missing = [name for name in needed if not (weights_dir / name).is_file()]
    if missing:
        raise WeightsError(f"{weights_dir} lacks {', '.join(missing)}")
    config = unet_config if unet_config is not None else read_json(weights_dir / UNET_CONFIG_PATH)
    reference, denoiser = build_on_meta(lambda: build_unets(config, device="meta", dtype=dtype))
    state = read_checked_state(reference, [(weights_dir / REFERENCE_UNET_FILE, REFERENCE_UNET_FILE, None)])
    assign(reference, state, device, dtype)
    state = read_checked_state(
        denoiser,
        [
            (
                weights_dir / DENOISING_UNET_FILE,
                DENOISING_UNET_FILE,
                lambda key: not is_motion_module_key(key),
            ),
            (weights_dir / MOTION_MODULE_FILE, MOTION_MODULE_FILE, is_motion_module_key),
        ],
    )
    assign(denoiser, state, device, dtype)
    return reference, denoiser
