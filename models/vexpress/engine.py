"""``VExpressEngine``: the V-Express diffusion model behind the engine seam (``models.engine``).

Per job, ``prepare`` computes once: the face crop (or, with ``width``/``height``, the whole
portrait resized as the reference script does, ``models.vexpress.framing``), the reference latents
and the ReferenceNet bank, the per-frame keypoint sequence (still, sway, driving video or a given
sequence) and the wav2vec2 tokens of the whole clip. ``render_chunk`` then renders one chunk from those, drawing the chunk's V-kps images and
projecting its audio windows itself, so that only one chunk's tensors are alive at a time.

Continuity (``VExpressOptions.continuity``):

- ``motion_frames`` (default): chunk ``k > 0`` renders a window whose first ``motion_frames``
  frames are the last frames of chunk ``k - 1``, held to their known latents at every step. The
  ``ChunkCarry`` holds those latents and the noise generator's state, so a resumed job reproduces
  an uninterrupted one exactly and memory does not depend on the clip length.
- ``overlap_average``: the reference schedule, which needs the whole clip's latents at every step.
  The first chunk rendered computes the latents of the whole clip (kept in the prepared state on
  the device, about ``64 KiB x frames`` at 512x512) and every chunk decodes its frames from them.
  Its conditions are built once for the whole clip (kps features: ``320 x 64 x 64`` per frame,
  2.5 MiB in bf16 at 512x512, i.e. about 7.3 GiB for 120 s at 25 fps, freed when the latents are
  done) rather than once per window and step. A resumed job recomputes them. For a clip of at most ``context_frames`` frames both modes give the same frames.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from core.errors import EngineFailure, InvalidInput, WeightsError
from models.engine import ChunkCarry, ChunkSpec, Frames, RenderInputs, RenderParams, num_frames_for
from models.sd.attention import Context
from models.sd.pipeline import dtype_from_name
from models.sd.sampler import ChunkSchedule, Continuity, check_window_options
from models.vexpress.framing import detection_image, reference_portrait
from models.vexpress.kps import (
    Keypoints,
    Retarget,
    driving_video_kps,
    resample_kps,
    retarget_kps,
    still_kps,
    sway_kps,
    transform_kps,
)
from models.vexpress.options import MAX_CONTEXT_FRAMES, VExpressOptions
from models.vexpress.pipeline import (
    ClipConditions,
    GuidanceOptions,
    VExpressComponents,
    VExpressPipeline,
    WindowConditions,
    median_filter_3x3x3,
    reference_compatible_noise,
    reflect_index,
)

logger = logging.getLogger(__name__)

VAE_DIR = "sd-vae-ft-mse"
AUDIO_ENCODER_DIR = "wav2vec2-base-960h"
MIN_AUDIO_SAMPLES = 640
"""Shorter audio is padded with silence: wav2vec2's convolutions need 400 samples for one token."""


@dataclass(frozen=True)
class ResolvedOptions:
    """What one job renders with: its ``VExpressOptions``, the keypoint source and the engine's knobs."""

    num_inference_steps: int
    guidance_scale: float
    reference_attention_weight: float
    audio_attention_weight: float
    context_frames: int
    motion_frames: int
    continuity: Continuity
    seed: int
    head_motion: Literal["still", "sway", "driving", "sequence"]
    sway_amplitude: float
    retarget: Retarget
    decode_batch_frames: int = 8
    seed_mode: Literal["parla", "reference"] = "parla"
    frame_count: Literal["parla", "reference"] = "parla"
    post_filter: Literal["none", "median3"] = "none"
    kps_sequence: Keypoints | None = None
    """`(T, 3, 2)` float32 keypoints in crop pixels (``VExpressOptions.kps_sequence``)."""
    frame_size: tuple[int, int] | None = None
    """``(height, width)`` of the reference's framing (``VExpressOptions.width/height``), else None."""

    @property
    def guidance(self) -> GuidanceOptions:
        return GuidanceOptions(
            self.guidance_scale, self.reference_attention_weight, self.audio_attention_weight
        )


