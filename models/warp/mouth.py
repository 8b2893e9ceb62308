"""The mouth interior of the warp engine: teeth, tongue and throat painted between the moved lips.

A warp can only stretch what the portrait shows, so where the lips part the rig paints the inside of
the mouth in layers, back to front, clipped to the moved inner-lip polygon:

1. throat: dark, a little lighter and redder just inside the lips (light falls in from the front);
2. tongue: a soft, darker-than-lip ellipse low in the opening, riding with the jaw;
3. lower teeth, riding with the lower lip (the jaw); 4. upper teeth, riding with the upper lip.

Where the portrait shows its teeth (a bright, low-saturation band between the lips), the teeth layers
are the portrait's own pixels: the opening is split at the darkest row between the two rows of
teeth, the part above moves rigidly with the upper lip and the part below with the lower lip, so at
rest the frame is the portrait itself. Where the portrait shows a closed mouth, the teeth are drawn:
a band in the tone of the portrait's own eye whites, darker towards the mouth corners, with faint
gaps between the teeth. Everything is computed in the bounding box of the opening only.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

INNER_UPPER_LIP = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
INNER_LOWER_LIP = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
OUTER_UPPER_LIP = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
OUTER_LOWER_LIP = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
EYE_OPENINGS = (
    (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7),
    (362, 398, 384, 385, 386, 387, 388, 466, 263, 249, 390, 373, 374, 380, 381, 382),
)

UPPER_TEETH = 0.095
LOWER_TEETH = 0.07
"""Visible height of the drawn upper / lower teeth, as a fraction of the mouth width."""
TEETH_SHADE = 0.9
"""Drawn teeth are the eye-white tone times this (inside the mouth is in shade)."""
TOOTH_EDGES = (0.0, 0.13, 0.24, 0.335, 0.415)
"""Gaps between drawn teeth, as distances from the mouth centre in mouth widths (both sides)."""
IVORY = np.array([1.07, 1.0, 0.86])
"""Hue of drawn teeth (RGB, mean 1), warmed a little by the skin's."""
SHOWS_TEETH_GAP = 0.06
"""A portrait whose lip gap is at least this many mouth widths may show its teeth (then checked)."""


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _polyline(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(points[:, 0], kind="stable")
    return points[order, 0], points[order, 1]


@dataclass
class TeethLayer:
    """Real teeth cut from the portrait: RGBA patch ``(h, w, 4)`` float32 at ``origin`` (x, y)."""

    patch: np.ndarray
    origin: tuple[int, int]


@dataclass
class MouthInterior:
    """Tones and (where the portrait shows teeth) the real teeth of one portrait crop.

    Attributes:
        mouth_width: corner to corner at rest, pixels.
        teeth, throat, tongue, lip_shade: float32 ``(3,)`` RGB tones.
        upper, lower: the portrait's own teeth, or None to draw them.
        softness: Gaussian sigma (pixels) the painted interior is blurred with, to match the photo.
    """

    mouth_width: float
    teeth: np.ndarray
    throat: np.ndarray
    tongue: np.ndarray
    lip_shade: np.ndarray
    upper: TeethLayer | None
    lower: TeethLayer | None
    softness: float

    @property
    def real_teeth(self) -> bool:
        return self.upper is not None

    def paint(self, frame: np.ndarray, moved: np.ndarray, rest: np.ndarray) -> None:
        """Paint the interior into ``frame`` (uint8 ``(S, S, 3)``, in place).

        Args:
            moved: float ``(N, 2)`` mesh points of this frame (crop pixels).
            rest: float ``(N, 2)`` the same at rest.
        """
        upper = moved[list(INNER_UPPER_LIP)]
        lower = moved[list(INNER_LOWER_LIP)]
        ux, uy = _polyline(upper)
        lx, ly = _polyline(lower)
        gap = float(np.max(np.interp(ux, lx, ly) - uy))
        if gap < 0.5 and not self.real_teeth:
            return
        size = frame.shape[0]
        polygon = np.concatenate([upper, lower])
        x0, y0 = np.floor(polygon.min(axis=0)).astype(int) - 2
        x1, y1 = np.ceil(polygon.max(axis=0)).astype(int) + 3
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(size, x1), min(size, y1)
        if x1 <= x0 or y1 <= y0:
            return
        xs = np.arange(x0, x1, dtype=np.float32)
        ys = np.arange(y0, y1, dtype=np.float32)[:, None]
        top = np.interp(xs, ux, uy).astype(np.float32)[None, :]
        bottom = np.interp(xs, lx, ly).astype(np.float32)[None, :]
        opening = np.maximum(bottom - top, 0.0)
        # Coverage of each pixel by the opening, anti-aliased vertically; columns outside the corners
        # have no opening.
        ramp = max(1.0, size / 320)  # the lips' inner edge is as soft as the photo's
        inside = np.clip((ys - top) / ramp + 0.5, 0.0, 1.0) * np.clip((bottom - ys) / ramp + 0.5, 0.0, 1.0)
        inside *= ((xs >= ux[0]) & (xs <= ux[-1]))[None, :]
        if not inside.any():
            return
        width = self.mouth_width
        centre_x = float(upper[:, 0].mean())
        across = np.clip(np.abs(xs - centre_x) / (0.5 * max(ux[-1] - ux[0], 1.0)), 0.0, 1.0)[None, :]

        # 1. throat, lighter just inside the lips
        depth = np.minimum(ys - top, bottom - ys)
        lit = np.exp(-np.maximum(depth, 0.0) / (0.06 * width))[..., None]
        interior = self.throat + (self.lip_shade - self.throat) * lit * 0.6
        interior = np.broadcast_to(interior, (*inside.shape, 3)).astype(np.float32)

        # 2. tongue, low in the opening, seen once the jaw has dropped a little
        jaw_shift = moved[list(INNER_LOWER_LIP[4:7])].mean(axis=0) - rest[list(INNER_LOWER_LIP[4:7])].mean(
            axis=0
        )
        tongue_y = bottom - 0.04 * width
        tongue = np.clip(
            1 - ((xs - centre_x) / (0.28 * width)) ** 2 - ((ys - tongue_y) / (0.07 * width)) ** 2, 0.0, 1.0
        )
        tongue = (0.9 * tongue**0.5 * _smoothstep((opening - 0.1 * width) / (0.1 * width)))[..., None]
        lift = np.clip((tongue_y - ys) / (0.075 * width), 0.0, 1.0)[..., None]  # lit from above
        interior = interior + (self.tongue * (0.75 + 0.35 * lift) - interior) * tongue

        # 3./4. teeth
        upper_shift = moved[list(INNER_UPPER_LIP[4:7])].mean(axis=0) - rest[list(INNER_UPPER_LIP[4:7])].mean(
            axis=0
        )
        drop = float(jaw_shift[1] - upper_shift[1])
        if self.upper is not None and self.lower is not None:
            interior = self._drawn_teeth(
                interior, xs, ys, top, bottom, opening, across, centre_x, upper=False
            )
            # The portrait's own lower row (often just its edge) gives way to a full row as the jaw drops.
            fade = 1 - float(_smoothstep(np.array(drop / (0.05 * width))))
            interior = self._real_teeth(interior, self.lower, jaw_shift, x0, y0, fade)
            interior = self._real_teeth(interior, self.upper, upper_shift, x0, y0, 1.0)
        else:
            interior = self._drawn_teeth(interior, xs, ys, top, bottom, opening, across, centre_x, upper=True)

        if self.softness > 0.3:
            interior = cv2.GaussianBlur(interior, (0, 0), sigmaX=self.softness)
        alpha = inside[..., None]
        region = frame[y0:y1, x0:x1].astype(np.float32)
        frame[y0:y1, x0:x1] = np.clip(region + (interior - region) * alpha + 0.5, 0, 255).astype(np.uint8)

    def _real_teeth(
        self, interior: np.ndarray, layer: TeethLayer, shift: np.ndarray, x0: int, y0: int, opacity: float
    ) -> np.ndarray:
        """Composite a portrait teeth layer, moved rigidly by ``shift`` (x, y), over ``interior``."""
        h, w = interior.shape[:2]
        # Patch pixel (px, py) lands at (origin + p + shift); sample the patch for each box pixel.
        matrix = np.array(
            [[1.0, 0.0, layer.origin[0] + shift[0] - x0], [0.0, 1.0, layer.origin[1] + shift[1] - y0]],
            dtype=np.float64,
        )
        if opacity <= 0:
            return interior
        moved = cv2.warpAffine(
            layer.patch,
            matrix,
            (w, h),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0.0, 0.0, 0.0, 0.0),
        )
        alpha = moved[..., 3:4] * opacity
        result: np.ndarray = interior * (1 - alpha) + moved[..., :3] * opacity
        return result

    def _drawn_teeth(
        self,
        interior: np.ndarray,
        xs: np.ndarray,
        ys: np.ndarray,
        top: np.ndarray,
        bottom: np.ndarray,
        opening: np.ndarray,
        across: np.ndarray,
        centre_x: float,
        upper: bool,
    ) -> np.ndarray:
        width = self.mouth_width
        # Teeth recede into shade towards the corners and are hidden there by the cheeks.
        shade = (1 - 0.45 * across**2) * _smoothstep((0.85 - across) / 0.3)
        edges = np.abs(xs - centre_x)[None, :] / width
        gaps = np.ones_like(edges)
        for edge in TOOTH_EDGES:
            gaps = np.minimum(gaps, np.abs(edges - edge) * width / max(0.8, width / 120))
        gaps = 0.86 + 0.14 * np.clip(gaps, 0.0, 1.0)
        # A small opening shows the teeth edges only faintly (mostly shadow).
        show = _smoothstep((opening - 0.015 * width) / (0.05 * width))
        layers = [(bottom - LOWER_TEETH * width * (1 - 0.5 * across**2), bottom, 0.85, True)]
        if upper:
            layers.append((top, top + UPPER_TEETH * width * (1 - 0.35 * across**2), 1.0, False))
        for start, stop, bright, lower_row in layers:
            band = np.clip(ys - start + 0.5, 0.0, 1.0) * np.clip(stop - ys + 0.5, 0.0, 1.0)
            # In the shade of the lip they come out from under; the biting edge is a little darker.
            into = (stop - ys) if lower_row else (ys - start)
            lipshade = 0.8 + 0.2 * _smoothstep(into / (0.03 * width))
            edge = np.abs(ys - (start if lower_row else stop))
            edge_dark = 1 - 0.2 * np.exp(-edge / max(0.7, width / 100))
            tone = self.teeth * (bright * shade * gaps * edge_dark * lipshade)[..., None]
            a = (band * show * _smoothstep(shade / 0.25))[..., None]
            interior = interior + (tone - interior) * a
        return interior


