"""``HalloEngine``: Hallo behind the engine seam (``models.engine``).

Per job, ``prepare`` computes once: the face crop at the model size, the masks from our MediaPipe
mesh (``models.hallo.masks``), the ArcFace identity embedding (``models.hallo.arcface``) and the
wav2vec2 conv features of the whole clip (``models.hallo.audio``, kept small). ``plan`` gives one
chunk per Hallo clip (``clip_frames`` frames; the last is cut to the audio). ``render_chunk`` runs
the encoder windows the clip needs, samples the clip (``models.hallo.pipeline.sample_clip``) and
returns its frames.

Continuity is the reference's: a clip's motion frames are the previous clip's last
``motion_frames`` decoded frames, and one noise generator (seeded with the job seed) is shared by
the clips. The ``ChunkCarry`` holds both (float32 frames in [0, 1], the generator's state), so a
resumed job gives the frames of an uninterrupted one and memory does not depend on the clip length.

Hallo2 (same network, its own ``net.pth``) differs at inference only by a random pixel mask on the
motion frames (``motion_mask_rate``, 0.25 in Hallo2's ``long.yaml``; never inside the face box) and
by cutting the audio into 60 s pieces encoded separately, which we do not do (the windowed encoder
keeps memory flat without the discontinuities at the cuts); see ``docs/hallo.md``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from core.errors import EngineFailure, InvalidInput, WeightsError
from models.engine import ChunkCarry, ChunkSpec, Frames, RenderInputs, RenderParams
from models.hallo.arcface import ArcFaceEmbedder, IdentityEmbedder
from models.hallo.audio import DEFAULT_CONTEXT_FRAMES, DEFAULT_WINDOW_FRAMES, HalloAudioFeatures
from models.hallo.checkpoint import ARCFACE_FILE, EXTERNAL_MODELS, HalloModules, missing_files
from models.hallo.configs import hallo_scheduler_config
from models.hallo.masks import hallo_masks
from models.hallo.options import HalloOptions
from models.hallo.pipeline import ClipInputs, next_reference_pixels, sample_clip
from models.sd.pipeline import dtype_from_name

logger = logging.getLogger(__name__)

VAE_DIR, AUDIO_ENCODER_DIR = EXTERNAL_MODELS[0][0], EXTERNAL_MODELS[1][0]
PREPROCESSOR_CONFIG = f"{AUDIO_ENCODER_DIR}/preprocessor_config.json"


@dataclass
class HalloComponents:
    """Everything a job runs through.

    Attributes:
        modules: the five ``net.pth`` modules.
        vae: diffusers ``AutoencoderKL`` (sd-vae-ft-mse).
        audio_encoder: transformers ``Wav2Vec2Model`` (wav2vec2-base-960h).
        embedder: the identity embedding (ArcFace through onnxruntime, or a stand-in).
        do_normalize: the wav2vec2 preprocessor's ``do_normalize``.
    """

    modules: HalloModules
    vae: Any
    audio_encoder: Any
    embedder: IdentityEmbedder
    do_normalize: bool = True


@dataclass
class HalloPrepared:
    """Per-job state (see ``models.engine.Prepared``)."""

    num_frames: int
    fps: float
    height: int
    width: int
    options: HalloOptions
    seed: int
    size: int
    portrait: torch.Tensor
    """`(1, 3, size, size)` in [-1, 1]: the face crop."""
    identity_embedding: torch.Tensor
    """`(1, 512)`."""
    face_mask: torch.Tensor
    """`(1, 3, size, size)` in [0, 1]: the face locator's input."""
    audio_masks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    audio: HalloAudioFeatures = field(repr=False)
    paste_back: Any = None


NET_FILES = {"hallo": "hallo/net.pth", "hallo2": "hallo2/net.pth"}
"""The ``variant`` engine switch: which published ``net.pth`` the modules come from."""


def missing_weight_files(
    weights_dir: str | Path, converted_dir: str | Path | None = None, variant: str = "hallo"
) -> list[str]:
    """Files the engine needs that ``weights_dir`` lacks (relative paths; ``a or b``: either).

    ``hallo/net.pth`` (``hallo2/net.pth`` for the ``hallo2`` variant) is not needed when
    ``converted_dir`` holds our converted copy (its manifest).
    The motion-module checkpoint is not needed: the reference loads it and then overwrites every key
    with ``net.pth``'s.
    """
    from models.hallo.checkpoint import CONVERTED_MANIFEST

    if variant not in NET_FILES:
        raise ValueError(f"unknown hallo variant {variant!r}; known: {', '.join(NET_FILES)}")
    root = Path(weights_dir)
    missing = missing_files(root, include_external=True, net_file=NET_FILES[variant])
    if converted_dir is not None and (Path(converted_dir) / CONVERTED_MANIFEST).is_file():
        missing = [path for path in missing if path != NET_FILES[variant]]
    for path in (PREPROCESSOR_CONFIG, ARCFACE_FILE):
        if not (root / path).is_file():
            missing.append(path)
    return [path.replace("|", " or ") for path in missing]


