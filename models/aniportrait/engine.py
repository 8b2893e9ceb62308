"""``AniPortraitEngine``: AniPortrait's two stages (audio -> landmarks -> video) behind the engine seam.

Per job, ``prepare`` computes once: the face crop, the portrait's face geometry on it (MediaPipe's
FaceLandmarker, ``geometry.py``), the A2L stage over the whole clip (audio2pose in the reference's
5 s windows, audio2mesh in windows of ``MESH_WINDOW_FRAMES`` with context each side; each window's
mesh is projected and dropped, so only the ``(F, 468, 2)`` float32 points, 3.7 KiB a frame, stay),
the portrait's CLIP token, its reference latents and the ReferenceNet bank. ``render_chunk`` then
draws only its window's landmark images, runs the pose guider on them and denoises the window.

A2L runs at the model's 30 fps; the points and poses are resampled linearly in time to the job's
``fps`` (exactly the A2L frames at 30 fps).

Continuity: the skeleton's motion-frames schedule (``models.sd.sampler.ChunkSchedule``): windows of
``context_frames``, each later one starting with the last ``context_overlap`` frames of the one
before, held to their known latents; the ``ChunkCarry`` holds those latents and the noise
generator's state, so a resumed job reproduces an uninterrupted one exactly and memory does not
depend on the clip length. The reference instead averages overlapping windows over the whole clip
at every step ("uniform" context schedule, ``pipeline.render_clip_reference``), which needs the
whole clip's latents; for a clip of at most ``context_frames`` frames both give the same frames.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import numpy.typing as npt
import torch

from core.errors import EngineFailure, InvalidInput, WeightsError
from core.media import frames_at_rate
from models.aniportrait.a2l import MESH_WINDOW_FRAMES, PortraitMesh, num_frames_of, predict_landmarks
from models.aniportrait.checkpoint import (
    A2L_FILES,
    AUDIO_ENCODER_DIR,
    DENOISING_UNET_FILE,
    MOTION_MODULE_FILE,
    POSE_GUIDER_FILE,
    REFERENCE_UNET_FILE,
    UNET_CONFIG_PATH,
    A2LModules,
)
from models.aniportrait.conditioning import clip_image_tokens, window_conditions
from models.aniportrait.configs import FPS, SAMPLE_RATE
from models.aniportrait.geometry import LANDMARKER_FILE, FaceGeometry
from models.aniportrait.guider import PoseGuider
from models.aniportrait.landmarks import draw_landmarks, smooth_poses
from models.aniportrait.landmarks_file import write_landmarks_npz
from models.aniportrait.options import MAX_CONTEXT_FRAMES, AniPortraitOptions
from models.aniportrait.pipeline import aniportrait_scheduler_config
from models.aniportrait.unet import AniPortraitReferenceNet, AniPortraitUNet3D
from models.engine import (
    ChunkCarry,
    ChunkOutputs,
    ChunkSpec,
    Frames,
    OutputEngine,
    RenderInputs,
    RenderParams,
    num_frames_for,
)
from models.face import hold_last_found
from models.sd.pipeline import ClassifierFreeGuidance, SDVideoPipeline, dtype_from_name
from models.sd.sampler import ChunkSchedule

logger = logging.getLogger(__name__)

VAE_DIR = "sd-vae-ft-mse"
IMAGE_ENCODER_DIR = "image_encoder"
MIN_AUDIO_SAMPLES = 640
"""Shorter audio is padded with silence: wav2vec2's convolutions need 400 samples for one token."""
DRIVING_SMOOTHING = 5
"""Moving-mean window of the driving video's poses (the reference's ``generate_ref_pose.py``)."""


@dataclass
class AniPortraitComponents:
    """Every model of the engine, loaded (``load_components``) or tiny (``models.aniportrait.testing``)."""

    a2l: A2LModules
    pose_guider: PoseGuider
    reference_net: AniPortraitReferenceNet
    denoiser: AniPortraitUNet3D
    vae: Any
    image_encoder: Any
    image_processor: Any