def build_mouth(crop: np.ndarray | None, landmarks: np.ndarray) -> MouthInterior:
    """Measure the tones (and, where shown, cut the teeth) of a portrait crop.

    Args:
        crop: uint8 ``(S, S, 3)`` or None (neutral tones, drawn teeth: for warm-up renders).
        landmarks: float ``(478, >=2)`` mesh in crop pixels.
    """
    xy = np.asarray(landmarks, dtype=np.float64)[:, :2]
    width = max(1.0, float(np.linalg.norm(xy[61] - xy[291])))
    if crop is None:
        teeth = np.array([215.0, 205.0, 190.0], np.float32)
        lip = np.array([150.0, 80.0, 80.0], np.float32)
        return _tones(width, teeth, lip, None, None, 0.6)
    size = crop.shape[0]
    image = crop.astype(np.float32)
    teeth = _eye_white(image, xy)
    lip = _lip_tone(image, xy)
    softness = max(0.5, size / 700)
    upper, lower, own = _real_teeth(image, xy, width, teeth)
    return _tones(width, own if own is not None else teeth * TEETH_SHADE, lip, upper, lower, softness)


def _tones(
    width: float,
    teeth: np.ndarray,
    lip: np.ndarray,
    upper: TeethLayer | None,
    lower: TeethLayer | None,
    softness: float,
) -> MouthInterior:
    return MouthInterior(
        mouth_width=width,
        teeth=teeth.astype(np.float32),
        throat=(lip * 0.16 + 4.0).astype(np.float32),
        tongue=(lip * np.array([0.62, 0.42, 0.45], np.float32)).astype(np.float32),
        lip_shade=(lip * 0.42).astype(np.float32),
        upper=upper,
        lower=lower,
        softness=softness,
    )


