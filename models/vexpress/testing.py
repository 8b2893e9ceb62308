"""Tiny random-weight V-Express components, for tests and for a tiny engine that renders in seconds on CPU.

The layout is the real one (SD1.5 block structure, motion modules, guider, perceiver projection,
AutoencoderKL, wav2vec2 with a group-norm feature encoder and the 320-sample hop) at widths of
8-64 channels, so that every code path runs as at full size.

For an end-to-end job through the service::

    from models.vexpress.testing import tiny_engine
    engine = tiny_engine()                   # VExpressEngine on CPU, fp32, 2 steps by default
    # submit the job with size=64 (or 32..128): the tiny UNet's cost grows with the square of it
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch
from transformers import Wav2Vec2Model

from models.sd.testing import sd_vae, tiny_wav2vec2_config
from models.vexpress.audio import build_feature_extractor
from models.vexpress.pipeline import VExpressComponents

if TYPE_CHECKING:
    from models.vexpress.engine import VExpressEngine


def tiny_audio_encoder(hidden_size: int) -> Any:
    """wav2vec2-base's feature encoder (7 convs, hop 320, group norm) and one transformer layer, narrow."""
    config = tiny_wav2vec2_config(hidden_size)
    encoder: Any = Wav2Vec2Model(config)
    return encoder.eval()


def tiny_components(seed: int = 0, dtype: torch.dtype = torch.float32) -> VExpressComponents:
    """Random-weight tiny components, the same for the same seed (CPU)."""
    from models.sd.configs import tiny_unet_config
    from models.vexpress.checkpoint import build_modules
    from models.vexpress.configs import tiny_audio_projection_config, tiny_guider_config

    torch.manual_seed(seed)
    projection_config = tiny_audio_projection_config()
    modules = build_modules(
        tiny_unet_config(),
        guider_config=tiny_guider_config(),
        audio_projection_config=projection_config,
        dtype=dtype,
    )
    for module in (
        modules.reference_net,
        modules.denoising_unet,
        modules.v_kps_guider,
        modules.audio_projection,
    ):
        module.eval()
    return VExpressComponents(
        modules=modules,
        vae=sd_vae().to(dtype),
        audio_encoder=tiny_audio_encoder(int(projection_config["embedding_dim"])).to(dtype),
        feature_extractor=build_feature_extractor(),
    )


tiny_engine_components = tiny_components


class FixedKeypointAnalyzer:
    """A face analyzer for tests: one face with fixed keypoints, placed relative to the image size.

    ``keypoints`` are fractions of (width, height) for the five insightface points; the box spans
    the middle half of the image. Returns ``models.face.Face`` objects, so that crop and paste-back
    run as with a real detector.
    """

    def __init__(self, keypoints: npt.NDArray[np.float32] | None = None) -> None:
        default = [[0.38, 0.42], [0.62, 0.42], [0.5, 0.55], [0.41, 0.66], [0.59, 0.66]]
        self.keypoints = np.asarray(default if keypoints is None else keypoints, dtype=np.float32)

    def detect(self, image: npt.NDArray[np.uint8]) -> list[Any]:
        from models.face import Face

        height, width = image.shape[:2]
        scale = np.array([width, height], dtype=np.float32)
        box = np.array([0.25 * width, 0.25 * height, 0.75 * width, 0.75 * height], dtype=np.float32)
        return [
            Face(
                box=box,
                landmarks=np.zeros((478, 3), dtype=np.float32),
                keypoints=self.keypoints * scale,
                yaw=0.0,
                pitch=0.0,
                roll=0.0,
                mouth_open=0.0,
                eyes_open=0.3,
            )
        ]


def tiny_engine(
    seed: int = 0,
    face_analyzer: Any = None,
    device: str = "cpu",
    weights_dir: Any = None,
    decode_batch_frames: int = 8,
) -> VExpressEngine:
    """A ``VExpressEngine`` on tiny random weights (CPU, fp32); its options default to 2 steps.

    ``face_analyzer`` defaults to MediaPipe (use ``FixedKeypointAnalyzer()`` for images without a face).
    ``device`` and ``weights_dir`` are what every engine is given by the worker; the tiny weights are
    always built on the CPU and ``weights_dir`` is ignored.
    """
    from models.vexpress.engine import VExpressEngine
    from models.vexpress.options import VExpressTinyOptions

    engine = VExpressEngine(
        device="cpu",
        dtype="fp32",
        components=tiny_components(seed),
        face_analyzer=face_analyzer,
        decode_batch_frames=decode_batch_frames,
        warmup_size=64,
        warmup_context_frames=2,
    )
    engine.options_model = VExpressTinyOptions
    return engine