@dataclass
class AniPortraitPrepared:
    """Per-job state (see ``models.engine.Prepared``)."""

    num_frames: int
    fps: float
    height: int
    width: int
    options: AniPortraitOptions
    seed: int
    crop_size: int
    crop_matrix: npt.NDArray[np.float64]
    points: npt.NDArray[np.float32]
    """`(num_frames, 468, 2)` A2L landmarks in crop pixels."""
    poses: npt.NDArray[np.float32]
    """`(num_frames, 6)` head poses (degrees, canonical-space translation)."""
    clip_tokens: torch.Tensor
    bank: list[torch.Tensor]
    paste_back: Any = None


def missing_weight_files(weights_dir: str | Path) -> list[str]:
    """Files the engine needs that are absent, as paths relative to ``weights_dir`` (the reference's
    ``pretrained_model/`` plus MediaPipe's FaceLandmarker bundle from its ``src/utils/mp_models/``)."""
    root = Path(weights_dir)
    groups: list[tuple[str, ...]] = [
        *((name,) for name in A2L_FILES),
        (POSE_GUIDER_FILE,),
        (REFERENCE_UNET_FILE,),
        (DENOISING_UNET_FILE,),
        (MOTION_MODULE_FILE,),
        (f"{AUDIO_ENCODER_DIR}/config.json",),
        (UNET_CONFIG_PATH,),
        (f"{VAE_DIR}/config.json",),
        (f"{VAE_DIR}/diffusion_pytorch_model.safetensors", f"{VAE_DIR}/diffusion_pytorch_model.bin"),
        (f"{IMAGE_ENCODER_DIR}/config.json",),
        (f"{IMAGE_ENCODER_DIR}/model.safetensors", f"{IMAGE_ENCODER_DIR}/pytorch_model.bin"),
        (LANDMARKER_FILE,),
    ]
    return [" or ".join(names) for names in groups if not any((root / name).is_file() for name in names)]


def load_components(
    weights_dir: str | Path, device: torch.device, dtype: torch.dtype
) -> AniPortraitComponents:
    """Load every model from the published layout, strictly (``models.aniportrait.checkpoint``).

    Raises:
        WeightsError: listing every missing file, before anything is loaded; or from the strict loaders.
    """
    from diffusers import AutoencoderKL
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    from models.aniportrait.checkpoint import load_a2l, load_pose_guider, load_unets

    root = Path(weights_dir)
    missing = missing_weight_files(root)
    if missing:
        raise WeightsError(
            f"the AniPortrait weights directory {root} is incomplete; missing: {', '.join(missing)}"
        )
    a2l = load_a2l(root, device=device, dtype=torch.float32)  # A2L is small: fp32 everywhere
    guider = load_pose_guider(root, device=device, dtype=dtype)
    reference, denoiser = load_unets(root, device=device, dtype=dtype)
    vae_class: Any = AutoencoderKL
    vae: Any = vae_class.from_pretrained(root / VAE_DIR, local_files_only=True)
    encoder: Any = CLIPVisionModelWithProjection.from_pretrained(
        root / IMAGE_ENCODER_DIR, local_files_only=True
    )
    logger.info("AniPortrait loaded from %s on %s in %s", root, device, dtype)
    return AniPortraitComponents(
        a2l=a2l,
        pose_guider=guider,
        reference_net=reference,
        denoiser=denoiser,
        vae=vae.to(device=device, dtype=dtype).eval(),
        image_encoder=encoder.to(device=device, dtype=dtype).eval(),
        image_processor=CLIPImageProcessor(),
    )