def load_components(
    weights_dir: str | Path,
    device: torch.device,
    dtype: torch.dtype,
    *,
    converted_dir: str | Path | None = None,
    sizes: Any = None,
    variant: str = "hallo",
) -> HalloComponents:
    """The published layout (``models.hallo.checkpoint``) loaded onto `device`.

    ``sizes`` (``models.hallo.checkpoint.ModuleSizes``) is for checkpoints of another size than the
    published one (tests).

    Raises:
        WeightsError: listing every missing file, before anything is loaded; or from the strict
            loaders and onnxruntime.
    """
    import json

    from diffusers import AutoencoderKL
    from transformers import Wav2Vec2Model

    from models.hallo.checkpoint import (
        CONVERTED_MANIFEST,
        convert_to_safetensors,
        load_converted,
        load_published,
    )

    root = Path(weights_dir)
    missing = missing_weight_files(root, converted_dir, variant)
    if missing:
        raise WeightsError(f"the Hallo weights directory {root} is incomplete; missing: {', '.join(missing)}")
    net_file = NET_FILES[variant]
    if converted_dir is None:
        modules = load_published(root, sizes=sizes, device=device, dtype=dtype, net_file=net_file)
    else:
        converted = Path(converted_dir)
        if not (converted / CONVERTED_MANIFEST).is_file():
            logger.info("converting the Hallo weights in %s to %s (once)", root, converted)
            convert_to_safetensors(root, converted, sizes=sizes, net_file=net_file)
        modules = load_converted(converted, device=device, dtype=dtype)
    for _, module in modules.items():
        module.eval()
    autoencoder: Any = AutoencoderKL  # diffusers is untyped
    vae: Any = autoencoder.from_pretrained(root / VAE_DIR, local_files_only=True)
    audio_encoder: Any = Wav2Vec2Model.from_pretrained(root / AUDIO_ENCODER_DIR, local_files_only=True)
    preprocessor = json.loads((root / PREPROCESSOR_CONFIG).read_text())
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.type == "cuda" else None
    embedder = ArcFaceEmbedder(root / ARCFACE_FILE, providers=providers)
    logger.info("Hallo loaded from %s on %s in %s", converted_dir or root, device, dtype)
    return HalloComponents(
        modules=modules,
        vae=vae.to(device=device, dtype=dtype).eval(),
        audio_encoder=audio_encoder.to(device=device, dtype=dtype).eval(),
        embedder=embedder,
        do_normalize=bool(preprocessor.get("do_normalize", True)),
    )


def check_size(size: int) -> None:
    """The model size: a multiple of 64 (the audio masks' coarsest level is 1/64), >= 64.

    Raises:
        InvalidInput: ``invalid_params``.
    """
    if size % 64 or size < 64:
        raise InvalidInput(f"hallo needs size a multiple of 64, >= 64, got {size}", code="invalid_params")


