"""Implicit-keypoint algebra in the reference's conventions (``src/utils/camera.py``, the wrapper).

A frame's motion ("kp info") is ``scale (B, 1)``, ``pitch``/``yaw``/``roll`` ``(B, 1)`` in degrees,
``t (B, 3)``, ``exp (B, K, 3)``; with the canonical keypoints ``kp (B, K, 3)`` of the portrait it places
the keypoints at ``scale * (kp @ R + exp) + t`` (``t``'s z ignored), with ``R`` the transposed
``Rz @ Ry @ Rx`` Euler rotation (row-vector convention).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from models.liveportrait.networks import MotionOutput


def bins_to_degrees(logits: torch.Tensor) -> torch.Tensor:
    """Head-pose bin logits ``(B, 66)`` -> degrees ``(B,)``: softmax expectation over 3-degree bins
    centred so that bin 32.5 is 0 (the reference's ``headpose_pred_to_degree``)."""
    index = torch.arange(logits.shape[1], dtype=logits.dtype, device=logits.device)
    return torch.sum(F.softmax(logits, dim=1) * index, dim=1) * 3 - 97.5


def rotation_matrix(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Degrees ``(B,)`` or ``(B, 1)`` -> ``(B, 3, 3)``: ``(Rz @ Ry @ Rx)^T``, to right-multiply row vectors."""
    x, y, z = (angle.reshape(-1, 1) / 180 * math.pi for angle in (pitch, yaw, roll))
    ones, zeros = torch.ones_like(x), torch.zeros_like(x)
    rot_x = torch.cat([ones, zeros, zeros, zeros, x.cos(), -x.sin(), zeros, x.sin(), x.cos()], dim=1).view(
        -1, 3, 3
    )
    rot_y = torch.cat([y.cos(), zeros, y.sin(), zeros, ones, zeros, -y.sin(), zeros, y.cos()], dim=1).view(
        -1, 3, 3
    )
    rot_z = torch.cat([z.cos(), -z.sin(), zeros, z.sin(), z.cos(), zeros, zeros, zeros, ones], dim=1).view(
        -1, 3, 3
    )
    return (rot_z @ rot_y @ rot_x).permute(0, 2, 1)


def matrix_to_degrees(rotation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of `rotation_matrix` (for ``|yaw| < 90``): ``(B, 3, 3)`` -> pitch, yaw, roll ``(B, 1)`` degrees."""
    m = rotation.permute(0, 2, 1)  # Rz @ Ry @ Rx
    yaw = torch.asin((-m[:, 2, 0]).clamp(-1.0, 1.0))
    pitch = torch.atan2(m[:, 2, 1], m[:, 2, 2])
    roll = torch.atan2(m[:, 1, 0], m[:, 0, 0])
    to_deg = 180 / math.pi
    return (pitch * to_deg)[:, None], (yaw * to_deg)[:, None], (roll * to_deg)[:, None]


def refine(output: MotionOutput, num_kp: int) -> dict[str, torch.Tensor]:
    """The motion extractor's raw output as kp info: pose in degrees ``(B, 1)``, ``kp``/``exp`` ``(B, K, 3)``."""
    bs = output.kp.shape[0]
    return {
        "kp": output.kp.reshape(bs, num_kp, 3),
        "pitch": bins_to_degrees(output.pitch)[:, None],
        "yaw": bins_to_degrees(output.yaw)[:, None],
        "roll": bins_to_degrees(output.roll)[:, None],
        "t": output.t,
        "exp": output.exp.reshape(bs, num_kp, 3),
        "scale": output.scale,
    }


def place_keypoints(
    kp: torch.Tensor, rotation: torch.Tensor, exp: torch.Tensor, scale: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """``scale * (kp @ R + exp) + t`` with ``t``'s z ignored: ``(B, K, 3)`` (Eqn. 2 of the paper)."""
    placed = (kp @ rotation + exp) * scale[..., None]
    return torch.cat([placed[..., :2] + t[:, None, :2], placed[..., 2:]], dim=-1)
