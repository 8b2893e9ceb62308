"""The LivePortrait renderer: source features once per job, then keypoint motion -> frames, batched.

For each output frame (the reference's ``live_portrait_pipeline.py``, image source)::

    x_c_s, R_s, exp_s, s_s, t_s   <- M(source crop)          f_s <- F(source crop)     (once per job)
    x_s  = s_s * (x_c_s R_s + exp_s) + t_s
    x_d  = compose(motion frame)         relative to the reference frame or absolute
           (t's z zeroed; "expression-friendly" rescales by the keypoint hulls, as the reference)
    x_d += R_eyes(x_s, c_s,eyes, c_d,eye) + R_lip(x_s, c_s,lip, c_d,lip)   when the frame has ratios
    x_d  = S(x_s, x_d)                    stitching (+ lip normalisation when asked and no lip ratio)
    x_d  = x_s + (x_d - x_s) * driving_multiplier
    I    = G(W(f_s; x_s, x_d))

All of it is batched over the frames of a chunk; there is no state between frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt
import torch

from models.liveportrait.checkpoint import LivePortraitModules
from models.liveportrait.keypoints import place_keypoints, refine, rotation_matrix
from models.liveportrait.motion_source import MotionFrames

DrivingOption = Literal["expression-friendly", "pose-friendly"]
LIP_NORMALIZE_THRESHOLD = 0.03
"""The reference's ``lip_normalize_threshold``: lip normalisation only for a source whose lips are open."""


@dataclass(frozen=True)
class RetargetSettings:
    """How motion is applied (the reference's ``InferenceConfig``/CLI options of the same names).

    Attributes:
        stitching: apply the stitching MLP (keeps the crop's shoulders and borders in place).
        driving_option: "expression-friendly" (the CLI default) rescales relative motion by the
            ratio of the source's and the first composed frame's keypoint hull; "pose-friendly" does not.
        driving_multiplier: scales the final keypoint displacement from the source.
        normalize_lip: close the source's lips first (when open past `LIP_NORMALIZE_THRESHOLD`) for
            frames without a lip ratio.
        eye_multiplier, lip_multiplier: scale the eye and lip retargeting deltas.
    """

    stitching: bool = True
    driving_option: DrivingOption = "expression-friendly"
    driving_multiplier: float = 1.0
    normalize_lip: bool = False
    eye_multiplier: float = 1.0
    lip_multiplier: float = 1.0


@dataclass
class SourcePortrait:
    """What the renderer needs of the portrait, computed once per job (tensors on the pipeline's device).

    Attributes:
        feature_3d: ``(1, C, D, H, W)`` appearance volume.
        kp: ``(1, K, 3)`` canonical keypoints; ``rotation`` ``(1, 3, 3)``; ``exp`` ``(1, K, 3)``;
            ``scale`` ``(1, 1)``; ``t`` ``(1, 3)``: the source's motion.
        x_s: ``(1, K, 3)`` the source's placed keypoints.
        eye_ratio: ``(1, 2)`` the source's eye-close ratios (image-left, image-right eye).
        lip_ratio: ``(1, 1)`` the source's lip-close ratio.
    """

    feature_3d: torch.Tensor
    kp: torch.Tensor
    rotation: torch.Tensor
    exp: torch.Tensor
    scale: torch.Tensor
    t: torch.Tensor
    x_s: torch.Tensor
    eye_ratio: torch.Tensor
    lip_ratio: torch.Tensor


