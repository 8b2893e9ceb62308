"""Eyelids of the warp engine: a blink that closes the eye, not one that squeezes it into a slit.

The rig's blink basis slides the upper lid onto the lower one; the warp then compresses what is
left of the eye opening (iris, sclera, the catch-light) into a thin band, which reads as a bright
slit or a floating ring, and behind glasses as an eye that only narrows. So from half-closed on,
the remaining opening is painted over with the lid itself: each column takes the colour of the lid
skin just above the moved lid edge (the frame's own pixels there, so the tone, the lighting and
whatever lies in front of the eye, such as a spectacle lens, carry over), darkened towards the edge,
with a lash line along the edge. Computed in each eye's bounding box only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EYES = (
    # (upper lid incl. corners, lower lid incl. corners), left to right in the image
    ((33, 246, 161, 160, 159, 158, 157, 173, 133), (33, 7, 163, 144, 145, 153, 154, 155, 133)),
    ((362, 398, 384, 385, 386, 387, 388, 466, 263), (362, 382, 381, 380, 374, 373, 390, 249, 263)),
)
PAINT_FROM = 0.45
"""Closure at which the lid starts to cover the opening (fully covered at 1)."""
LASH_DARKEN = 0.7
"""Lash line: the lid colour times this at the lid edge."""


def _smoothstep(x: float) -> float:
    x = min(1.0, max(0.0, x))
    return x * x * (3 - 2 * x)


def _line(points: np.ndarray, xs: np.ndarray) -> np.ndarray:
    order = np.argsort(points[:, 0], kind="stable")
    return np.interp(xs, points[order, 0], points[order, 1])


@dataclass
class Eyelids:
    """Paints the closing lids (see module docstring)."""

    def paint(self, frame: np.ndarray, moved: np.ndarray, closure: float) -> None:
        """Cover the eye openings of ``frame`` (uint8 ``(S, S, 3)``, in place) at ``closure`` 0..1.

        Args:
            moved: float ``(N, 2)`` mesh points of this frame (crop pixels).
        """
        cover = _smoothstep((closure - PAINT_FROM) / (1 - PAINT_FROM))
        if cover <= 0:
            return
        size = frame.shape[0]
        for upper_lid, lower_lid in EYES:
            upper, lower = moved[list(upper_lid)], moved[list(lower_lid)]
            width = float(np.ptp(upper[:, 0]))
            if width < 2:
                continue
            x0 = max(0, int(np.floor(upper[:, 0].min())))
            x1 = min(size, int(np.ceil(upper[:, 0].max())) + 1)
            top_y = min(float(upper[:, 1].min()), float(lower[:, 1].min()))
            y0 = max(0, int(np.floor(top_y - 0.3 * width)))
            y1 = min(size, int(np.ceil(lower[:, 1].max())) + 2)
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue
            xs = np.arange(x0, x1, dtype=np.float64)
            lid = _line(upper, xs)
            bottom = np.maximum(_line(lower, xs), lid)
            box = frame[y0:y1, x0:x1].astype(np.float32)
            ys = np.arange(y0, y1, dtype=np.float64)[:, None]
            # Lid skin colour per column: the frame above the moved lid edge, the brighter half of a
            # few rows (lashes and the lid crease are darker than the skin).
            rows = lid[None, :] - width * np.linspace(0.07, 0.25, 6)[:, None]
            sample = np.clip(np.round(rows), y0, y1 - 1).astype(int) - y0
            columns = np.arange(x1 - x0)
            samples = box[sample, columns[None, :]]  # (6, w, 3)
            order = np.argsort(samples.mean(axis=2), axis=0)[3:]
            skin = np.take_along_axis(samples, order[..., None], axis=0).mean(axis=0)  # (w, 3)
            # Coverage: from a little above the lid edge (hiding the squeezed lashes and catch-light
            # that ride on it) down to the lower lid, anti-aliased.
            start = lid - 0.03 * width
            inside = np.clip(ys - start + 0.5, 0.0, 1.0) * np.clip(bottom + 0.5 - ys, 0.0, 1.0)
            corner = np.clip(np.minimum(xs - upper[:, 0].min(), upper[:, 0].max() - xs) / 1.5, 0.0, 1.0)
            inside = inside * corner[None, :]
            # Darker towards the lash line, which the painted lid carries down onto the lower lid.
            edge = lid + (bottom - lid) * cover
            distance = np.abs(ys - edge[None, :]) / max(0.8, 0.035 * width)
            shade = 1 - (1 - LASH_DARKEN) * np.exp(-(distance**2))
            painted = skin[None, :, :] * shade[..., None]
            alpha = (inside * cover)[..., None]
            frame[y0:y1, x0:x1] = np.clip(box + (painted - box) * alpha + 0.5, 0, 255).astype(np.uint8)
