"""The ``liveportrait`` engine: implicit-keypoint neural warp rendering with the published LivePortrait weights.

1. ``prepare`` (once per job): find the face (MediaPipe), make the LivePortrait crop (`crop`), run
   the appearance and motion extractors on it once (`pipeline.SourcePortrait`), build the job's motion
   source (`motion_source`: driving video, procedural audio, an audio -> motion model of
   `models.motion` (Ditto, JoyVASA: ``motion_model``) or still), and for ``framing="full"`` the
   paste-back of the 512-pixel render into the photo.
2. ``render_chunk``: the source's motion for the chunk's frames, keypoint composition (relative motion,
   retargeting, stitching), warp + decode in batches, resize or paste back. The ``ChunkCarry`` holds the
   motion source's continuity state, so chunked, one-shot and resumed renders are identical.

A job may ask for its motion too (``outputs=["video", "motion"]``): the motion source's per-frame
kp-info arrays, written as a ``parla-motion`` NPZ (``models.motion.kp_info``) with the frame they are
applied relative to (``ref_*`` arrays) when the source is relative (driving video, motion models).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np
import numpy.typing as npt
import torch

from core.errors import InvalidInput, WeightsError
from models.engine import (
    FEATURE_SAMPLE_RATE,
    ChunkCarry,
    ChunkOutputs,
    ChunkSpec,
    Frames,
    RenderInputs,
    RenderParams,
    even_chunks,
    num_frames_for,
)
from models.face import Face, FaceAnalyzer, MediaPipeFaceAnalyzer, PasteBack, select_face
from models.liveportrait.checkpoint import LivePortraitModules, load_weights, missing_files
from models.liveportrait.crop import crop_face, eye_close_ratios, lip_close_ratio
from models.liveportrait.driving import DrivingVideoSource, driving_motion
from models.liveportrait.motion_source import (
    MOTION_KEYS,
    MotionFrames,
    MotionSource,
    SourceCarry,
    StillSource,
)
from models.liveportrait.options import LivePortraitOptions
from models.liveportrait.paste import LivePortraitPasteBack
from models.liveportrait.pipeline import LivePortraitPipeline, RetargetSettings, SourcePortrait, to_uint8
from models.liveportrait.procedural import ProceduralAudioSource
from models.motion.eyes import eye_attributes
from models.motion.generator import MotionGenerator, PortraitMotion
from models.motion.kp_info import MotionSequence, write_motion_npz
from models.motion.source import AudioMotionSource

MIN_SIZE, MAX_SIZE = 64, 1024
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_CARRY_PREFIX = "source."


@dataclass
class LivePortraitPrepared:
    """Per-job state (what the runner reads: ``num_frames``, ``fps``, ``height``, ``width``)."""

    num_frames: int
    fps: float
    height: int
    width: int
    size: int
    source: SourcePortrait
    motion: MotionSource
    settings: RetargetSettings
    paste: PasteBack | None
    motion_name: str = "still"
    """Where the motion comes from: ``driving``, ``procedural``, ``ditto``, ``joyvasa`` or ``still``."""


def check_weights(weights_dir: Path) -> None:
    """Raises `WeightsError` naming every missing file, unless `weights_dir` holds our converted layout
    or Ditto's complete layout of the same networks (`models.liveportrait.checkpoint.DITTO_FILES`)."""
    weights_dir = Path(weights_dir)
    if (weights_dir / "manifest.json").is_file() or not missing_files(weights_dir, "ditto"):
        return
    missing = missing_files(weights_dir)
    if missing:
        raise WeightsError(
            f"the liveportrait engine needs the published LivePortrait files under {weights_dir}: missing "
            + ", ".join(missing)
            + " (download KwaiVGI/LivePortrait's pretrained_weights/liveportrait, or Ditto's ditto_pytorch/models "
            "from digital-avatar/ditto-talkinghead, or convert them with "
            "models.liveportrait.checkpoint.convert_to_safetensors)"
        )


