"""The A2L stage end to end: speech + the portrait's mesh -> per-frame 2D landmarks and head poses."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

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


@torch.inference_mode()
def predict_landmarks(
    modules: A2LModules,
    audio: npt.NDArray[np.float32],
    portrait: PortraitMesh,
    *,
    head_motion: Literal["audio2pose", "still"],
    seed: int,
    height: int,
    width: int,
) -> Landmarks:
    r"""Speech -> landmarks, the reference's ``audio2vid.py`` steps.

    Args:
        modules: loaded A2L modules.
        audio (`np.ndarray` of shape `(samples,)`): 16 kHz mono speech.
        portrait: the portrait's mesh and placement.
        head_motion: ``audio2pose`` (poses from speech) or ``still`` (the portrait's own pose).
        seed: picks the audio2pose speaker id (``seed % num_ids``; the reference draws it at random).
        height, width: the output size.
    """
    input_values = normalize_audio(audio)
    num_frames = num_frames_of(input_values.shape[1])
    parameter = next(modules.audio2mesh.parameters())
    input_values = input_values.to(parameter.device, parameter.dtype)
    offsets = modules.audio2mesh(input_values, num_frames)[0].float().cpu().numpy()
    vertices = offsets.astype(np.float64) + portrait.vertices[None]
    if head_motion == "still":
        poses = np.zeros((num_frames, 6))
    else:
        pose_model = modules.audio2pose
        speaker = torch.tensor([seed % pose_model.num_ids], device=parameter.device)
        raw = [
            pose_model(input_values[:, s0:s1], f1 - f0, speaker)[0].float().cpu().numpy()
            for s0, s1, f0, f1 in pose_windows(input_values.shape[1], num_frames)
        ]
        poses = postprocess_poses(np.concatenate(raw))
    points = project_mesh(vertices, portrait.transformation_matrix, poses, height, width)
    return Landmarks(points=points, poses=poses)
