"""Tiny random-weight AniPortrait components and a tiny engine that renders in seconds on CPU.

The layout is the real one (wav2vec2 feature encoder and A2L heads, SD1.5 block structure with
motion modules, pose guider, AutoencoderKL, a CLIP vision tower with projection) at widths of
8-128 channels, so that every code path runs as at full size. For an end-to-end job::

    from models.aniportrait.testing import tiny_engine
    engine = tiny_engine()     # AniPortraitEngine on CPU, fp32, 2 steps by default; size=64 jobs
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch

from models.aniportrait.geometry import NUM_LANDMARKS, NUM_VERTICES, FaceGeometry
from models.aniportrait.landmarks import project_mesh

if TYPE_CHECKING:
    from models.aniportrait.engine import AniPortraitComponents, AniPortraitEngine

TINY_UNET_CHANNELS = [32, 64, 128, 128]
"""The tiny denoiser's block widths: the pose guider's maps (``c, c, 2c, 4c, 4c``) fit them at c = 32."""


def tiny_unet_config() -> dict[str, Any]:
    from models.sd.configs import tiny_unet_config as sd_tiny

    config = sd_tiny()
    config.update(block_out_channels=TINY_UNET_CHANNELS)
    return config


def tiny_image_encoder(projection_dim: int) -> tuple[Any, Any]:
    """A one-layer CLIP vision tower (224 px, 32 px patches) with a `projection_dim` projection, and
    the default ``CLIPImageProcessor`` (what the reference builds)."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=224,
        patch_size=32,
        projection_dim=projection_dim,
    )
    encoder: Any = CLIPVisionModelWithProjection(config)
    return encoder.eval(), CLIPImageProcessor()


def tiny_components(seed: int = 0) -> AniPortraitComponents:
    """Random-weight tiny components (CPU, fp32), the same for the same seed."""
    from models.aniportrait.checkpoint import build_a2l, build_pose_guider, build_unets
    from models.aniportrait.configs import (
        tiny_audio2mesh_config,
        tiny_audio2pose_config,
        tiny_audio_encoder_config,
    )
    from models.aniportrait.engine import AniPortraitComponents
    from models.sd.testing import sd_vae

    torch.manual_seed(seed)
    encoder_config = tiny_audio_encoder_config()
    encoder_config.mask_time_prob = 0.0
    a2l = build_a2l(encoder_config, tiny_audio2mesh_config(), tiny_audio2pose_config())
    with torch.no_grad():  # offsets of a few tenths of a unit, like a real mouth's
        a2l.audio2mesh.out_fn.weight.mul_(0.05)
        a2l.audio2mesh.out_fn.bias.zero_()
    config = tiny_unet_config()
    reference, denoiser = build_unets(config)
    guider = build_pose_guider(
        {"noise_latent_channels": TINY_UNET_CHANNELS[0], "attention_heads": 2, "attention_head_dim": 8}
    )
    image_encoder, image_processor = tiny_image_encoder(int(config["cross_attention_dim"]))
    return AniPortraitComponents(
        a2l=a2l,
        pose_guider=guider,
        reference_net=reference,
        denoiser=denoiser,
        vae=sd_vae(),
        image_encoder=image_encoder,
        image_processor=image_processor,
    )


class FixedGeometryAnalyzer:
    """A face geometry for tests without MediaPipe's FaceLandmarker bundle: the same synthetic head
    for every image, in front of the camera and centred (a half ellipsoid of 468 vertices, 16 x 20 x
    10 cm, 50 cm away), with its 478 normalised landmarks as the camera sees it in a square image."""

    def __init__(self, distance: float = 50.0) -> None:
        index = np.arange(NUM_VERTICES) + 0.5
        polar = np.arccos(1 - index / NUM_VERTICES)  # the front half of a sphere, evenly spread
        azimuth = math.pi * (1 + 5**0.5) * index
        unit = np.stack(
            [np.sin(polar) * np.cos(azimuth), np.sin(polar) * np.sin(azimuth), np.cos(polar)], axis=1
        )
        self.vertices = unit * np.array([8.0, 10.0, 5.0])
        self.matrix = np.eye(4)
        self.matrix[2, 3] = -distance

    def analyze(self, image: npt.NDArray[np.uint8]) -> FaceGeometry | None:
        projected = project_mesh(self.vertices[None], self.matrix, np.zeros((1, 6)), 1, 1)[0]
        landmarks = np.zeros((NUM_LANDMARKS, 3))
        landmarks[:NUM_VERTICES, :2] = projected
        landmarks[NUM_VERTICES:, :2] = projected[:10]
        return FaceGeometry(landmarks, self.vertices.copy(), self.matrix.copy())


def tiny_engine(
    seed: int = 0,
    face_analyzer: Any = None,
    geometry_analyzer: Any = None,
    device: str = "cpu",
    weights_dir: Any = None,
    decode_batch_frames: int = 8,
    mesh_window_frames: int | None = None,
) -> AniPortraitEngine:
    """An ``AniPortraitEngine`` on tiny random weights (CPU, fp32); its options default to 2 steps.

    ``face_analyzer`` defaults to MediaPipe (use ``models.vexpress.testing.FixedKeypointAnalyzer()``
    for images without a face); ``geometry_analyzer`` to ``FixedGeometryAnalyzer()`` (MediaPipe's
    FaceLandmarker bundle is not in the wheel). ``device`` and ``weights_dir`` are what every engine
    is given by the worker; the tiny weights are always built on the CPU and ``weights_dir`` is ignored.
    """
    from models.aniportrait.a2l import MESH_WINDOW_FRAMES
    from models.aniportrait.engine import AniPortraitEngine
    from models.aniportrait.options import AniPortraitTinyOptions

    engine = AniPortraitEngine(
        device="cpu",
        dtype="fp32",
        components=tiny_components(seed),
        face_analyzer=face_analyzer,
        geometry_analyzer=geometry_analyzer or FixedGeometryAnalyzer(),
        decode_batch_frames=decode_batch_frames,
        mesh_window_frames=mesh_window_frames or MESH_WINDOW_FRAMES,
        warmup_size=64,
        warmup_context_frames=2,
    )
    engine.options_model = AniPortraitTinyOptions
    return engine
