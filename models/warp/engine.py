"""The ``warp`` engine: a talking portrait from face landmarks and audio, with no model weights.

1. ``prepare`` (once per job): find the face (mediapipe), crop it square around the face, re-run the
   mesh on the crop, build the rig (``models.warp.rig``), compute per-frame audio features and the
   head-drift noise, and for ``framing="full"`` the paste-back geometry.
2. ``render_chunk``: for each frame, advance the motion state (``models.warp.motion``), warp the crop
   and, for ``framing="full"``, paste it back into the photo. The ``ChunkCarry`` is the motion state,
   so chunked and one-shot renders are identical, also across a resumed job.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import InvalidInput
from models.audio import frame_features
from models.engine import (
    ChunkCarry,
    ChunkSpec,
    Frames,
    RenderInputs,
    RenderParams,
    even_chunks,
    num_frames_for,
)
from models.face import (
    FaceAnalyzer,
    MediaPipeFaceAnalyzer,
    PasteBack,
    crop_around_face,
    face_from_landmarks,
    select_face,
    transform_points,
)
from models.warp.motion import MotionState, advance, initial_state, mouth_targets
from models.warp.options import WarpOptions
from models.warp.rig import Rig, build_rig

MIN_SIZE, MAX_SIZE = 64, 2048


@dataclass
class WarpPrepared:
    """Per-job state of the warp engine.

    Attributes:
        num_frames, fps, height, width: what the runner reads; height/width are the output size
            (``size`` for ``framing="crop"``, the pasted-back photo size for ``"full"``).
        crop: uint8 ``(size, size, 3)`` the portrait crop that every frame warps.
        rig: control points and bases of the crop.
        mouth_targets: float64 ``(num_frames, 3)``; energy: float64 ``(num_frames,)``.
        noise: float64 ``(num_frames, 5)`` head-drift draws.
        paste: paste-back into the photo, or None for ``framing="crop"``.
    """

    num_frames: int
    fps: float
    height: int
    width: int
    crop: np.ndarray
    rig: Rig
    mouth_targets: np.ndarray
    energy: np.ndarray
    noise: np.ndarray
    seed: int
    head_motion: float
    paste: PasteBack | None


class WarpEngine:
    """Landmark-driven warp renderer (see module docstring).

    Args:
        analyzer: face analysis; a ``MediaPipeFaceAnalyzer`` by default.
        chunk_seconds: length of a chunk of ``plan``.
        device: accepted for the worker's sake and ignored: the warp engine runs on the CPU.
        weights_dir: likewise ignored: the warp engine has no weights.
    """

    name = "warp"
    options_model = WarpOptions

    def __init__(
        self,
        analyzer: FaceAnalyzer | None = None,
        chunk_seconds: float = 2.0,
        device: str | None = None,
        weights_dir: str | Path | None = None,
    ) -> None:
        if chunk_seconds <= 0:
            raise ValueError(f"chunk_seconds must be > 0, got {chunk_seconds}")
        self.analyzer: FaceAnalyzer = analyzer or MediaPipeFaceAnalyzer()
        self.chunk_seconds = chunk_seconds

    def warmup(self) -> None:
        """Build the mediapipe graphs and run one warp, so the first job pays no start-up cost."""
        self.analyzer.detect(np.zeros((64, 64, 3), dtype=np.uint8))
        size = 64
        ring = np.linspace(0, 2 * np.pi, 478, endpoint=False)
        fake = np.stack([32 + 14 * np.cos(ring * 7), 32 + 16 * np.sin(ring * 5), np.zeros(478)], axis=1)
        rig = build_rig(fake + np.random.default_rng(0).normal(0, 0.5, fake.shape), size)
        rig.render(np.zeros((size, size, 3), dtype=np.uint8), np.zeros(len(rig.bases[0, 0])))

    def prepare(self, inputs: RenderInputs, params: RenderParams[WarpOptions]) -> WarpPrepared:
        # 1. Check inputs
        size = int(params.size)
        if not MIN_SIZE <= size <= MAX_SIZE:
            raise InvalidInput(f"size must be in [{MIN_SIZE}, {MAX_SIZE}], got {size}", code="invalid_params")
        if params.fps <= 0:
            raise InvalidInput(f"fps must be > 0, got {params.fps}", code="invalid_params")
        head_motion = params.options.head_motion_amount
        image = np.ascontiguousarray(inputs.image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InvalidInput(
                f"expected an RGB uint8 image, got {image.dtype} {image.shape}",
                code="invalid_image",
            )

        # 2. Face and crop; the mesh is measured again on the crop, where it is sharper.
        face = select_face(self.analyzer.detect(image), params.face_index)
        crop = crop_around_face(image, face, size)
        crop_faces = self.analyzer.detect(crop.image)
        if crop_faces:
            landmarks = crop_faces[0].landmarks
        else:  # the crop is always a good view of the face, but keep the first measurement if not
            scale = float(np.sqrt(abs(np.linalg.det(crop.matrix[:, :2]))))
            moved = transform_points(face.landmarks, crop.matrix)
            landmarks = face_from_landmarks(
                np.concatenate([moved, face.landmarks[:, 2:] * scale], 1)
            ).landmarks
        rig = build_rig(landmarks, size)

        # 3. Audio features and head-drift noise for every frame.
        num_frames = num_frames_for(inputs.duration_s, params.fps)
        features = frame_features(inputs.audio, params.fps, num_frames, inputs.sample_rate)
        noise = np.random.default_rng(int(params.seed) & 0xFFFFFFFF).standard_normal((num_frames, 5))

        # 4. Output geometry.
        paste = PasteBack(image, size, crop.matrix) if params.framing == "full" else None
        height, width = (paste.height, paste.width) if paste else (size, size)
        return WarpPrepared(
            num_frames=num_frames,
            fps=float(params.fps),
            height=height,
            width=width,
            crop=crop.image,
            rig=rig,
            mouth_targets=mouth_targets(features),
            energy=features.energy.astype(np.float64),
            noise=noise,
            seed=int(params.seed),
            head_motion=head_motion,
            paste=paste,
        )

    def plan(self, prepared: WarpPrepared) -> list[ChunkSpec]:
        return even_chunks(prepared.num_frames, max(1, round(self.chunk_seconds * prepared.fps)))

    def coefficients(self, prepared: WarpPrepared, state: MotionState, count: int) -> np.ndarray:
        """Advance ``state`` by ``count`` frames; ``(count, 9)`` rig coefficients."""
        return np.stack(
            [
                advance(
                    state,
                    prepared.mouth_targets,
                    prepared.energy,
                    prepared.noise,
                    prepared.fps,
                    prepared.seed,
                    prepared.head_motion,
                    prepared.rig.size,
                )
                for _ in range(count)
            ]
        )

    def render_chunk(
        self, prepared: WarpPrepared, chunk: ChunkSpec, carry: ChunkCarry | None
    ) -> tuple[Frames, ChunkCarry]:
        """Frames ``chunk.start .. chunk.stop`` as uint8 ``(F, height, width, 3)`` and the next carry."""
        if carry is None:
            state = initial_state(prepared.seed)
        else:
            state = MotionState.from_parts(carry.arrays, carry.meta)
        if state.frame != chunk.start:
            raise ValueError(f"carry is for frame {state.frame}, chunk starts at {chunk.start}")
        coefficients = self.coefficients(prepared, state, chunk.num_frames)
        frames = np.stack([prepared.rig.render(prepared.crop, c) for c in coefficients])
        if prepared.paste is not None:
            frames = prepared.paste(frames)
        return frames, ChunkCarry(arrays=state.to_arrays(), meta=state.to_meta())
