"""The A2L stage end to end: speech + the portrait's mesh -> per-frame 2D landmarks and head poses."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch

from models.aniportrait.checkpoint import A2LModules
from models.aniportrait.configs import FPS, SAMPLE_RATE
from models.aniportrait.landmarks import pose_windows, postprocess_poses, project_mesh


@dataclass(frozen=True)
class PortraitMesh:
    """The portrait's face geometry as the reference's landmark extractor gives it.

    Attributes:
        vertices: float ``(468, 3)``: the canonical-space (metric) mesh, MediaPipe's ``lmks3d``.
        transformation_matrix: float ``(4, 4)``: the facial transformation matrix (``trans_mat``).
    """

    vertices: npt.NDArray[np.float64]
    transformation_matrix: npt.NDArray[np.float64]


@dataclass(frozen=True)
class Landmarks:
    """A2L outputs: ``points`` ``(L, 468, 2)`` in output pixels and ``poses`` ``(L, 6)``."""

    points: npt.NDArray[np.float64]
    poses: npt.NDArray[np.float64]


def num_frames_of(num_samples: int) -> int:
    """Frames the reference renders for a clip: ``ceil(samples / 16000 * 30)``."""
    return math.ceil(num_samples / SAMPLE_RATE * FPS)


def normalize_audio(audio: npt.NDArray[np.float32]) -> torch.Tensor:
    """wav2vec2-base-960h's input normalisation over the whole clip: ``(x - mean) / sqrt(var + 1e-7)``,
    as ``(1, samples)`` float32."""
    if audio.ndim != 1 or audio.size == 0:
        raise ValueError(f"audio must be non-empty mono (samples,), got shape {audio.shape}")
    values = np.asarray(audio, dtype=np.float32)
    normalized = (values - values.mean()) / np.sqrt(values.var() + 1e-7)
    return torch.from_numpy(normalized.astype(np.float32))[None]


MESH_WINDOW_FRAMES = 600
"""Longest clip audio2mesh encodes in one pass (20 s at 30 fps); longer clips go in windows."""
MESH_MARGIN_FRAMES = 30
"""Audio context each side of a window (1 s), whose predictions are dropped."""


def mesh_windows(num_frames: int, window: int, margin: int) -> list[tuple[int, int, int, int]]:
    """``(g0, g1, f0, f1)``: audio2mesh encodes frames ``[g0, g1)`` and keeps ``[f0, f1)``.

    One window ``(0, L, 0, L)`` when ``num_frames <= window`` (the reference's single pass); else
    windows of ``window`` kept frames, each encoded with up to ``margin`` frames of context each side.
    """
    if window < 1 or margin < 0:
        raise ValueError(f"window must be >= 1 and margin >= 0, got {window}, {margin}")
    if num_frames <= window:
        return [(0, num_frames, 0, num_frames)]
    return [
        (max(0, f0 - margin), min(num_frames, f0 + window + margin), f0, min(num_frames, f0 + window))
        for f0 in range(0, num_frames, window)
    ]


def frame_sample(frame: int, num_frames: int, num_samples: int) -> int:
    """First audio sample of 30 fps frame ``frame`` (the clip's end for ``frame == num_frames``)."""
    return num_samples if frame >= num_frames else min(num_samples, frame * SAMPLE_RATE // FPS)


@torch.inference_mode()
def predict_landmarks(
    modules: A2LModules,
    audio: npt.NDArray[np.float32],
    portrait: PortraitMesh,
    *,
    head_motion: Literal["audio2pose", "still", "given"],
    seed: int,
    height: int,
    width: int,
    poses: npt.NDArray[np.floating[Any]] | None = None,
    mesh_window_frames: int | None = None,
    mesh_margin_frames: int = MESH_MARGIN_FRAMES,
) -> Landmarks:
    r"""Speech -> landmarks, the reference's ``audio2vid.py`` steps.

    Args:
        modules: loaded A2L modules.
        audio (`np.ndarray` of shape `(samples,)`): 16 kHz mono speech.
        portrait: the portrait's mesh and placement.
        head_motion: ``audio2pose`` (poses from speech), ``still`` (the portrait's own pose) or
            ``given`` (`poses`, e.g. from a driving video).
        seed: picks the audio2pose speaker id (``seed % num_ids``; the reference draws it at random).
        height, width: the output size.
        poses (`np.ndarray` of shape `(L, 6)`): the poses of ``given``.
        mesh_window_frames: encode at most this many frames in one audio2mesh pass (None: the whole
            clip at once, as the reference); windows overlap by `mesh_margin_frames` of context.

    Memory: audio2pose runs in the reference's 5 s windows; with `mesh_window_frames`, audio2mesh
    in bounded windows too, and each window's vertices are projected and dropped, so besides the
    audio only the ``(L, 468, 2)`` points grow with the clip.
    """
    input_values = normalize_audio(audio)
    num_samples = input_values.shape[1]
    num_frames = num_frames_of(num_samples)
    parameter = next(modules.audio2mesh.parameters())
    input_values = input_values.to(parameter.device, parameter.dtype)
    if head_motion == "still":
        pose_sequence = np.zeros((num_frames, 6))
    elif head_motion == "given":
        if poses is None or poses.shape != (num_frames, 6):
            shape = None if poses is None else poses.shape
            raise ValueError(f"head_motion 'given' needs poses of shape ({num_frames}, 6), got {shape}")
        pose_sequence = np.asarray(poses, dtype=np.float64)
    else:
        pose_model = modules.audio2pose
        speaker = torch.tensor([seed % pose_model.num_ids], device=parameter.device)
        raw = [
            pose_model(input_values[:, s0:s1], f1 - f0, speaker)[0].float().cpu().numpy()
            for s0, s1, f0, f1 in pose_windows(num_samples, num_frames)
        ]
        pose_sequence = postprocess_poses(np.concatenate(raw))
    points = np.empty((num_frames, 468, 2))
    for g0, g1, f0, f1 in mesh_windows(num_frames, mesh_window_frames or num_frames, mesh_margin_frames):
        s0, s1 = frame_sample(g0, num_frames, num_samples), frame_sample(g1, num_frames, num_samples)
        offsets = modules.audio2mesh(input_values[:, s0:s1], g1 - g0)[0].float().cpu().numpy()
        vertices = offsets[f0 - g0 : f1 - g0].astype(np.float64) + portrait.vertices[None]
        points[f0:f1] = project_mesh(
            vertices, portrait.transformation_matrix, pose_sequence[f0:f1], height, width
        )
    return Landmarks(points=points, poses=pose_sequence)