def resample_frames(
    values: npt.NDArray[Any], num_frames: int, fps: float, block: int = 256
) -> npt.NDArray[np.float32]:
    """Per-frame values at 30 fps (axis 0) resampled linearly to `num_frames` frames at `fps`, float32:
    frame ``i`` is at 30 fps frame ``i * 30 / fps``, clamped to the last (the A2L frames at 30 fps).
    Computed `block` frames at a time, so no whole-clip float64 temporaries are made."""
    resampled = np.empty((num_frames, *values.shape[1:]), dtype=np.float32)
    for first in range(0, num_frames, block):
        index = np.arange(first, min(first + block, num_frames))
        position = np.minimum(index * (FPS / fps), values.shape[0] - 1)
        low = np.floor(position).astype(np.int64)
        high = np.minimum(low + 1, values.shape[0] - 1)
        weight = (position - low).reshape(-1, *([1] * (values.ndim - 1)))
        resampled[index] = values[low] * (1 - weight) + values[high] * weight
    return resampled


def poses_from_matrices(matrices: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Each frame's facial transformation matrix relative to the first, as ``(rx, ry, rz, tx, ty, tz)``
    (extrinsic ``xyz`` Euler degrees), as the reference's ``generate_ref_pose.py`` computes them."""
    from scipy.spatial.transform import Rotation

    relative = np.linalg.inv(matrices[0])[None] @ matrices
    poses = np.zeros((len(matrices), 6))
    poses[:, :3] = Rotation.from_matrix(relative[:, :3, :3]).as_euler("xyz", degrees=True)
    poses[:, 3:] = relative[:, :3, 3]
    return poses


def mirror_tile(poses: npt.NDArray[np.float64], num_frames: int) -> npt.NDArray[np.float64]:
    """A pose sequence played forwards then backwards until `num_frames` (``audio2vid.py``'s ``pose_temp``)."""
    if len(poses) >= num_frames:
        return poses[:num_frames]
    mirrored = np.concatenate([poses, poses[-2:0:-1]]) if len(poses) > 2 else poses
    return np.tile(mirrored, (num_frames // len(mirrored) + 1, 1))[:num_frames]


def driving_video_poses(video: bytes, analyzer: Any, crop: Any, num_frames: int) -> npt.NDArray[np.float64]:
    """Head poses of the driving video's face at 30 fps, relative to its first frame.

    Frames are decoded one at a time (PyAV); 30 fps frame ``i`` takes the last driving frame shown
    at ``i / 30`` s; each is analysed by ``analyzer.analyze`` (``FaceGeometryAnalyzer``) on the
    frame resized by ``crop(frame)``. A frame without a face holds the previous pose (the reference
    stops at it); the poses are smoothed over ``DRIVING_SMOOTHING`` frames and a video shorter than
    the audio is played back and forth (the reference's pose template).

    Raises:
        ValueError: the bytes are not a decodable video, or no frame shows a face.
    """
    matrices = [_matrix_of(analyzer, crop(frame)) for frame in frames_at_rate(video, FPS, num_frames)]
    filled = hold_last_found(matrices)
    poses = smooth_poses(poses_from_matrices(np.stack(filled)), DRIVING_SMOOTHING)
    return mirror_tile(poses, num_frames)


def _matrix_of(analyzer: Any, image: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64] | None:
    geometry: FaceGeometry | None = analyzer.analyze(image)
    return None if geometry is None else geometry.transformation_matrix


class AniPortraitEngine:
    """The AniPortrait engine.

    Args:
        weights_dir: the published layout (see ``missing_weight_files``); not read when
            ``components`` is given.
        device: ``cuda`` when available, else ``cpu``.
        dtype: ``fp16``, ``bf16`` or ``fp32`` for the L2V models (A2L always runs in fp32); default
            bf16 (or fp16) on CUDA, fp32 on CPU.
        components: pre-built models (tests: ``models.aniportrait.testing.tiny_components``).
        face_analyzer: ``detect(image) -> list[models.face.Face]`` for the crop; default MediaPipe.
        geometry_analyzer: ``analyze(image) -> FaceGeometry | None``; default a
            ``FaceGeometryAnalyzer`` on ``weights_dir``'s FaceLandmarker bundle.
        decode_batch_frames: frames decoded by the VAE at once.
        mesh_window_frames: audio2mesh's longest pass (frames at 30 fps).
        warmup_size, warmup_context_frames: the shapes ``warmup`` renders at.

    Raises:
        WeightsError: ``weights_dir`` is missing or incomplete (the message lists the missing files).
    """

    name = "aniportrait"
    options_model: type[AniPortraitOptions] = AniPortraitOptions

    def __init__(
        self,
        weights_dir: str | Path | None = None,
        device: str | None = None,
        dtype: str | None = None,
        components: AniPortraitComponents | None = None,
        face_analyzer: Any = None,
        geometry_analyzer: Any = None,
        decode_batch_frames: int = 8,
        mesh_window_frames: int = MESH_WINDOW_FRAMES,
        warmup_size: int = 512,
        warmup_context_frames: int = 16,
    ) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = dtype_from_name(dtype, self.device)
        if warmup_size % 64 or warmup_size < 64:
            raise ValueError(f"warmup_size must be a multiple of 64, got {warmup_size}")
        if not 1 <= warmup_context_frames <= MAX_CONTEXT_FRAMES:
            raise ValueError(f"warmup_context_frames must be in [1, {MAX_CONTEXT_FRAMES}]")
        if components is None:
            if weights_dir is None:
                raise WeightsError("the aniportrait engine needs a weights_dir (PARLA_WEIGHTS_DIR)")
            components = load_components(weights_dir, self.device, self.dtype)
        if geometry_analyzer is None:
            from models.aniportrait.geometry import FaceGeometryAnalyzer

            if weights_dir is None:
                raise WeightsError(f"the aniportrait engine needs {LANDMARKER_FILE} in a weights_dir")
            geometry_analyzer = FaceGeometryAnalyzer(Path(weights_dir) / LANDMARKER_FILE)
        self.components = components
        self.geometry_analyzer = geometry_analyzer
        self._face_analyzer = face_analyzer
        self.decode_batch_frames = decode_batch_frames
        self.mesh_window_frames = mesh_window_frames
        self.warmup_size = warmup_size
        self.warmup_context_frames = warmup_context_frames
        self.pipeline = SDVideoPipeline(
            components.vae,
            components.reference_net,
            components.denoiser,
            aniportrait_scheduler_config(),
            self.device,
            self.dtype,
        )

    @property
    def face_analyzer(self) -> Any:
        if self._face_analyzer is None:
            from models.face import MediaPipeFaceAnalyzer

            self._face_analyzer = MediaPipeFaceAnalyzer()
        return self._face_analyzer

    def warmup(self) -> None:
        """A 1-step guided render of one window at ``warmup_size`` through the L2V models, and A2L on
        a second of silence (no face analysis), so that an out-of-memory shows at boot."""
        size, frames = self.warmup_size, self.warmup_context_frames
        image = np.full((size, size, 3), 128, dtype=np.uint8)
        tokens = self._clip_tokens(image)
        bank = self.pipeline.reference_bank(self.pipeline.encode_reference(image), tokens)
        geometry = PortraitMesh(np.zeros((468, 3)), np.eye(4))
        predict_landmarks(
            self.components.a2l,
            np.zeros(SAMPLE_RATE, dtype=np.float32),
            geometry,
            head_motion="audio2pose",
            seed=0,
            height=size,
            width=size,
        )
        poses = np.zeros((frames, size, size, 3), dtype=np.uint8)
        conditions = window_conditions(self.components.pose_guider, tokens, bank, poses, guidance=True)
        latents = self.pipeline.denoise_window(
            self.pipeline.draw_noise(
                (1, self.pipeline.latent_channels, frames, size // 8, size // 8), torch.Generator()
            ),
            conditions,
            ClassifierFreeGuidance(2.0),
            self.pipeline.make_scheduler(1),
        )
        self.pipeline.decode_latents(latents, self.decode_batch_frames)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # prepare ------------------------------------------------------------------------------------
    def _clip_tokens(self, image: npt.NDArray[np.uint8]) -> torch.Tensor:
        tokens = clip_image_tokens(self.components.image_encoder, self.components.image_processor, image)
        return tokens.to(self.device, self.dtype)

    def prepare(self, inputs: RenderInputs, params: RenderParams[AniPortraitOptions]) -> AniPortraitPrepared:
        from models.face import PasteBack, crop_around_face, select_face

        options = params.options
        if options.head_motion == "driving" and inputs.driving_video is None:
            raise InvalidInput("head_motion 'driving' needs a driving_video", code="invalid_params")
        size = params.size
        if size % 64 or size < 64:
            raise InvalidInput(f"size must be a multiple of 64, >= 64, got {size}", code="invalid_params")
        if inputs.sample_rate != SAMPLE_RATE:
            raise EngineFailure(f"aniportrait expects 16 kHz audio, got {inputs.sample_rate} Hz")
        face = select_face(self.face_analyzer.detect(inputs.image), params.face_index)
        crop = crop_around_face(inputs.image, face, size)
        geometry: FaceGeometry | None = self.geometry_analyzer.analyze(crop.image)
        if geometry is None:
            raise InvalidInput(
                "the face landmarker found no face in the portrait's crop", code="no_face_found"
            )
        audio = np.asarray(inputs.audio, dtype=np.float32)
        if len(audio) < MIN_AUDIO_SAMPLES:
            audio = np.pad(audio, (0, MIN_AUDIO_SAMPLES - len(audio)))
        a2l_frames = num_frames_of(len(audio))
        given = None
        head_motion: Literal["audio2pose", "still", "given"] = (
            "given" if options.head_motion == "driving" else options.head_motion
        )
        if options.head_motion == "driving":
            assert inputs.driving_video is not None

            def crop_frame(frame: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
                import cv2

                return np.asarray(cv2.resize(frame, (size, size)), dtype=np.uint8)

            try:
                given = driving_video_poses(
                    inputs.driving_video, self.geometry_analyzer, crop_frame, a2l_frames
                )
            except ValueError as error:
                raise InvalidInput(str(error), code="invalid_driving_video") from None
        landmarks = predict_landmarks(
            self.components.a2l,
            audio,
            geometry.portrait_mesh(),
            head_motion=head_motion,
            seed=int(params.seed),
            height=size,
            width=size,
            poses=given,
            mesh_window_frames=self.mesh_window_frames,
        )
        num_frames = num_frames_for(inputs.duration_s, params.fps)
        points = resample_frames(landmarks.points, num_frames, float(params.fps))
        poses = resample_frames(landmarks.poses, num_frames, float(params.fps))
        paste = PasteBack(inputs.image, size, crop.matrix) if params.framing == "full" else None
        height, width = (paste.height, paste.width) if paste is not None else (size, size)
        tokens = self._clip_tokens(crop.image)
        bank = self.pipeline.reference_bank(self.pipeline.encode_reference(crop.image), tokens)
        return AniPortraitPrepared(
            num_frames=num_frames,
            fps=float(params.fps),
            height=height,
            width=width,
            options=options,
            seed=int(params.seed),
            crop_size=size,
            crop_matrix=np.asarray(crop.matrix, dtype=np.float64),
            points=points,
            poses=poses,
            clip_tokens=tokens,
            bank=list(bank),
            paste_back=paste,
        )

    # plan -----------------------------------------------------------------------------------------
    def _schedule(self, prepared: AniPortraitPrepared) -> ChunkSchedule:
        options = prepared.options
        return ChunkSchedule(
            prepared.num_frames, options.context_frames, options.context_overlap, prepared.seed
        )

    def plan(self, prepared: AniPortraitPrepared) -> list[ChunkSpec]:
        """One chunk per window of the motion-frames schedule (its new frames)."""
        return self._schedule(prepared).plan()

    # render ---------------------------------------------------------------------------------------
    def landmark_images(self, prepared: AniPortraitPrepared, start: int, stop: int) -> npt.NDArray[np.uint8]:
        """The drawn landmark images of frames ``[start, stop)``, ``(F, size, size, 3)`` uint8."""
        size = prepared.crop_size
        return np.stack([draw_landmarks(points, size, size) for points in prepared.points[start:stop]])

    def render_chunk(
        self, prepared: AniPortraitPrepared, chunk: ChunkSpec, carry: ChunkCarry | None
    ) -> tuple[Frames, ChunkCarry]:
        options = prepared.options
        guidance = ClassifierFreeGuidance(options.guidance_scale)

        def conditions(start: int, stop: int) -> Any:
            return window_conditions(
                self.components.pose_guider,
                prepared.clip_tokens,
                prepared.bank,
                self.landmark_images(prepared, start, stop),
                guidance=guidance.do_classifier_free_guidance,
            )

        side = prepared.crop_size // self.pipeline.vae_scale_factor
        latents, next_carry = self.pipeline.denoise_motion_frames_chunk(
            self._schedule(prepared),
            chunk,
            carry,
            conditions,
            guidance,
            self.pipeline.make_scheduler(options.num_inference_steps),
            latent_size=(side, side),
        )
        frames = self.pipeline.decode_latents(latents, self.decode_batch_frames)
        if prepared.paste_back is not None:
            frames = prepared.paste_back(frames)
        return frames, next_carry

    def render_chunk_outputs(
        self,
        prepared: AniPortraitPrepared,
        chunk: ChunkSpec,
        carry: ChunkCarry | None,
        outputs: frozenset[str],
    ) -> tuple[Frames, ChunkCarry, ChunkOutputs]:
        """``render_chunk``, plus the chunk's ``landmarks`` when asked: ``points`` ``(F, 468, 2)`` float32
        in crop pixels and ``poses`` ``(F, 6)`` float32 (``video`` in `outputs` is the frames).

        Raises:
            EngineFailure: an output this engine does not make.
        """
        unknown = sorted(set(outputs) - {"video", "landmarks"})
        if unknown:
            raise EngineFailure(f"aniportrait does not make the outputs {', '.join(unknown)}")
        frames, next_carry = self.render_chunk(prepared, chunk, carry)
        extra: ChunkOutputs = {}
        if "landmarks" in outputs:
            extra["landmarks"] = {
                "points": prepared.points[chunk.start : chunk.stop].copy(),
                "poses": prepared.poses[chunk.start : chunk.stop].copy(),
            }
        return frames, next_carry, extra

    def write_output(
        self,
        prepared: AniPortraitPrepared,
        name: str,
        arrays: dict[str, npt.NDArray[Any]],
        target: BinaryIO,
    ) -> None:
        """Write the ``parla-landmarks`` NPZ (``models.aniportrait.landmarks_file``) of the joined
        chunks into `target` (the arrays may be read-only memory maps: they are read once).

        Raises:
            EngineFailure: another output name, or arrays that do not cover the job's frames.
        """
        if name != "landmarks":
            raise EngineFailure(f"aniportrait does not make the output {name!r}")
        points, poses = arrays.get("points"), arrays.get("poses")
        if (
            points is None
            or poses is None
            or len(points) != prepared.num_frames
            or len(poses) != prepared.num_frames
        ):
            raise EngineFailure(
                f"landmarks need points and poses of all {prepared.num_frames} frames, got "
                f"{sorted((key, len(value)) for key, value in arrays.items())}"
            )
        write_landmarks_npz(
            target,
            points,
            poses,
            fps=prepared.fps,
            width=prepared.crop_size,
            height=prepared.crop_size,
            head_motion=prepared.options.head_motion,
            crop_matrix=prepared.crop_matrix.tolist(),
            model=self.name,
        )


def _as_output_engine(engine: AniPortraitEngine) -> OutputEngine[AniPortraitPrepared, AniPortraitOptions]:
    """Never called: mypy checks here that the engine satisfies the runner's ``OutputEngine`` protocol."""
    return engine