@dataclass
class VExpressPrepared:
    """Per-job state (see ``models.engine.Prepared``); tensors live on the engine's device."""

    num_frames: int
    fps: float
    height: int
    width: int
    options: ResolvedOptions
    model_size: tuple[int, int]
    """``(height, width)`` of the frames the model renders: the square crop, or the reference's frame."""
    reference_bank: list[Context]
    """The ReferenceNet bank, its keys and values projected once for the job (``project_reference_bank``)."""
    audio_tokens: torch.Tensor
    """`(2 * num_frames + 8, D)` padded per-frame wav2vec2 tokens (``models.vexpress.audio``)."""
    kps_sequence: Keypoints
    """`(num_frames, 3, 2)` keypoints in crop pixels."""
    paste_back: Any = None
    """``models.face.PasteBack`` for ``framing="full"``, else None."""
    overlap_latents: torch.Tensor | None = field(default=None, repr=False)
    """`(1, 4, num_frames, h, w)` float32 device latents of the whole clip (``overlap_average`` only)."""


def missing_weight_files(weights_dir: str | Path, converted_dir: str | Path | None = None) -> list[str]:
    """Files the engine needs that are absent, as paths relative to ``weights_dir``.

    Layout: ``sd-vae-ft-mse/`` (diffusers AutoencoderKL), ``wav2vec2-base-960h/`` (transformers,
    with its preprocessor config), plus the V-Express module files that
    ``models.vexpress.checkpoint.missing_files`` lists, which are not needed when ``converted_dir``
    already holds a converted copy (its ``manifest.json``).
    """
    from models.vexpress.checkpoint import CONVERTED_MANIFEST, missing_files

    root = Path(weights_dir)
    missing: list[str] = []
    alternatives = {
        VAE_DIR: [("config.json",), ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")],
        AUDIO_ENCODER_DIR: [
            ("config.json",),
            ("preprocessor_config.json",),
            ("model.safetensors", "pytorch_model.bin"),
        ],
    }
    for folder, groups in alternatives.items():
        for names in groups:
            if not any((root / folder / name).is_file() for name in names):
                missing.append(" or ".join(f"{folder}/{name}" for name in names))
    if converted_dir is None or not (Path(converted_dir) / CONVERTED_MANIFEST).is_file():
        missing.extend(missing_files(root))
    return missing


def load_components(
    weights_dir: str | Path,
    device: torch.device,
    dtype: torch.dtype,
    *,
    converted_dir: str | Path | None = None,
    module_configs: dict[str, Any] | None = None,
) -> VExpressComponents:
    """Load the V-Express modules, the VAE and wav2vec2 from local directories.

    Args:
        weights_dir: the published layout (see ``missing_weight_files``).
        converted_dir: when given, the modules come from our safetensors layout there
            (``models.vexpress.checkpoint.load_converted``); it is made from ``weights_dir`` on first
            use (``convert_to_safetensors``), so later boots skip the pickled files.
        module_configs: ``guider_config`` / ``audio_projection_config`` for checkpoints of another
            size than the published one (tests); the published sizes by default.

    Raises:
        WeightsError: listing every missing file, before anything is loaded; or from the strict loaders.
    """
    from diffusers import AutoencoderKL
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    from models.vexpress.checkpoint import (
        CONVERTED_MANIFEST,
        convert_to_safetensors,
        load_converted,
        load_published,
    )

    root = Path(weights_dir)
    missing = missing_weight_files(root, converted_dir)
    if missing:
        raise WeightsError(
            f"the V-Express weights directory {root} is incomplete; missing: {', '.join(missing)}"
        )
    configs = module_configs or {}
    if converted_dir is None:
        modules = load_published(root, device=device, dtype=dtype, **configs)
    else:
        converted = Path(converted_dir)
        if not (converted / CONVERTED_MANIFEST).is_file():
            logger.info("converting the V-Express weights in %s to %s (once)", root, converted)
            convert_to_safetensors(root, converted, **configs)
        modules = load_converted(converted, device=device, dtype=dtype)
    vae: Any = AutoencoderKL.from_pretrained(root / VAE_DIR, local_files_only=True)
    audio_encoder: Any = Wav2Vec2Model.from_pretrained(root / AUDIO_ENCODER_DIR, local_files_only=True)
    feature_extractor = Wav2Vec2FeatureExtractor.from_pretrained(
        root / AUDIO_ENCODER_DIR, local_files_only=True
    )
    logger.info("V-Express loaded from %s on %s in %s", converted_dir or root, device, dtype)
    return VExpressComponents(
        modules=modules,
        vae=vae.to(device=device, dtype=dtype).eval(),
        audio_encoder=audio_encoder.to(device=device, dtype=dtype).eval(),
        feature_extractor=feature_extractor,
    )


def resolve_options(
    params: RenderParams[VExpressOptions],
    *,
    has_driving_video: bool,
    max_context_frames: int = MAX_CONTEXT_FRAMES,
    decode_batch_frames: int = 8,
) -> ResolvedOptions:
    """The job's validated options (``params.options``) resolved against its inputs and this model.

    ``head_motion``: ``"still"`` or ``0`` -> the reference keypoints for every frame; a float in
    ``(0, 1]`` -> sway of that amplitude; ``"sway"`` -> sway of amplitude 0.5; ``"driving"``, or
    unset with a driving video among the inputs -> keypoints from the driving video, retargeted
    with ``retarget``.

    Raises:
        InvalidInput: ``invalid_params``: ``driving`` without a driving video, a window longer than
            this model's motion modules (a checkpoint of another size than the published one).
    """
    options = params.options
    head_motion, sway_amplitude = options.resolved_head_motion(has_driving_video)
    if head_motion == "driving" and not has_driving_video:
        raise InvalidInput("head_motion 'driving' needs a driving_video", code="invalid_params")
    try:
        check_window_options(options.context_frames, options.motion_frames, max_context_frames)
    except ValueError as error:
        raise InvalidInput(str(error), code="invalid_params") from None
    if params.size % 8 or params.size < 32:
        raise InvalidInput(f"size must be a multiple of 8, >= 32, got {params.size}", code="invalid_params")
    return ResolvedOptions(
        num_inference_steps=options.num_inference_steps,
        guidance_scale=options.guidance_scale,
        reference_attention_weight=options.reference_attention_weight,
        audio_attention_weight=options.audio_attention_weight,
        context_frames=options.context_frames,
        motion_frames=options.motion_frames,
        continuity=options.continuity,
        seed=int(params.seed),
        head_motion=head_motion,
        sway_amplitude=sway_amplitude,
        retarget=options.retarget,
        decode_batch_frames=decode_batch_frames,
        seed_mode=options.seed_mode,
        frame_count=options.frame_count,
        post_filter=options.post_filter,
        kps_sequence=None
        if options.kps_sequence is None
        else np.asarray(options.kps_sequence, dtype=np.float32),
        frame_size=options.frame_size(),
    )


def reference_frame_count(duration_s: float, fps: float, context_frames: int, motion_frames: int) -> int:
    """The V-Express script's frame count: ``int(duration x fps)`` cut to the last whole window.

    Raises:
        InvalidInput: ``audio_too_short``: fewer frames than one window (the script fails there).
    """
    initial = int(duration_s * fps)
    stride = context_frames - motion_frames
    windows = (initial - context_frames) // stride + 1
    if initial < context_frames or windows < 1:
        raise InvalidInput(
            f"frame_count 'reference' needs at least context_frames={context_frames} frames of audio "
            f"({context_frames / fps:.2f} s at {fps} fps), got {duration_s:.2f} s",
            code="audio_too_short",
        )
    return (windows - 1) * stride + context_frames


class VExpressEngine:
    """The V-Express engine.

    Args:
        weights_dir: local directory with ``sd-vae-ft-mse/``, ``wav2vec2-base-960h/`` and the
            V-Express module files (see ``missing_weight_files``); not read when ``components`` is given.
        device: ``cuda`` when available, else ``cpu``.
        dtype: ``fp16``, ``bf16`` or ``fp32``; default bf16 (or fp16) on CUDA, fp32 on CPU.
        components: pre-built models (tests: ``models.vexpress.testing.tiny_components``).
        face_analyzer: anything with ``detect(image) -> list[models.face.Face]``; default a
            ``models.face.MediaPipeFaceAnalyzer``, built on first use.
        decode_batch_frames: frames decoded by the VAE at once (memory against speed).
        converted_dir: our safetensors copy of the module files (made on first boot when absent);
            see ``load_components``.
        module_configs: guider / audio projection configs of a non-published checkpoint size.
        compile: ``torch.compile`` the denoiser (at ``warmup_context_frames``) and the VAE decoder (at
            ``decode_batch_frames``) with static shapes, at warm-up; other shapes run eager.
        channels_last: channels-last convolution weights (denoiser and VAE).
        cuda_graphs: capture the compiled graphs in CUDA graphs (needs ``compile`` and CUDA).
        warmup_size, warmup_context_frames: the shapes ``warmup`` renders at: a job's crop size and
            window (512 and 24 by default, the published model's), so that an out-of-memory or a
            compile failure shows at boot, not in the first job.

    These are engine switches (``PARLA_ENGINE_CONFIG``), not job options: they change how every
    job runs on this worker, and compiling belongs to the boot, never to a job.

    Raises:
        WeightsError: ``weights_dir`` is missing or incomplete (the message lists the missing files).
        ValueError: ``cuda_graphs`` without ``compile`` or without CUDA; a warm-up shape out of range.
    """

    name = "vexpress"
    options_model = VExpressOptions

    def __init__(
        self,
        weights_dir: str | Path | None = None,
        device: str | None = None,
        dtype: str | None = None,
        components: VExpressComponents | None = None,
        face_analyzer: Any = None,
        decode_batch_frames: int = 8,
        converted_dir: str | Path | None = None,
        module_configs: dict[str, Any] | None = None,
        compile: bool = False,
        channels_last: bool = False,
        cuda_graphs: bool = False,
        warmup_size: int = 512,
        warmup_context_frames: int = 24,
    ) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = dtype_from_name(dtype, self.device)
        if cuda_graphs and (not compile or self.device.type != "cuda"):
            raise ValueError(
                f"cuda_graphs=True needs compile=True and a CUDA device (compile={compile}, device={self.device})"
            )
        if warmup_size % 8 or warmup_size < 32:
            raise ValueError(f"warmup_size must be a multiple of 8, >= 32, got {warmup_size}")
        if not 1 <= warmup_context_frames <= MAX_CONTEXT_FRAMES:
            raise ValueError(
                f"warmup_context_frames must be in [1, {MAX_CONTEXT_FRAMES}], got {warmup_context_frames}"
            )
        if components is None:
            if weights_dir is None:
                raise WeightsError("the vexpress engine needs a weights directory (none configured)")
            components = load_components(
                weights_dir,
                self.device,
                self.dtype,
                converted_dir=converted_dir,
                module_configs=module_configs,
            )
        self.pipeline = VExpressPipeline(components, self.device, self.dtype)
        self.decode_batch_frames = decode_batch_frames
        self.warmup_size = warmup_size
        self.warmup_context_frames = warmup_context_frames
        if channels_last:
            self.pipeline.use_channels_last()
        if compile:
            self.pipeline.compile_models(warmup_context_frames, decode_batch_frames, cuda_graphs=cuda_graphs)
        self._face_analyzer = face_analyzer
        self.max_context_frames = self.pipeline.max_context_frames

    @property
    def face_analyzer(self) -> Any:
        if self._face_analyzer is None:
            from models.face import MediaPipeFaceAnalyzer

            self._face_analyzer = MediaPipeFaceAnalyzer()
        return self._face_analyzer

    def warmup(self) -> None:
        """A 1-step guided render of one window at the jobs' shapes (``warmup_size``,
        ``warmup_context_frames``, decoded in batches of ``decode_batch_frames``) through every model
        (no face analysis): allocates the job's working memory, and compiles when ``compile`` is on,
        so an out-of-memory or a compile failure raises here, at boot."""
        size, num_frames = self.warmup_size, self.warmup_context_frames
        image = np.full((size, size, 3), 128, dtype=np.uint8)
        kps = still_kps(
            np.array([[0.35, 0.45], [0.65, 0.45], [0.5, 0.6]], dtype=np.float32) * size, num_frames
        )
        audio = np.zeros(max(MIN_AUDIO_SAMPLES, num_frames * 640), dtype=np.float32)  # 25 fps
        self.pipeline(
            image,
            kps,
            audio,
            num_inference_steps=1,
            context_frames=num_frames,
            motion_frames=0,
            decode_batch_frames=self.decode_batch_frames,
        )
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # prepare ------------------------------------------------------------------------------------
    def prepare(self, inputs: RenderInputs, params: RenderParams[VExpressOptions]) -> VExpressPrepared:
        from models.face import PasteBack, crop_around_face, select_face

        options = resolve_options(
            params,
            has_driving_video=inputs.driving_video is not None,
            max_context_frames=self.max_context_frames,
            decode_batch_frames=self.decode_batch_frames,
        )
        if inputs.sample_rate != 16_000:
            raise EngineFailure(f"vexpress expects 16 kHz audio, got {inputs.sample_rate} Hz")
        num_frames = num_frames_for(inputs.duration_s, params.fps)
        fps = float(params.fps)
        if options.frame_count == "reference":
            num_frames = reference_frame_count(
                inputs.duration_s, fps, options.context_frames, options.motion_frames
            )
            fps = num_frames / inputs.duration_s  # the script stretches the frames over the audio
        paste = None
        if options.frame_size is None:
            # Face crop: the model sees a square crop; its keypoints are the detection's, mapped into it.
            size = params.size
            face = select_face(self.face_analyzer.detect(inputs.image), params.face_index)
            crop = crop_around_face(inputs.image, face, size)
            portrait = crop.image
            reference_kps = transform_kps(np.asarray(face.keypoints)[:3], crop.matrix)
            paste = PasteBack(inputs.image, size, crop.matrix) if params.framing == "full" else None
            model_size = (size, size)
        else:
            # The reference's framing: the whole portrait resized, keypoints detected in a resize of it.
            model_size = options.frame_size
            portrait = reference_portrait(inputs.image, *model_size)
            faces = self.face_analyzer.detect(detection_image(inputs.image, *model_size))
            reference_kps = np.asarray(select_face(faces, params.face_index).keypoints, np.float32)[:3]
        kps_sequence = self._kps_sequence(inputs, options, reference_kps, num_frames, params.fps)
        height, width = (paste.height, paste.width) if paste is not None else model_size
        # Reference latents and bank, audio tokens: once per job.
        reference_latents = self.pipeline.encode_reference(portrait)
        bank = self.pipeline.project_reference_bank(self.pipeline.reference_bank(reference_latents))
        audio = np.asarray(inputs.audio, dtype=np.float32)
        if len(audio) < MIN_AUDIO_SAMPLES:
            audio = np.pad(audio, (0, MIN_AUDIO_SAMPLES - len(audio)))
        audio_tokens = self.pipeline.encode_audio(audio, num_frames).cpu()
        return VExpressPrepared(
            num_frames=num_frames,
            fps=fps,
            height=height,
            width=width,
            options=options,
            model_size=model_size,
            reference_bank=bank,
            audio_tokens=audio_tokens,
            kps_sequence=kps_sequence,
            paste_back=paste,
        )

    def _kps_sequence(
        self,
        inputs: RenderInputs,
        options: ResolvedOptions,
        reference_kps: Keypoints,
        num_frames: int,
        fps: float,
    ) -> Keypoints:
        if options.head_motion == "still":
            return still_kps(reference_kps, num_frames)
        if options.head_motion == "sway":
            return sway_kps(reference_kps, num_frames, fps, options.sway_amplitude, seed=options.seed)
        if options.head_motion == "sequence":
            assert options.kps_sequence is not None
            return retarget_kps(
                reference_kps, resample_kps(options.kps_sequence, num_frames), options.retarget
            )
        assert inputs.driving_video is not None
        try:
            driving = driving_video_kps(inputs.driving_video, self.face_analyzer, num_frames, fps)
        except ValueError as error:
            raise InvalidInput(str(error), code="invalid_driving_video") from None
        return retarget_kps(reference_kps, driving, options.retarget)

    # plan -----------------------------------------------------------------------------------------
    def _schedule(self, prepared: VExpressPrepared) -> ChunkSchedule:
        options = prepared.options
        return ChunkSchedule(prepared.num_frames, options.context_frames, options.motion_frames, options.seed)

    def plan(self, prepared: VExpressPrepared) -> list[ChunkSpec]:
        """One chunk per window of the motion-frames schedule (its new frames), in both modes."""
        return self._schedule(prepared).plan()

    # render ---------------------------------------------------------------------------------------
    def render_chunk(
        self, prepared: VExpressPrepared, chunk: ChunkSpec, carry: ChunkCarry | None
    ) -> tuple[Frames, ChunkCarry]:
        options = prepared.options
        if carry is not None and carry.meta.get("continuity", options.continuity) != options.continuity:
            raise EngineFailure(
                f"carry of a {carry.meta.get('continuity')} job given to a {options.continuity} job"
            )
        if options.continuity == "overlap_average":
            clip_latents = self._overlap_latents(prepared)
            if options.post_filter == "median3":  # one neighbour frame each side, reflected at the ends
                indices = [
                    reflect_index(i, prepared.num_frames) for i in range(chunk.start - 1, chunk.stop + 1)
                ]
                padded = self.pipeline.decode_latents(
                    clip_latents[:, :, indices], options.decode_batch_frames
                )
                frames = median_filter_3x3x3(torch.from_numpy(padded).to(self.device)).cpu().numpy()
            else:
                latents = clip_latents[:, :, chunk.start : chunk.stop]
            next_carry = ChunkCarry(meta={"continuity": options.continuity, "chunk_index": chunk.index})
            if chunk.stop >= prepared.num_frames:
                prepared.overlap_latents = None  # the last chunk: free the clip's latents
        else:
            latents, next_carry = self.pipeline.denoise_motion_frames_chunk(
                self._schedule(prepared),
                chunk,
                carry,
                lambda start, stop: self._conditions(prepared, start, stop),
                options.guidance,
                self.pipeline.make_scheduler(options.num_inference_steps),
                latent_size=self._latent_size(prepared),
            )
        if options.post_filter == "none" or options.continuity != "overlap_average":
            frames = self.pipeline.decode_latents(latents, options.decode_batch_frames)
        if prepared.paste_back is not None:
            frames = prepared.paste_back(frames)
        return frames, next_carry

    def _latent_size(self, prepared: VExpressPrepared) -> tuple[int, int]:
        height, width = prepared.model_size
        scale = self.pipeline.vae_scale_factor
        return height // scale, width // scale

    def _conditions(
        self, prepared: VExpressPrepared, start: int, stop: int, clip: ClipConditions | None = None
    ) -> WindowConditions:
        """Window ``[start, stop)``'s conditions: views of `clip` when given, else built for it."""
        pipeline, (height, width) = self.pipeline, prepared.model_size
        if clip is None:
            clip = pipeline.clip_conditions(
                prepared.audio_tokens, prepared.kps_sequence, height, width, start, stop
            )
        tokens, features = clip.frames(start, stop)
        return pipeline.window_conditions(
            tokens, features, prepared.reference_bank, prepared.options.guidance
        )

    def _overlap_latents(self, prepared: VExpressPrepared) -> torch.Tensor:
        """The whole clip's denoised latents of the overlap-average schedule, computed once per job."""
        if prepared.overlap_latents is None:
            options, (height, width) = prepared.options, prepared.model_size
            clip = self.pipeline.clip_conditions(
                prepared.audio_tokens, prepared.kps_sequence, height, width, 0, prepared.num_frames
            )
            noise = None
            if options.seed_mode == "reference":
                shape = (1, self.pipeline.latent_channels, prepared.num_frames, *self._latent_size(prepared))
                noise = reference_compatible_noise(
                    shape, options.seed, self.pipeline.layerdrop_draws, self.pipeline.dtype
                )
            prepared.overlap_latents = self.pipeline.overlap_average_latents(
                self._schedule(prepared),
                lambda start, stop: self._conditions(prepared, start, stop, clip),
                options.guidance,
                self.pipeline.make_scheduler(options.num_inference_steps),
                latent_size=self._latent_size(prepared),
                noise=noise,
            )
        return prepared.overlap_latents