def _mask(shape: tuple[int, ...], polygons: list[np.ndarray]) -> np.ndarray:
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(p).astype(np.int32) for p in polygons], (255,))
    return mask > 0


def _eye_white(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """The bright, unsaturated pixels inside the eye openings (the sclera), or a neutral tone."""
    mask = _mask(image.shape[:2], [xy[list(eye)] for eye in EYE_OPENINGS])
    pixels = image[mask]
    if len(pixels) >= 12:
        luma = pixels.mean(axis=1)
        saturation = pixels.max(axis=1) - pixels.min(axis=1)
        score = luma - 1.5 * saturation
        best = pixels[score >= np.percentile(score, 85)]
        tone = best.mean(axis=0)
        # Their brightness, in an ivory hue warmed by the skin's (eye whites behind tinted glasses or
        # in blue light would give blue-grey teeth).
        luma_tone = float(np.clip(tone.mean(), 185.0, 235.0))
        skin = np.median(image[_mask(image.shape[:2], [xy[[234, 10, 454, 152]]])], axis=0)
        hue = 0.75 * IVORY + 0.25 * skin / max(float(skin.mean()), 1.0)
        return np.clip(hue * luma_tone, 0, 255)
    return IVORY * 205.0


def _lip_tone(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Median colour of the lips (between the outer and the inner lip lines)."""
    outer = np.concatenate([xy[list(OUTER_UPPER_LIP)], xy[list(OUTER_LOWER_LIP)][::-1]])
    inner = np.concatenate([xy[list(INNER_UPPER_LIP)], xy[list(INNER_LOWER_LIP)][::-1]])
    mask = _mask(image.shape[:2], [outer]) & ~_mask(image.shape[:2], [inner])
    pixels = image[mask]
    return np.median(pixels, axis=0) if len(pixels) >= 8 else np.array([150.0, 80.0, 80.0])


def _real_teeth(
    image: np.ndarray, xy: np.ndarray, width: float, eye_white: np.ndarray
) -> tuple[TeethLayer | None, TeethLayer | None, np.ndarray | None]:
    """The portrait's teeth as an upper and a lower layer and their tone, or Nones if it shows none."""
    ux, uy = _polyline(xy[list(INNER_UPPER_LIP)])
    lx, ly = _polyline(xy[list(INNER_LOWER_LIP)])
    centre = (xy[13] + xy[14]) / 2
    gap = float(xy[14, 1] - xy[13, 1])
    if gap < SHOWS_TEETH_GAP * width:
        return None, None, None
    size = image.shape[0]
    x0, x1 = max(0, int(np.floor(ux[0])) - 2), min(size, int(np.ceil(ux[-1])) + 3)
    y0 = max(0, int(np.floor(uy.min())) - 3)
    y1 = min(size, int(np.ceil(ly.max())) + 3)
    xs = np.arange(x0, x1, dtype=np.float32)
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    top = np.interp(xs, ux, uy)[None, :]
    bottom = np.interp(xs, lx, ly)[None, :]
    box = image[y0:y1, x0:x1]
    inside = (ys >= top - 0.5) & (ys <= bottom + 0.5) & ((xs >= ux[0]) & (xs <= ux[-1]))[None, :]
    # Teeth: bright and low in saturation, like the eye whites.
    luma = box.mean(axis=2)
    saturation = box.max(axis=2) - box.min(axis=2)
    toothy = inside & (luma > 0.6 * float(eye_white.mean())) & (saturation < 0.45 * luma + 20)
    central = inside & (np.abs(xs - centre[0]) < 0.25 * width)[None, :]
    if toothy[central].mean() < 0.35:
        return None, None, None
    # Split at the darkest row between the two rows of teeth (the central columns), in the lower part
    # of the opening; a portrait with the rows touching splits at 70 % of the gap.
    columns = np.abs(xs - centre[0]) < 0.2 * width
    profile = luma[:, columns].mean(axis=1)
    rows = np.arange(y0, y1, dtype=np.float64)
    search = (rows > xy[13, 1] + 0.5 * gap) & (rows < xy[14, 1] - 0.08 * gap)
    split_y = float(xy[13, 1] + 0.7 * gap)
    if search.sum() >= 3:
        candidate = rows[search][int(np.argmin(profile[search]))]
        if profile[search].min() < 0.8 * np.median(profile[(rows > xy[13, 1]) & (rows < xy[14, 1])]):
            split_y = float(candidate)
    # The split follows the curve of the lips, offset to pass through split_y at the centre.
    curve = (top + bottom) / 2
    split = curve - float(np.interp(centre[0], xs, curve[0])) + split_y
    feather = 1.0
    above = np.clip((split - ys) / feather + 0.5, 0.0, 1.0)
    # The layers reach a little behind the lips (the teeth continue under them).
    reach = (ys >= top - 0.05 * width) & (ys <= bottom + 0.05 * width)
    upper_alpha = (above * reach).astype(np.float32)
    lower_alpha = ((1 - above) * reach).astype(np.float32)

    def layer(alpha: np.ndarray) -> TeethLayer:
        patch = np.concatenate([box * alpha[..., None], alpha[..., None]], axis=2).astype(np.float32)
        return TeethLayer(patch=patch, origin=(x0, y0))

    return layer(upper_alpha), layer(lower_alpha), box[toothy & central].mean(axis=0) * 0.92