class HalloEngine:
    """The Hallo engine.

    Args:
        weights_dir: Hallo's ``pretrained_models/`` layout (see ``missing_weight_files``); not read
            when ``components`` is given.
        device: ``cuda`` when available, else ``cpu``.
        dtype: ``fp16``, ``bf16`` or ``fp32``; default bf16 (or fp16) on CUDA, fp32 on CPU (the
            reference runs fp16).
        components: pre-built models (tests: ``models.hallo.testing.tiny_components``).
        face_analyzer: ``detect(image) -> list[models.face.Face]``; default MediaPipe, built on first use.
        converted_dir: our safetensors copy of ``net.pth`` (made on first boot when absent; one per variant).
        variant: ``hallo`` (``hallo/net.pth``) or ``hallo2`` (``hallo2/net.pth``, Hallo2's checkpoint of
            the same network; its long-video setting is the job option ``motion_mask_rate``).
        audio_window_frames, audio_context_frames: the wav2vec2 encoder's windows (``models.hallo.audio``).
        warmup_size: the crop size ``warmup`` renders at (a job's; 512 for the published model).

    Raises:
        WeightsError: ``weights_dir`` is missing or incomplete (the message lists the missing files).
        ValueError: an unknown ``variant``, audio windows or warm-up size out of range.
    """

    name = "hallo"
    options_model: type[HalloOptions] = HalloOptions

    def __init__(
        self,
        weights_dir: str | Path | None = None,
        device: str | None = None,
        dtype: str | None = None,
        components: HalloComponents | None = None,
        face_analyzer: Any = None,
        converted_dir: str | Path | None = None,
        audio_window_frames: int = DEFAULT_WINDOW_FRAMES,
        audio_context_frames: int = DEFAULT_CONTEXT_FRAMES,
        warmup_size: int = 512,
        variant: str = "hallo",
    ) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = dtype_from_name(dtype, self.device)
        if audio_window_frames < 1 or audio_context_frames < 0:
            raise ValueError(
                f"audio windows must be >= 1 frame with >= 0 context, got {audio_window_frames}, "
                f"{audio_context_frames}"
            )
        check_size(warmup_size)
        if variant not in NET_FILES:
            raise ValueError(f"unknown hallo variant {variant!r}; known: {', '.join(NET_FILES)}")
        if components is None:
            if weights_dir is None:
                raise WeightsError("the hallo engine needs a weights directory (none configured)")
            components = load_components(
                weights_dir, self.device, self.dtype, converted_dir=converted_dir, variant=variant
            )
        self.components = components
        self.audio_window_frames = audio_window_frames
        self.audio_context_frames = audio_context_frames
        self.warmup_size = warmup_size
        self._face_analyzer = face_analyzer
        self.scheduler_config = hallo_scheduler_config()

    @property
    def face_analyzer(self) -> Any:
        if self._face_analyzer is None:
            from models.face import MediaPipeFaceAnalyzer

            self._face_analyzer = MediaPipeFaceAnalyzer()
        return self._face_analyzer

    def _level_sizes(self, size: int) -> list[tuple[int, int]]:
        levels = len(self.components.modules.denoising_unet.config["block_out_channels"])
        latent = size // 8
        return [(latent >> level, latent >> level) for level in range(levels)]

    def warmup(self) -> None:
        """One guided 1-step clip at the job shapes (``warmup_size``, the default clip) through every
        model but the face analyser, so that an out-of-memory shows at boot."""
        size, options = self.warmup_size, self.options_model()
        frames = options.clip_frames
        audio = np.zeros(frames * 640, dtype=np.float32)
        features = self._audio_features(audio, 25.0, frames)
        masks = hallo_masks(
            _square_mesh(size), (size, size), options.face_expand_ratio, self._level_sizes(size)
        )
        inputs = ClipInputs(
            next_reference_pixels(torch.zeros(1, 3, size, size), None, options.motion_frames),
            torch.zeros(1, 512),
            torch.from_numpy(masks.face_region)[None],
            features.frames(self.components.audio_encoder, 0, frames),
            [tuple(torch.from_numpy(m)[None] for m in level) for level in masks.levels],  # type: ignore[misc]
        )
        self._sample(inputs, options, 1, torch.Generator().manual_seed(0))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # prepare ------------------------------------------------------------------------------------
    def _audio_features(
        self, audio: npt.NDArray[np.float32], fps: float, clip_frames: int
    ) -> HalloAudioFeatures:
        from models.hallo.audio import prepare_audio_features

        features, _ = prepare_audio_features(
            self.components.audio_encoder,
            audio,
            sample_rate=16_000,
            fps=fps,
            clip_frames=clip_frames,
            do_normalize=self.components.do_normalize,
            window_frames=self.audio_window_frames,
            context_frames=self.audio_context_frames,
        )
        return features

    def prepare(self, inputs: RenderInputs, params: RenderParams[HalloOptions]) -> HalloPrepared:
        from models.face import PasteBack, crop_around_face, select_face, transform_points
        from models.hallo.audio import frame_count

        options, size = params.options, params.size
        check_size(size)
        if inputs.sample_rate != 16_000:
            raise EngineFailure(f"hallo expects 16 kHz audio, got {inputs.sample_rate} Hz")
        face = select_face(self.face_analyzer.detect(inputs.image), params.face_index)
        crop = crop_around_face(inputs.image, face, size)
        landmarks = transform_points(np.asarray(face.landmarks), crop.matrix).astype(np.float32)
        keypoints = transform_points(np.asarray(face.keypoints), crop.matrix).astype(np.float32)
        masks = hallo_masks(landmarks, (size, size), options.face_expand_ratio, self._level_sizes(size))
        embedding = self.components.embedder.embed(crop.image, keypoints)
        audio = np.asarray(inputs.audio, dtype=np.float32)
        fps = float(params.fps)
        num_frames = max(1, frame_count(len(audio), inputs.sample_rate, fps))  # the reference's ceil
        paste = PasteBack(inputs.image, size, crop.matrix) if params.framing == "full" else None
        height, width = (paste.height, paste.width) if paste is not None else (size, size)
        portrait = torch.from_numpy(crop.image).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        return HalloPrepared(
            num_frames=num_frames,
            fps=fps,
            height=height,
            width=width,
            options=options,
            seed=int(params.seed),
            size=size,
            portrait=portrait,
            identity_embedding=torch.from_numpy(embedding).reshape(1, -1),
            face_mask=torch.from_numpy(masks.face_region)[None],
            audio_masks=[
                (torch.from_numpy(full)[None], torch.from_numpy(face_)[None], torch.from_numpy(lip)[None])
                for full, face_, lip in masks.levels
            ],
            audio=self._audio_features(audio, fps, options.clip_frames),
            paste_back=paste,
        )

    # plan ---------------------------------------------------------------------------------------
    def plan(self, prepared: HalloPrepared) -> list[ChunkSpec]:
        """One chunk per clip of ``clip_frames`` frames; the last is cut to the audio's frames."""
        clip = prepared.options.clip_frames
        return [
            ChunkSpec(index=i, start=start, stop=min(start + clip, prepared.num_frames))
            for i, start in enumerate(range(0, prepared.num_frames, clip))
        ]

    # render -------------------------------------------------------------------------------------
    def _sample(
        self, inputs: ClipInputs, options: HalloOptions, steps: int, generator: torch.Generator
    ) -> torch.Tensor:
        components = self.components
        return sample_clip(
            components.modules,
            components.vae,
            self.scheduler_config,
            inputs,
            num_inference_steps=steps,
            guidance_scale=options.guidance_scale,
            motion_scale=options.motion_scale(),
            generator=generator,
        )

    def render_chunk(
        self, prepared: HalloPrepared, chunk: ChunkSpec, carry: ChunkCarry | None
    ) -> tuple[Frames, ChunkCarry]:
        options = prepared.options
        clip, motion = options.clip_frames, options.motion_frames
        if chunk.start != chunk.index * clip:
            raise EngineFailure(f"chunk {chunk.index} starts at {chunk.start}, not at clip {chunk.index}")
        generator = torch.Generator()
        previous: torch.Tensor | None = None
        if carry is None:
            if chunk.index != 0:
                raise EngineFailure(f"chunk {chunk.index} needs the carry of chunk {chunk.index - 1}")
            generator.manual_seed(prepared.seed)
        else:
            if carry.meta.get("next_chunk") != chunk.index:
                raise EngineFailure(
                    f"carry for chunk {carry.meta.get('next_chunk')} given to chunk {chunk.index}"
                )
            generator.set_state(torch.from_numpy(carry.arrays["generator_state"].copy()))
            previous = torch.from_numpy(carry.arrays["motion_frames"].copy())
        reference = next_reference_pixels(prepared.portrait, previous, motion)
        reference = self._mask_motion_frames(reference, prepared, chunk.index)
        audio = prepared.audio.frames(self.components.audio_encoder, chunk.start, chunk.start + clip)
        inputs = ClipInputs(
            reference, prepared.identity_embedding, prepared.face_mask, audio, prepared.audio_masks
        )
        decoded = self._sample(inputs, options, options.num_inference_steps, generator)
        next_carry = ChunkCarry(
            arrays={
                "motion_frames": decoded[decoded.shape[0] - motion :].cpu().numpy().astype(np.float32),
                "generator_state": generator.get_state().numpy(),
            },
            meta={"next_chunk": chunk.index + 1},
        )
        pixels = decoded[: chunk.num_frames].permute(0, 2, 3, 1).cpu().numpy()
        frames = np.clip(pixels * 255, 0, 255).astype(np.uint8)  # the reference's tensor_to_video
        if prepared.paste_back is not None:
            frames = prepared.paste_back(frames)
        return frames, next_carry

    def _mask_motion_frames(
        self, reference: torch.Tensor, prepared: HalloPrepared, index: int
    ) -> torch.Tensor:
        """Hallo2's motion-frame mask: pixels outside the face box set to 0 with probability
        ``motion_mask_rate``, one mask per clip (seeded from the job seed and the clip index)."""
        rate = prepared.options.motion_mask_rate
        if rate <= 0.0 or reference.shape[0] < 2:
            return reference
        generator = torch.Generator().manual_seed(prepared.seed * 100_003 + index)
        keep = torch.rand(reference.shape[-2:], generator=generator) > rate
        keep = keep[None, None] | prepared.face_mask.bool()
        masked = reference.clone()
        masked[1:] = reference[1:] * keep
        return masked


def _square_mesh(size: int) -> npt.NDArray[np.float32]:
    """A mesh spread over the middle of a `size` crop (warm-up masks)."""
    grid = np.linspace(0.3 * size, 0.7 * size, 478, dtype=np.float32)
    return np.stack([grid, grid[::-1], np.zeros_like(grid)], axis=1)
