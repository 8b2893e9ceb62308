"""The face rig of the warp engine: control points, motion bases and the dense warp they drive.

Built once per job from the portrait's face mesh (in crop pixels). A frame is described by a small
coefficient vector (``COEFFICIENTS``); each coefficient moves the control points along a fixed basis
(jaw opening, lip spreading, lip rounding, blink, head yaw/pitch/roll/shift). Control points are the
478 mesh landmarks, an ellipse of points around the head (hair, ears, neck follow the head), points
just above the lower inner lip that ride with the upper jaw (teeth stay rigid when the jaw drops) and
fixed points on the crop border (the background stays put).

Dense warp: the control points are triangulated once (Delaunay) and a coarse grid of about 128 x 128
points gets its piecewise-affine (barycentric) weights, so a frame's grid displacement is a single
``(grid, K) @ (K,)`` product. The backward map is the fixed-point inverse of that forward field,
upsampled to full resolution and applied with ``cv2.remap``. Where the lips part, the opening between
the moved inner lips is painted with teeth, tongue and throat (``models.warp.mouth``). The lips move
as bodies (every mesh point between an inner and an outer lip line takes the inner line's motion),
so they keep their thickness when the jaw drops.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy.spatial import Delaunay

from models.warp.eyes import Eyelids
from models.warp.matte import Matte, remap
from models.warp.mouth import MouthInterior, build_mouth

COEFFICIENTS = ("jaw", "wide", "round", "tuck", "blink", "yaw", "pitch", "roll", "shift_x", "shift_y")
"""Per-frame coefficients: jaw/wide/round/tuck/blink in 0..1; yaw/pitch/roll in radians; shifts in crop px."""

# mediapipe mesh topology (left to right in the image for a frontal face).
INNER_UPPER_LIP = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
INNER_LOWER_LIP = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
OUTER_UPPER_LIP = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
OUTER_LOWER_LIP = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
MOUTH_CORNERS = (61, 291, 78, 308)
EYES = (
    # (upper lid incl. corners, lower lid incl. corners)
    ((33, 246, 161, 160, 159, 158, 157, 173, 133), (33, 7, 163, 144, 145, 153, 154, 155, 133)),
    ((362, 398, 384, 385, 386, 387, 388, 466, 263), (362, 382, 381, 380, 374, 373, 390, 249, 263)),
)
CHEEKS, FOREHEAD, CHIN = (234, 454), 10, 152
MESH_POINTS = 478
IRIS = slice(468, 478)

JAW_OPEN = 0.27
"""Lower lip drop at jaw=1, as a fraction of the mouth width."""
LIP_SPREAD = 0.10
LIP_ROUND = 0.16
"""Mouth corner travel at wide=1 / round=1, as a fraction of the mouth width."""
TUCK_INNER, TUCK_OUTER, TUCK_UPPER = 0.03, 0.01, 0.05
"""At tuck=1 the lower lip's inner / outer edge rises and the upper lip lifts by these fractions of
the mouth width."""
TUCK, BLINK = COEFFICIENTS.index("tuck"), COEFFICIENTS.index("blink")
RING_HEAD_WEIGHT = 0.35
"""How much the ellipse of points around the head (hair, ears, neck) follows the head motion."""
BLINK_TRAVEL = 0.8
"""How far the warp slides the upper lid onto the lower one at blink=1; the lid is painted the rest of
the way (models.warp.eyes): a warp squeezed further folds and rings the iris."""
NEWTON_STEPS = 3


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


@dataclass
class Rig:
    """Control points, bases and the grid weights of one portrait crop.

    Attributes:
        size: crop side in pixels.
        points: float64 ``(N, 2)`` control points at rest (crop pixels).
        bases: float64 ``(N, 2, K)`` displacement of each point per unit of each coefficient.
        grid_bases: float32 ``(Gh, Gw, 2, K)`` the same, interpolated on the coarse grid.
        step: grid spacing in pixels.
        teeth_line: indices into ``points`` of the upper-jaw points above the lower inner lip.
        mouth: tones and teeth of the mouth interior (``models.warp.mouth``).
        matte: person alpha and background plate, or None to warp the background too.
    """

    size: int
    points: np.ndarray
    bases: np.ndarray
    grid_bases: np.ndarray
    step: int
    teeth_line: np.ndarray
    mouth: MouthInterior
    matte: Matte | None = None
    _grid: np.ndarray | None = field(default=None, init=False, repr=False)

    def _pixel_grid(self) -> np.ndarray:
        """float32 ``(size, size, 2)``: each pixel's own (x, y)."""
        if self._grid is None:
            axis = np.arange(self.size, dtype=np.float32)
            self._grid = np.stack(np.meshgrid(axis, axis), axis=2)
        return self._grid

    def displaced_points(self, coefficients: np.ndarray) -> np.ndarray:
        """``(N, 2)`` control points of a frame."""
        return self.points + self.bases @ coefficients

    def render(self, crop: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
        """Warp ``crop`` (uint8 ``(size, size, 3)``) by ``coefficients`` (``(K,)``); returns uint8."""
        size, step = self.size, self.step
        forward: np.ndarray = self.grid_bases @ coefficients.astype(np.float32)  # (Gh, Gw, 2) in pixels
        gh, gw = forward.shape[:2]
        grid_x = ((np.arange(gw, dtype=np.float32) + 0.5) * step - 0.5)[None, :]
        grid_y = ((np.arange(gh, dtype=np.float32) + 0.5) * step - 0.5)[:, None]
        # Backward map: solve q + forward(q) = p for q on the grid with Newton steps. (A plain
        # fixed-point iteration crawls where the warp squeezes hard, e.g. a closing eyelid.)
        d_dy, d_dx = np.gradient(forward, axis=(0, 1))
        # One 6-channel field: fx, fy and the Jacobian dfx/dx, dfy/dx, dfx/dy, dfy/dy.
        field = np.concatenate([forward, d_dx / step, d_dy / step], axis=2)
        field[..., 2] += 1.0
        field[..., 5] += 1.0
        q_x = grid_x - forward[..., 0]
        q_y = grid_y - forward[..., 1]
        for _ in range(NEWTON_STEPS):
            sample_x = (q_x + 0.5) / step - 0.5
            sample_y = (q_y + 0.5) / step - 0.5
            f = cv2.remap(field, sample_x, sample_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            r_x = grid_x - q_x - f[..., 0]
            r_y = grid_y - q_y - f[..., 1]
            det = np.maximum(f[..., 2] * f[..., 5] - f[..., 3] * f[..., 4], 0.05)
            q_x = q_x + (f[..., 5] * r_x - f[..., 4] * r_y) / det
            q_y = q_y + (f[..., 2] * r_y - f[..., 3] * r_x) / det
        backward = np.stack([grid_x - q_x, grid_y - q_y], axis=2)
        dense = cv2.resize(backward, (size, size), interpolation=cv2.INTER_LINEAR) if step > 1 else backward
        sample_map = self._pixel_grid() - dense
        if self.matte is None:
            frame = remap(crop, sample_map)
        else:
            frame = self.matte.composite(crop, sample_map)
        moved = self.displaced_points(coefficients)
        self.mouth.paint(frame, moved[:MESH_POINTS], self.points[:MESH_POINTS])
        Eyelids().paint(frame, moved[:MESH_POINTS], float(coefficients[BLINK]))
        return frame


def build_rig(
    landmarks: np.ndarray, size: int, crop: np.ndarray | None = None, matte: Matte | None = None
) -> Rig:
    """Build the rig of a crop.

    Args:
        landmarks: float ``(478, 3)`` face mesh in crop pixels (z scaled like x).
        size: crop side.
        crop: uint8 ``(size, size, 3)`` the portrait crop, for the mouth interior's tones and teeth
            (None: neutral tones, for warm-up).
        matte: the person matte (``models.warp.matte``) that keeps the background still; None: the
            background is warped with the rest.
    """
    mesh = np.asarray(landmarks, dtype=np.float64)
    xy, z = mesh[:, :2], mesh[:, 2]
    n_mesh = len(mesh)
    mouth_width = float(np.linalg.norm(xy[MOUTH_CORNERS[0]] - xy[MOUTH_CORNERS[1]]))
    face_width = float(np.linalg.norm(xy[CHEEKS[0]] - xy[CHEEKS[1]]))
    box_min, box_max = xy.min(axis=0), xy.max(axis=0)
    centre = (box_min + box_max) / 2
    half = (box_max - box_min) / 2

    # Extra control points: a ring around the head, the teeth line, the crop border.
    angles = np.linspace(0, 2 * np.pi, 28, endpoint=False)
    ring = centre + np.stack([np.cos(angles) * half[0] * 1.4, np.sin(angles) * half[1] * 1.35], axis=1)
    ring = ring[(ring > 1).all(axis=1) & (ring < size - 2).all(axis=1)]
    lower_inner = list(INNER_LOWER_LIP[1:-1])
    upper_inner = list(INNER_UPPER_LIP[1:-1])
    teeth = xy[lower_inner] - (
        0.0,
        min(0.75, 0.5 * float(np.min(xy[lower_inner, 1] - xy[upper_inner, 1])) + 0.25),
    )
    edge = np.linspace(-1.0, size, 9)
    border = np.unique(
        np.concatenate(
            [
                np.stack([edge, np.full_like(edge, -1.0)], 1),
                np.stack([edge, np.full_like(edge, size)], 1),
                np.stack([np.full_like(edge, -1.0), edge], 1),
                np.stack([np.full_like(edge, size), edge], 1),
            ]
        ),
        axis=0,
    )
    points = np.concatenate([xy, ring, teeth, border])
    n_ring, n_teeth = len(ring), len(teeth)
    ring_slice = slice(n_mesh, n_mesh + n_ring)
    teeth_slice = slice(n_mesh + n_ring, n_mesh + n_ring + n_teeth)
    bases = np.zeros((len(points), 2, len(COEFFICIENTS)))

    # jaw: everything below the lip seam drops, fading sideways towards the ears; the upper lip lifts
    # a little; the teeth line stays with the upper jaw.
    seam_x = xy[list(INNER_LOWER_LIP), 0]
    seam_y = (xy[list(INNER_LOWER_LIP), 1] + xy[list(INNER_UPPER_LIP), 1]) / 2
    order = np.argsort(seam_x)
    mouth_y = float(seam_y.mean())
    lower_height = max(1.0, float(xy[CHIN, 1]) - mouth_y)
    mouth_cx = float(xy[list(MOUTH_CORNERS[:2]), 0].mean())
    jaw_px = JAW_OPEN * mouth_width

    def jaw_weight(p: np.ndarray) -> np.ndarray:
        seam = np.interp(p[:, 0], seam_x[order], seam_y[order])
        below = _smoothstep((p[:, 1] - seam) / (0.12 * lower_height))
        sideways = np.exp(-(((p[:, 0] - mouth_cx) / (0.42 * face_width)) ** 4))
        return below * sideways

    bases[:n_mesh, 1, 0] = jaw_px * jaw_weight(xy)
    sideways = np.exp(-(((xy[:, 0] - mouth_cx) / (0.42 * face_width)) ** 4))
    # The lower lip drops most in the middle: an open mouth is rounded, not a box.
    from_centre = np.clip(np.abs(xy[:, 0] - mouth_cx) / (0.5 * mouth_width), 0.0, 1.0)
    # The lips move as bodies (keeping their thickness): every mesh point between the inner and the
    # outer lip line (and a little beyond the outer one) takes the drop of the inner lip above/below it.
    lip_drop = jaw_px * sideways * (1 - 0.55 * from_centre**2)
    corners_x = np.sort(xy[[MOUTH_CORNERS[0], MOUTH_CORNERS[1]], 0])
    within = (xy[:, 0] > corners_x[0]) & (xy[:, 0] < corners_x[1])
    lip_margin = 0.06 * mouth_width

    def line_y(indices: tuple[int, ...]) -> np.ndarray:
        line = xy[list(indices)]
        order_ = np.argsort(line[:, 0])
        return np.interp(xy[:, 0], line[order_, 0], line[order_, 1])

    inner_low, outer_low = line_y(INNER_LOWER_LIP), line_y(OUTER_LOWER_LIP)
    inner_up, outer_up = line_y(INNER_UPPER_LIP), line_y(OUTER_UPPER_LIP)
    lower_body = within & (xy[:, 1] >= inner_low - 0.5) & (xy[:, 1] <= outer_low + lip_margin)
    upper_body = within & (xy[:, 1] <= inner_up + 0.5) & (xy[:, 1] >= outer_up - lip_margin)
    bases[:n_mesh, 1, 0] = np.where(
        lower_body, np.maximum(lip_drop, bases[:n_mesh, 1, 0]), bases[:n_mesh, 1, 0]
    )
    bases[:n_mesh, 1, 0] = np.where(upper_body & ~lower_body, -0.12 * jaw_px, bases[:n_mesh, 1, 0])
    for index in (*INNER_LOWER_LIP[1:-1], *OUTER_LOWER_LIP[1:-1]):
        bases[index, 1, 0] = lip_drop[index]
    for index in (*INNER_UPPER_LIP[1:-1], *OUTER_UPPER_LIP[1:-1]):
        bases[index, 1, 0] = -0.12 * jaw_px
    for index in MOUTH_CORNERS:
        bases[index, 1, 0] = 0.4 * jaw_px
    bases[ring_slice, 1, 0] = 0.3 * jaw_px * jaw_weight(ring)
    bases[teeth_slice, :, 0] = bases[upper_inner, :, 0]

    # wide / round: the mouth corners move out / in, dragging the lips and cheeks around them.
    sigma = 0.35 * mouth_width
    on_face = np.zeros(len(points))
    on_face[:n_mesh] = 1.0
    on_face[teeth_slice] = 1.0
    for corner_pair, direction in ((MOUTH_CORNERS[0::2], -1.0), (MOUTH_CORNERS[1::2], 1.0)):
        corner = xy[list(corner_pair)].mean(axis=0)
        falloff = np.exp(-np.sum((points - corner) ** 2, axis=1) / (2 * sigma**2)) * on_face
        bases[:, 0, 1] += direction * LIP_SPREAD * mouth_width * falloff
        bases[:, 0, 2] -= direction * LIP_ROUND * mouth_width * falloff
    # Rounded lips part a little.
    bases[:, 1, 2] += 0.3 * bases[:, 1, 0] / max(jaw_px, 1e-6) * LIP_ROUND * mouth_width

    # tuck ("f", "v"): the lower lip rolls up under the upper teeth (its inner edge rises more than its
    # outer one) and the upper lip lifts a little, showing the teeth resting on the lower lip.
    fade = 1 - 0.5 * from_centre**2
    depth_in_lip = np.clip((xy[:, 1] - inner_low) / np.maximum(outer_low - inner_low, 1.0), 0.0, 1.0)
    rise = TUCK_INNER * (1 - depth_in_lip) + TUCK_OUTER * depth_in_lip
    bases[:n_mesh, 1, TUCK] = np.where(lower_body, -rise * mouth_width * fade, 0.0)
    bases[:n_mesh, 1, TUCK] = np.where(
        upper_body & ~lower_body, -TUCK_UPPER * mouth_width, bases[:n_mesh, 1, TUCK]
    )
    for index in INNER_LOWER_LIP[1:-1]:
        bases[index, 1, TUCK] = -TUCK_INNER * mouth_width * fade[index]
    for index in OUTER_LOWER_LIP[1:-1]:
        bases[index, 1, TUCK] = -TUCK_OUTER * mouth_width * fade[index]
    for index in (*INNER_UPPER_LIP[1:-1], *OUTER_UPPER_LIP[1:-1]):
        bases[index, 1, TUCK] = -TUCK_UPPER * mouth_width
    bases[teeth_slice, :, TUCK] = bases[upper_inner, :, TUCK]

    # blink: the upper lid slides down onto the lower lid; skin above it stretches, the eye
    # opening (iris included) is squeezed towards the lower lid.
    for upper_lid, lower_lid in EYES:
        upper = xy[list(upper_lid)]
        lower = xy[list(lower_lid)]
        eye_width = float(np.ptp(upper[:, 0]))
        u_order, l_order = np.argsort(upper[:, 0]), np.argsort(lower[:, 0])
        inside = (xy[:, 0] > upper[:, 0].min()) & (xy[:, 0] < upper[:, 0].max())
        px, py = xy[:, 0], xy[:, 1]
        upper_y = np.interp(px, upper[u_order, 0], upper[u_order, 1])
        lower_y = np.interp(px, lower[l_order, 0], lower[l_order, 1])
        brow_y = upper_y - 0.6 * eye_width
        gap = np.maximum(lower_y - upper_y, 0.0)
        above = (py >= brow_y) & (py <= upper_y)
        between = (py > upper_y) & (py <= lower_y)
        profile = np.zeros(n_mesh)
        profile[above] = (py[above] - brow_y[above]) / (upper_y[above] - brow_y[above])
        profile[between] = (lower_y[between] - py[between]) / np.maximum(gap[between], 1e-6)
        bases[:n_mesh, 1, BLINK] += np.where(inside, BLINK_TRAVEL * gap * profile, 0.0)

    # head: small rotations (linearised) and shifts; mesh points follow fully, the ring partly.
    weight = np.zeros(len(points))
    weight[:n_mesh] = 1.0
    weight[ring_slice] = RING_HEAD_WEIGHT
    weight[teeth_slice] = 1.0
    depth = np.zeros(len(points))
    axis_z = float(z[list(CHEEKS)].mean()) + 0.4 * face_width  # a vertical axis behind the face
    depth[:n_mesh] = axis_z - z
    depth[n_mesh:] = axis_z - float(z[list(CHEEKS)].mean())
    depth[teeth_slice] = axis_z - z[lower_inner]
    pivot = np.array([centre[0], float(xy[CHIN, 1]) + 0.3 * lower_height])
    yaw, pitch, roll, shift_x, shift_y = range(BLINK + 1, BLINK + 6)
    bases[:, 0, yaw] = weight * depth
    bases[:, 1, pitch] = weight * depth
    bases[:, 0, roll] = -weight * (points[:, 1] - pivot[1])
    bases[:, 1, roll] = weight * (points[:, 0] - pivot[0])
    bases[:, 0, shift_x] = weight
    bases[:, 1, shift_y] = weight

    step = max(1, round(size / 128))
    # The iris points stay out of the triangulation: thin triangles between them and the lids would
    # fold during a blink and leave the iris outline floating on the closed lid.
    triangulated = np.ones(len(points), bool)
    triangulated[IRIS] = False
    grid_bases = _grid_bases(points[triangulated], bases[triangulated], size, step)
    if matte is not None and matte.alpha.shape != (size, size):
        raise ValueError(f"the matte must be {size} x {size}, got {matte.alpha.shape}")
    teeth_line = np.arange(teeth_slice.start, teeth_slice.stop)
    return Rig(
        size=size,
        points=points,
        bases=bases,
        grid_bases=grid_bases,
        step=step,
        teeth_line=teeth_line,
        mouth=build_mouth(crop, xy),
        matte=matte,
    )


def _grid_bases(points: np.ndarray, bases: np.ndarray, size: int, step: int) -> np.ndarray:
    """Piecewise-affine interpolation of the bases on a grid of spacing ``step``: ``(Gh, Gw, 2, K)``."""
    count = int(np.ceil(size / step))
    coords = (np.arange(count) + 0.5) * step - 0.5
    gx, gy = np.meshgrid(coords, coords)
    query = np.stack([gx.ravel(), gy.ravel()], axis=1)
    triangulation = Delaunay(points)
    simplex = triangulation.find_simplex(query)
    simplex = np.where(simplex < 0, triangulation.find_simplex(np.clip(query, 0, size - 1)), simplex)
    transform = triangulation.transform[simplex]
    partial = np.einsum("nij,nj->ni", transform[:, :2], query - transform[:, 2])
    weights = np.concatenate([partial, 1 - partial.sum(axis=1, keepdims=True)], axis=1)
    vertices = triangulation.simplices[simplex]
    grid = np.einsum("nv,nvck->nck", weights, bases[vertices])
    return grid.reshape(count, count, 2, bases.shape[2]).astype(np.float32)