class LivePortraitPipeline:
    """The networks on one device/dtype, and the keypoint algebra between them.

    Args:
        modules: loaded (or tiny random) modules; moved to `device`/`dtype`.
        device: torch device.
        dtype: compute dtype of the networks; the keypoint algebra always runs in fp32.
        compile: ``torch.compile`` the warping module and the decoder (worth it on CUDA only).
    """

    def __init__(
        self,
        modules: LivePortraitModules,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        compile: bool = False,
    ) -> None:
        self.modules = modules.to(device=device, dtype=dtype)
        self.config = modules.config
        self.device = torch.device(device)
        self.dtype = dtype
        self._warp = modules.warping_module
        self._decode = modules.spade_generator
        if compile:
            self._warp = torch.compile(self._warp)  # type: ignore[assignment]
            self._decode = torch.compile(self._decode)  # type: ignore[assignment]

    # -- inputs ------------------------------------------------------------------------------------------

    def prepare_images(self, crops: npt.NDArray[np.uint8]) -> torch.Tensor:
        """uint8 ``(B, H, W, 3)`` crops -> ``(B, 3, S, S)`` in [0, 1] at the networks' input size
        (``cv2.resize`` bilinear when the size differs, as the reference's ``prepare_source``)."""
        size = self.config.input_size
        resized = [
            crop if crop.shape[:2] == (size, size) else cv2.resize(crop, (size, size))
            for crop in np.asarray(crops)
        ]
        images = np.clip(np.stack(resized).astype(np.float32) / 255.0, 0.0, 1.0)
        return torch.from_numpy(images).permute(0, 3, 1, 2).to(device=self.device, dtype=self.dtype)

    @torch.no_grad()
    def extract_motion(self, crops: npt.NDArray[np.uint8], batch_size: int = 16) -> MotionFrames:
        """kp info (pose in degrees, expression, scale, translation) of each crop ``(B, H, W, 3)``."""
        parts = []
        for start in range(0, len(crops), batch_size):
            images = self.prepare_images(crops[start : start + batch_size])
            info = refine(self.modules.motion_extractor(images), self.config.num_kp)
            parts.append(
                MotionFrames(
                    **{
                        key: info[key].float().cpu().numpy()
                        for key in ("scale", "pitch", "yaw", "roll", "t", "exp")
                    }
                )
            )
        return MotionFrames.concat(parts)

    @torch.no_grad()
    def prepare_source(
        self, crop: npt.NDArray[np.uint8], eye_ratio: npt.NDArray[np.float32], lip_ratio: float
    ) -> SourcePortrait:
        """The source portrait's volume and motion from its crop ``(H, W, 3)`` and its eye ``(2,)`` and
        lip ratios (from the face mesh)."""
        image = self.prepare_images(crop[None])
        info = {
            key: value.float()
            for key, value in refine(self.modules.motion_extractor(image), self.config.num_kp).items()
        }
        rotation = rotation_matrix(info["pitch"], info["yaw"], info["roll"])
        return SourcePortrait(
            feature_3d=self.modules.appearance_feature_extractor(image),
            kp=info["kp"],
            rotation=rotation,
            exp=info["exp"],
            scale=info["scale"],
            t=info["t"],
            x_s=place_keypoints(info["kp"], rotation, info["exp"], info["scale"], info["t"]),
            eye_ratio=torch.tensor(np.asarray(eye_ratio, np.float32).reshape(1, 2), device=self.device),
            lip_ratio=torch.tensor([[float(lip_ratio)]], dtype=torch.float32, device=self.device),
        )

    # -- keypoints ---------------------------------------------------------------------------------------

    @torch.no_grad()
    def driving_keypoints(
        self,
        source: SourcePortrait,
        frames: MotionFrames,
        reference: MotionFrames | None,
        settings: RetargetSettings,
    ) -> torch.Tensor:
        """Driving keypoints ``(B, K, 3)`` (fp32) for the `frames` of a chunk (see the module docstring)."""
        x_d = self._compose(source, frames, reference)
        x_s = source.x_s.expand_as(x_d)
        if reference is not None and settings.driving_option == "expression-friendly":
            first = self._compose(source, reference, reference)
            multiplier = _hull_ratio(source.x_s, first)
            x_d = (x_d - first) * multiplier + x_s
        has_ratios = frames.eye_ratio is not None or frames.lip_ratio is not None
        if frames.eye_ratio is not None:
            ratio = torch.cat(
                [source.eye_ratio.expand(len(frames), 2), self._tensor(frames.eye_ratio)], dim=1
            )
            x_d = x_d + settings.eye_multiplier * self._retarget(self.modules.retarget_eye, x_s, ratio)
        if frames.lip_ratio is not None:
            ratio = torch.cat(
                [source.lip_ratio.expand(len(frames), 1), self._tensor(frames.lip_ratio)], dim=1
            )
            x_d = x_d + settings.lip_multiplier * self._retarget(self.modules.retarget_lip, x_s, ratio)
        if settings.stitching:
            x_d = self.stitch(x_s, x_d)
        if settings.normalize_lip and not has_ratios:
            closed = self.lip_normalization(source)
            if closed is not None:
                x_d = x_d + closed
        return x_s + (x_d - x_s) * settings.driving_multiplier

    def lip_normalization(self, source: SourcePortrait) -> torch.Tensor | None:
        """The delta that closes the source's lips (``R_lip(x_s; c_s,lip, 0)``), or None when they are closed."""
        if float(source.lip_ratio[0, 0]) < LIP_NORMALIZE_THRESHOLD:
            return None
        ratio = torch.cat([source.lip_ratio, torch.zeros_like(source.lip_ratio)], dim=1)
        return self._retarget(self.modules.retarget_lip, source.x_s, ratio)

    def stitch(self, x_s: torch.Tensor, x_d: torch.Tensor) -> torch.Tensor:
        """The stitching MLP's expression and ``(tx, ty)`` correction added to `x_d` ``(B, K, 3)``."""
        bs, num_kp = x_d.shape[:2]
        delta = self._mlp(
            self.modules.stitching, torch.cat([x_s.reshape(bs, -1), x_d.reshape(bs, -1)], dim=1)
        )
        x_d = x_d + delta[:, : 3 * num_kp].reshape(bs, num_kp, 3)
        shift = torch.cat(
            [delta[:, None, 3 * num_kp : 3 * num_kp + 2], torch.zeros_like(delta[:, None, :1])], dim=2
        )
        return x_d + shift

    def _compose(
        self, source: SourcePortrait, frames: MotionFrames, reference: MotionFrames | None
    ) -> torch.Tensor:
        rotation = rotation_matrix(
            self._tensor(frames.pitch), self._tensor(frames.yaw), self._tensor(frames.roll)
        )
        exp, scale, t = self._tensor(frames.exp), self._tensor(frames.scale), self._tensor(frames.t)
        if reference is not None:
            rotation_0 = rotation_matrix(
                self._tensor(reference.pitch), self._tensor(reference.yaw), self._tensor(reference.roll)
            )
            rotation = (rotation @ rotation_0.permute(0, 2, 1)) @ source.rotation
            exp = source.exp + (exp - self._tensor(reference.exp))
            scale = source.scale * (scale / self._tensor(reference.scale))
            t = source.t + (t - self._tensor(reference.t))
        t = torch.cat([t[:, :2], torch.zeros_like(t[:, 2:])], dim=1)
        return scale[:, :, None] * (source.kp @ rotation + exp) + t[:, None, :]

    def _retarget(self, mlp: torch.nn.Module, x_s: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
        bs, num_kp = x_s.shape[:2]
        return self._mlp(mlp, torch.cat([x_s.reshape(bs, -1), ratio], dim=1)).reshape(bs, num_kp, 3)

    def _mlp(self, mlp: torch.nn.Module, features: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = mlp(features.to(self.dtype))
        return out.float()

    def _tensor(self, array: npt.NDArray[np.float32]) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(self.device)

    # -- rendering ---------------------------------------------------------------------------------------

    @torch.no_grad()
    def render(self, source: SourcePortrait, kp_driving: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
        """Images ``(B, 3, S_out, S_out)`` in [0, 1] (fp32) for driving keypoints ``(B, K, 3)``."""
        outputs = []
        for start in range(0, len(kp_driving), batch_size):
            kp = kp_driving[start : start + batch_size].to(self.dtype)
            n = len(kp)
            warped = self._warp(
                source.feature_3d.expand(n, -1, -1, -1, -1), kp, source.x_s.to(self.dtype).expand(n, -1, -1)
            )
            outputs.append(self._decode(warped).float())
        return torch.cat(outputs)

    @torch.no_grad()
    def animate(
        self,
        source: SourcePortrait,
        frames: MotionFrames,
        reference: MotionFrames | None,
        settings: RetargetSettings,
        batch_size: int = 8,
    ) -> torch.Tensor:
        """Images ``(F, 3, S_out, S_out)`` in [0, 1] for motion `frames`: keypoints, warp and decode.

        Every batch is padded to `batch_size` frames (repeating the last), so that every frame is computed
        in a batch of the same shape. CPU kernels can still round a frame differently depending on its
        slot in the batch, so chunks that start on batch boundaries (what the engine's ``plan`` makes)
        give exactly the frames of one uninterrupted render.
        """
        outputs = []
        for start in range(0, len(frames), batch_size):
            part = frames.slice(start, start + batch_size)
            count = len(part)
            if count < batch_size:
                part = part.take(np.minimum(np.arange(batch_size), count - 1))
            kp = self.driving_keypoints(source, part, reference, settings)
            outputs.append(self.render(source, kp, batch_size=batch_size)[:count])
        return torch.cat(outputs)


def to_uint8(images: torch.Tensor) -> npt.NDArray[np.uint8]:
    """``(B, 3, H, W)`` in [0, 1] -> uint8 ``(B, H, W, 3)`` (truncating, as the reference's ``parse_output``)."""
    array = images.permute(0, 2, 3, 1).cpu().numpy()
    return np.clip(np.clip(array, 0, 1) * 255, 0, 255).astype(np.uint8)


def _hull_ratio(x_s: torch.Tensor, x_0: torch.Tensor) -> float:
    """``sqrt(vol(hull(x_s))) / sqrt(vol(hull(x_0)))``: the reference's ``calc_motion_multiplier``."""
    from scipy.spatial import ConvexHull

    source = ConvexHull(x_s[0].cpu().numpy()).volume
    first = ConvexHull(x_0[0].cpu().numpy()).volume
    return float(np.sqrt(source) / np.sqrt(first))