class LivePortraitEngine:
    """The LivePortrait renderer behind the engine seam.

    Args:
        device: torch device for the networks.
        weights_dir: the published layout (or our converted one); ignored when `modules` is given.
        dtype: "fp32", "fp16" or "bf16" on CUDA (default fp16, as the reference's half precision);
            always fp32 on CPU.
        modules: already built modules (tiny random ones for tests).
        face_analyzer: MediaPipe by default.
        chunk_seconds: length of a chunk of ``plan``.
        batch_size: frames per warp/decode batch.
        compile: ``torch.compile`` the warp and decoder.
        motion_models: the audio -> motion models to load (``"ditto"``, ``"joyvasa"``) from their
            published layouts under `motion_weights_dir` (`models.motion.weights`); the engine refuses
            to start (`WeightsError`) when a file is missing. A job asking for a motion model that
            is not loaded is refused at prepare.
        motion_weights_dir: root of the motion models' layouts (default: `weights_dir`).
        motion_dtype: "fp32" (default), "fp16" or "bf16" for the motion models on CUDA (their
            denoisers and JoyVASA's HuBERT; Ditto's HuBERT is an fp32 ONNX graph); always fp32 on CPU.
        motion_generator: already built motion models (tiny random ones for tests); with it,
            `motion_models` names which of them jobs may use (default: those it has).
    """

    name = "liveportrait"
    options_model = LivePortraitOptions

    def __init__(
        self,
        *,
        device: str = "cpu",
        weights_dir: Path | str | None = None,
        dtype: str | None = None,
        modules: LivePortraitModules | None = None,
        face_analyzer: FaceAnalyzer | None = None,
        chunk_seconds: float = 2.0,
        batch_size: int = 8,
        compile: bool = False,
        motion_models: Sequence[str] | None = None,
        motion_weights_dir: Path | str | None = None,
        motion_generator: MotionGenerator | None = None,
        motion_dtype: str | None = None,
    ) -> None:
        if chunk_seconds <= 0 or batch_size < 1:
            raise ValueError(
                f"chunk_seconds must be > 0 and batch_size >= 1, got {chunk_seconds}, {batch_size}"
            )
        for label, value in (("dtype", dtype), ("motion_dtype", motion_dtype)):
            if value is not None and value not in DTYPES:
                raise ValueError(f"{label} must be one of {sorted(DTYPES)}, got {value!r}")
        on_cuda = torch.device(device).type == "cuda"
        torch_dtype = DTYPES[dtype or "fp16"] if on_cuda else torch.float32
        motion_torch_dtype = DTYPES[motion_dtype or "fp32"] if on_cuda else torch.float32
        if modules is None:
            if weights_dir is None:
                raise WeightsError(
                    "the liveportrait engine needs weights_dir (the published LivePortrait files)"
                )
            check_weights(Path(weights_dir))
            modules = load_weights(Path(weights_dir), device=device, dtype=torch_dtype)
        self.pipeline = LivePortraitPipeline(modules, device=device, dtype=torch_dtype, compile=compile)
        self.analyzer: FaceAnalyzer = face_analyzer or MediaPipeFaceAnalyzer()
        self.chunk_seconds = chunk_seconds
        self.batch_size = batch_size
        self.motion_generator, self.motion_models = _motion_models(
            motion_models, motion_generator, motion_weights_dir or weights_dir, device, motion_torch_dtype
        )

    def warmup(self) -> None:
        """Run every network once at the real shapes (and a full batch through warp + decode)."""
        size = self.pipeline.config.input_size
        crop = np.full((size, size, 3), 128, np.uint8)
        source = self.pipeline.prepare_source(crop, np.array([0.3, 0.3], np.float32), 0.0)
        still = StillSource(self.batch_size, self.pipeline.config.num_kp)
        frames, _ = still.frames(0, self.batch_size, None)
        self.pipeline.animate(source, frames, still.reference, RetargetSettings(), batch_size=self.batch_size)
        self.analyzer.detect(np.zeros((64, 64, 3), dtype=np.uint8))

    def prepare(
        self, inputs: RenderInputs, params: RenderParams[LivePortraitOptions]
    ) -> LivePortraitPrepared:
        # 1. Check inputs (the options were validated at submit; the inputs are checked here again)
        options = params.options
        has_video = inputs.driving_video is not None
        if options.head_motion == "driving" and not has_video:
            raise InvalidInput('head_motion="driving" needs a driving_video', code="invalid_params")
        if has_video and options.head_motion != "driving":
            raise InvalidInput(
                f'the job has a driving_video but head_motion="{options.head_motion}" would ignore it',
                code="invalid_params",
            )
        size = int(params.size)
        if not MIN_SIZE <= size <= MAX_SIZE:
            raise InvalidInput(f"size must be in [{MIN_SIZE}, {MAX_SIZE}], got {size}", code="invalid_params")
        if params.fps <= 0:
            raise InvalidInput(f"fps must be > 0, got {params.fps}", code="invalid_params")
        image = np.ascontiguousarray(inputs.image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InvalidInput(
                f"expected an RGB uint8 image, got {image.dtype} {image.shape}", code="invalid_image"
            )

        # 2. Face, crop and the source's features (once per job).
        face = select_face(self.analyzer.detect(image), params.face_index)
        crop = crop_face(image, face, self.pipeline.config.output_size)  # 512 at full size, as the reference
        eye_ratios = eye_close_ratios(face)
        source = self.pipeline.prepare_source(crop.image, eye_ratios, lip_close_ratio(face))

        # 3. The motion source.
        num_frames = num_frames_for(inputs.duration_s, params.fps)
        num_kp = self.pipeline.config.num_kp
        motion: MotionSource
        if options.head_motion == "driving":
            assert inputs.driving_video is not None  # the options check guarantees it
            driving = driving_motion(
                inputs.driving_video, self.analyzer, self.pipeline, num_frames, params.fps
            )
            motion = DrivingVideoSource(
                driving, eye_retargeting=options.eye_retargeting, lip_retargeting=options.lip_retargeting
            )
        elif options.motion_model != "procedural":
            motion = self._motion_model_source(inputs, params, crop.image, face, crop.matrix, num_frames)
        elif options.head_motion == "audio":
            motion = ProceduralAudioSource(
                inputs.audio,
                inputs.sample_rate,
                params.fps,
                num_frames,
                num_kp,
                seed=int(params.seed),
                sway_degrees=options.sway_degrees,
                blink=options.blink,
                eye_open=float(eye_ratios.mean()),
            )
        else:
            motion = StillSource(num_frames, num_kp)

        # 4. Output geometry: the render is the 512-pixel crop, pasted back or resized.
        paste = (
            LivePortraitPasteBack(image, self.pipeline.config.output_size, crop.matrix)
            if params.framing == "full"
            else None
        )
        height, width = (paste.height, paste.width) if paste else (size, size)
        settings = RetargetSettings(
            stitching=options.stitching,
            driving_option=options.driving_option,
            driving_multiplier=options.driving_multiplier,
            normalize_lip=options.normalize_lip,
            eye_multiplier=options.eye_multiplier,
            lip_multiplier=options.lip_multiplier,
        )
        return LivePortraitPrepared(
            num_frames=num_frames,
            fps=float(params.fps),
            height=height,
            width=width,
            size=size,
            source=source,
            motion=motion,
            settings=settings,
            paste=paste,
            motion_name=_motion_name(options),
        )

    def _motion_model_source(
        self,
        inputs: RenderInputs,
        params: RenderParams[LivePortraitOptions],
        crop: npt.NDArray[np.uint8],
        face: Face,
        matrix: npt.NDArray[np.float64],
        num_frames: int,
    ) -> MotionSource:
        options = params.options
        model = options.motion_model
        if model not in self.motion_models or self.motion_generator is None:
            loaded = ", ".join(self.motion_models) or "none"
            raise InvalidInput(
                f'motion_model "{model}" is not loaded by this worker (motion models loaded: {loaded}); '
                f'its weights must be configured (motion_models=["{model}"]) with its published files',
                code="invalid_params",
            )
        if inputs.sample_rate != FEATURE_SAMPLE_RATE:
            raise InvalidInput(
                f"motion models need {FEATURE_SAMPLE_RATE} Hz audio, got {inputs.sample_rate}",
                code="invalid_audio",
            )
        crop_size = self.pipeline.config.output_size
        # The motion extractor's raw output (pose as bin logits), as the motion models take it.
        with torch.no_grad():
            raw = self.pipeline.modules.motion_extractor(self.pipeline.prepare_images(crop[None]))
        kp_info = {
            key: getattr(raw, key).float().reshape(-1).cpu().numpy().astype(np.float32)
            for key in ("scale", "pitch", "yaw", "roll", "t", "exp", "kp")
        }
        eye_open, eye_ball = eye_attributes(crop_landmarks(face.landmarks, matrix, crop_size))
        portrait = PortraitMotion(kp_info, eye_open, eye_ball)
        source: MotionSource = AudioMotionSource(
            self.motion_generator,
            options.motion_options(),
            portrait,
            np.asarray(inputs.audio, np.float32),
            num_frames,
            seed=int(params.seed),
            fps=float(params.fps),  # the models' 25 fps motion is resampled to the job's rate
        )
        return source

    def plan(self, prepared: LivePortraitPrepared) -> list[ChunkSpec]:
        # Whole batches per chunk: the last batch of every chunk would otherwise be padded.
        batches = max(1, round(self.chunk_seconds * prepared.fps / self.batch_size))
        return even_chunks(prepared.num_frames, batches * self.batch_size)

    def render_chunk(
        self, prepared: LivePortraitPrepared, chunk: ChunkSpec, carry: ChunkCarry | None
    ) -> tuple[Frames, ChunkCarry]:
        """Frames ``chunk.start .. chunk.stop`` as uint8 ``(F, height, width, 3)`` and the next carry."""
        out, next_carry, _ = self._render(prepared, chunk, carry)
        return out, next_carry

    def render_chunk_outputs(
        self,
        prepared: LivePortraitPrepared,
        chunk: ChunkSpec,
        carry: ChunkCarry | None,
        outputs: frozenset[str],
    ) -> tuple[Frames, ChunkCarry, ChunkOutputs]:
        """``render_chunk`` and the chunk's motion (``outputs`` is ``{"motion"}``: all it makes)."""
        out, next_carry, motion = self._render(prepared, chunk, carry)
        return out, next_carry, {"motion": _motion_arrays(motion)} if "motion" in outputs else {}

    def write_output(
        self, prepared: LivePortraitPrepared, name: str, arrays: dict[str, npt.NDArray[Any]], target: BinaryIO
    ) -> None:
        """The job's motion as a ``parla-motion`` NPZ (the only output besides the video it makes)."""
        if name != "motion":
            raise ValueError(f"the liveportrait engine makes no {name!r} output")
        reference = prepared.motion.reference
        extra = {key: value for key, value in arrays.items() if key not in MOTION_KEYS}
        if reference is not None:
            extra.update({f"ref_{key}": value for key, value in _motion_arrays(reference).items()})
        write_motion_npz(
            target,
            MotionSequence.from_arrays(arrays),
            prepared.fps,
            prepared.motion_name,
            applied="absolute" if reference is None else "relative",
            extra_arrays=extra,
        )

    def _render(
        self, prepared: LivePortraitPrepared, chunk: ChunkSpec, carry: ChunkCarry | None
    ) -> tuple[Frames, ChunkCarry, MotionFrames]:
        state = _source_carry(carry, chunk)
        frames, state = prepared.motion.frames(chunk.start, chunk.stop, state)
        kp = self.pipeline.driving_keypoints(
            prepared.source, frames, prepared.motion.reference, prepared.settings
        )
        rendered = to_uint8(self.pipeline.render(prepared.source, kp, batch_size=self.batch_size))
        if prepared.paste is not None:
            out = prepared.paste(rendered)
        elif rendered.shape[1] != prepared.size:
            out = np.stack(
                [
                    cv2.resize(f, (prepared.size, prepared.size), interpolation=cv2.INTER_AREA)
                    for f in rendered
                ]
            )
        else:
            out = rendered
        arrays = {_CARRY_PREFIX + key: value for key, value in state.items()}
        return out, ChunkCarry(arrays=arrays, meta={"next_frame": chunk.stop}), frames


def _motion_name(options: LivePortraitOptions) -> str:
    if options.head_motion == "driving":
        return "driving"
    if options.motion_model != "procedural":
        return str(options.motion_model)
    return "procedural" if options.head_motion == "audio" else "still"


def _motion_arrays(motion: MotionFrames) -> dict[str, npt.NDArray[Any]]:
    """A chunk's motion as named float32 arrays (kp-info, plus the eye/lip ratios when it has them)."""
    arrays: dict[str, npt.NDArray[Any]] = {
        key: np.asarray(getattr(motion, key), np.float32).copy() for key in MOTION_KEYS
    }
    for key in ("eye_ratio", "lip_ratio"):
        value = getattr(motion, key)
        if value is not None:
            arrays[key] = np.asarray(value, np.float32).copy()
    return arrays


def crop_landmarks(
    landmarks: npt.NDArray[np.float32], matrix: npt.NDArray[np.float64], size: int
) -> npt.NDArray[np.float32]:
    """The face mesh ``(478, 3)`` in the crop, normalised by the crop size (Ditto's eye-attribute frame:
    x / size, y / size, z / size, z scaled like x by the crop's zoom)."""
    points = np.asarray(landmarks, np.float64)
    xy = points[:, :2] @ matrix[:, :2].T + matrix[:, 2]
    zoom = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    out: npt.NDArray[np.float32] = (np.concatenate([xy, points[:, 2:3] * zoom], axis=1) / size).astype(
        np.float32
    )
    return out


def _motion_models(
    names: Sequence[str] | None,
    generator: MotionGenerator | None,
    weights_dir: Path | str | None,
    device: str,
    dtype: torch.dtype = torch.float32,
) -> tuple[MotionGenerator | None, tuple[str, ...]]:
    from models.motion.weights import check_motion_models, load_motion_generator

    if generator is not None:
        available = tuple(m for m in ("ditto", "joyvasa") if getattr(generator, m) is not None)
        wanted = available if names is None else check_motion_models(names)
        absent = [m for m in wanted if m not in available]
        if absent:
            raise ValueError(f"motion_models {absent} are not in the given motion_generator")
        return generator, wanted
    if not names:
        return None, ()
    wanted = check_motion_models(names)
    if weights_dir is None:
        raise WeightsError(
            f"motion_models {list(wanted)} need motion_weights_dir or weights_dir (their published files)"
        )
    return load_motion_generator(Path(weights_dir), wanted, device=device, dtype=dtype), wanted


def _source_carry(carry: ChunkCarry | None, chunk: ChunkSpec) -> SourceCarry | None:
    if carry is None:
        if chunk.start != 0:
            raise ValueError(f"chunk {chunk.index} starts at frame {chunk.start} but no carry was given")
        return None
    expected = carry.meta.get("next_frame")
    if expected != chunk.start:
        raise ValueError(f"carry is for frame {expected}, chunk starts at {chunk.start}")
    return {
        key[len(_CARRY_PREFIX) :]: value
        for key, value in carry.arrays.items()
        if key.startswith(_CARRY_PREFIX)
    }


def tiny_engine(
    seed: int = 0,
    face_analyzer: FaceAnalyzer | None = None,
    device: str = "cpu",
    weights_dir: Path | str | None = None,
    chunk_seconds: float = 2.0,
    batch_size: int = 8,
    motion_models: Sequence[str] = ("ditto", "joyvasa"),
) -> LivePortraitEngine:
    """``liveportrait-tiny``: the engine on tiny random weights (CPU, fp32), with tiny random motion
    models (`models.motion.weights.tiny_motion_generator`: Ditto with a tiny ONNX HuBERT of the
    published interface, JoyVASA with a tiny HuBERT from a random config) for `motion_models`.
    ``device`` and ``weights_dir`` are what every engine is given by the worker; they are ignored."""
    from models.liveportrait.testing import tiny_modules

    generator: Any = None
    if motion_models:
        from models.motion.weights import tiny_motion_generator

        generator = tiny_motion_generator(motion_models, seed)
    return LivePortraitEngine(
        device="cpu",
        modules=tiny_modules(seed),
        face_analyzer=face_analyzer,
        chunk_seconds=chunk_seconds,
        batch_size=batch_size,
        motion_models=tuple(motion_models) if motion_models else None,
        motion_generator=generator,
    )
