"""Decoding and checking uploads with Pillow and PyAV: the portrait, the speech, a driving video.

Every check reads as little as it can (headers before pixels, one frame before a whole video) and
every refusal is an ``InvalidInput`` with its own code.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from core.errors import InvalidInput

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from core.settings import Settings

FEATURE_SAMPLE_RATE = 16_000
IMAGE_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
IMAGE_FORMAT_ALIASES = {"MPO": "JPEG"}
"""Camera JPEGs with extra images (stereo, depth) are MPO to Pillow: the first image is the photo."""
WHITE = (255, 255, 255)
_REPR = re.compile(r"\s*'?<_io\.\w+ object at 0x[0-9a-fA-F]+>'?")


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    min_side: int = 128


@dataclass(frozen=True)
class AudioLimits:
    max_bytes: int = 50 * 1024 * 1024
    min_seconds: float = 0.5
    max_seconds: float = 600.0


@dataclass(frozen=True)
class VideoLimits:
    """Limits of a driving video: file size, frame size (pixels per side)."""

    max_bytes: int = 64 * 1024 * 1024
    min_side: int = 16
    max_side: int = 4096
    max_packets_to_first_frame: int = 1000


@dataclass(frozen=True)
class InputLimits:
    """The input limits of the deployment; the API and the worker both build them from settings."""

    image: ImageLimits = field(default_factory=ImageLimits)
    audio: AudioLimits = field(default_factory=AudioLimits)
    driving_video: VideoLimits = field(default_factory=VideoLimits)

    @classmethod
    def from_settings(cls, settings: Settings) -> InputLimits:
        """The limits named by ``PARLA_MAX_*``/``PARLA_MIN_*`` (a driving video: the request cap)."""
        return cls(
            image=ImageLimits(settings.max_image_bytes, settings.max_image_pixels, settings.min_image_side),
            audio=AudioLimits(
                settings.max_audio_bytes, settings.min_audio_seconds, settings.max_audio_seconds
            ),
            driving_video=VideoLimits(max_bytes=settings.max_request_bytes),
        )


@dataclass(frozen=True)
class DecodedAudio:
    """``samples``: float32 mono at ``sample_rate`` (16 kHz, for features); ``duration_s`` of the original."""

    samples: npt.NDArray[np.float32]
    sample_rate: int
    duration_s: float


# --- images


def check_image(data: bytes, limits: ImageLimits) -> tuple[str, int, int]:
    """Format (``PNG``/``JPEG``/``WEBP``; an MPO camera file is ``JPEG``), width and height, from the header.

    Refuses oversized files and decompression bombs before any pixel is decoded.
    """
    from PIL import Image, UnidentifiedImageError

    if len(data) > limits.max_bytes:
        raise InvalidInput(
            f"image is larger than {limits.max_bytes} bytes", code="image_too_large", status_code=413
        )
    if not data:
        raise InvalidInput("image file is empty", code="invalid_image")
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt, (width, height) = image.format or "", image.size
    except Image.DecompressionBombError:
        # Pillow refuses from the header alone beyond twice its MAX_IMAGE_PIXELS (~179 MP): the
        # same answer as our own, lower, limit.
        raise _too_many_pixels(limits) from None
    except UnidentifiedImageError:
        raise InvalidInput(
            "image could not be read: not a recognised image file", code="invalid_image"
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidInput(f"image could not be read: {_clean(exc)}", code="invalid_image") from None
    fmt = IMAGE_FORMAT_ALIASES.get(fmt, fmt)
    if fmt not in IMAGE_FORMATS:
        raise InvalidInput(
            f"image format {fmt or 'unknown'} is not PNG, JPEG or WebP", code="unsupported_image_format"
        )
    if width * height > limits.max_pixels:
        raise _too_many_pixels(limits, (width, height))
    if min(width, height) < limits.min_side:
        raise InvalidInput(
            f"image is {width}x{height}; each side must be at least {limits.min_side} pixels",
            code="image_too_small",
        )
    return fmt, width, height


def decode_image(data: bytes, limits: ImageLimits | None = None) -> npt.NDArray[np.uint8]:
    """RGB uint8 ``(H, W, 3)``, rotated as its EXIF orientation says. Checks ``limits`` first.

    16-bit greyscale is scaled to 8 bits; transparent pixels (alpha, or a PNG transparent colour)
    are composited on white, so a cut-out portrait gets a plain background; CMYK is converted.
    """
    from PIL import Image, ImageOps

    check_image(data, limits or ImageLimits())
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            upright = _to_rgb(ImageOps.exif_transpose(image))
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt pixel data
        raise InvalidInput(f"image could not be decoded: {_clean(exc)}", code="invalid_image") from None
    return upright


def _to_rgb(image: PILImage) -> npt.NDArray[np.uint8]:
    from PIL import Image

    if image.mode.startswith("I"):  # I;16 (16-bit PNG), I;16B, I: a 0..65535 range, not 0..255
        levels = np.clip(np.asarray(image), 0, 65535).astype(np.uint32)
        grey = ((levels * 255 + 32767) // 65535).astype(np.uint8)  # rounded, 65535 -> 255
        if isinstance(key := image.info.get("transparency"), int):
            grey[levels == key] = 255
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        flat = Image.alpha_composite(Image.new("RGBA", rgba.size, (*WHITE, 255)), rgba).convert("RGB")
        return np.asarray(flat, dtype=np.uint8).copy()
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def _too_many_pixels(limits: ImageLimits, size: tuple[int, int] | None = None) -> InvalidInput:
    """``size`` is None when Pillow refused the header before telling it."""
    from PIL import Image

    if size is not None:
        message = f"image has {size[0]}x{size[1]} pixels, more than {limits.max_pixels}"
    else:
        cap = (
            min(limits.max_pixels, 2 * Image.MAX_IMAGE_PIXELS)
            if Image.MAX_IMAGE_PIXELS
            else limits.max_pixels
        )
        message = f"image has more than {cap} pixels"
    return InvalidInput(message, code="image_too_large", status_code=413)


def _clean(exc: BaseException) -> str:
    """An exception's message without the repr of our in-memory file (``<_io.BytesIO object at ...>``)."""
    strerror = getattr(exc, "strerror", None)  # PyAV: "[Errno N] text: '<none>'" -> text
    text = strerror if isinstance(strerror, str) and strerror else str(exc)
    return _REPR.sub("", text).strip() or type(exc).__name__


# --- audio


def decode_audio(data: bytes, limits: AudioLimits | None = None) -> DecodedAudio:
    """Decode any format PyAV reads to 16 kHz mono float32, and check the duration limits."""
    import av

    limits = limits or AudioLimits()
    if len(data) > limits.max_bytes:
        raise InvalidInput(
            f"audio is larger than {limits.max_bytes} bytes", code="audio_too_large", status_code=413
        )
    if not data:
        raise InvalidInput("audio file is empty", code="invalid_audio")
    blocks: list[npt.NDArray[np.float32]] = []
    total = 0
    max_samples = int((limits.max_seconds + 1) * FEATURE_SAMPLE_RATE)
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise InvalidInput("the file has no audio stream", code="invalid_audio")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=FEATURE_SAMPLE_RATE)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    block = out.to_ndarray().reshape(-1).astype(np.float32)
                    blocks.append(block)
                    total += len(block)
                if total > max_samples:
                    break
            for out in resampler.resample(None):
                blocks.append(out.to_ndarray().reshape(-1).astype(np.float32))
    except InvalidInput:
        raise
    except (av.error.FFmpegError, ValueError, OSError, EOFError) as exc:
        raise InvalidInput(f"audio could not be decoded: {_clean(exc)}", code="invalid_audio") from None
    samples = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
    duration = len(samples) / FEATURE_SAMPLE_RATE
    if duration > limits.max_seconds:
        raise InvalidInput(f"audio is longer than {limits.max_seconds:g} s", code="audio_too_long")
    if duration < limits.min_seconds:
        raise InvalidInput(
            f"audio is {duration:.2f} s long; at least {limits.min_seconds:g} s are needed",
            code="audio_too_short",
        )
    if not np.isfinite(samples).all():
        raise InvalidInput("audio contains invalid samples", code="invalid_audio")
    return DecodedAudio(np.clip(samples, -1.0, 1.0), FEATURE_SAMPLE_RATE, duration)


# --- driving video


@dataclass(frozen=True)
class VideoProbe:
    """What ``check_video`` found: the first video stream, and that its first frame decodes."""

    width: int
    height: int
    fps: float | None
    duration_s: float | None
    codec: str


def check_video(data: bytes, limits: VideoLimits) -> VideoProbe:
    """Refuse a driving video unless PyAV decodes a frame of its first video stream, within ``limits``.

    The frame size is checked from the stream header before anything is decoded (and again on
    the decoded frame); only packets up to the first frame are read, so this is cheap for any length.

    Raises:
        InvalidInput: ``driving_video_too_large`` (413: over ``max_bytes`` or ``max_side``),
            ``invalid_driving_video`` (422: empty, not a video, no decodable frame, too small).
    """
    import av

    if len(data) > limits.max_bytes:
        raise InvalidInput(
            f"driving_video is larger than {limits.max_bytes} bytes",
            code="driving_video_too_large",
            status_code=413,
        )
    if not data:
        raise InvalidInput("driving_video file is empty", code="invalid_driving_video")
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise InvalidInput("driving_video has no video stream", code="invalid_driving_video")
            stream = container.streams.video[0]
            context = stream.codec_context
            if context.width and context.height:
                _check_frame_size(context.width, context.height, limits)
            width, height = _first_frame_size(container, stream, limits)
            rate = stream.average_rate or stream.guessed_rate
            duration = (
                float(stream.duration * stream.time_base)
                if stream.duration and stream.time_base
                else (container.duration / 1_000_000 if container.duration else None)
            )
            return VideoProbe(width, height, float(rate) if rate else None, duration, context.name)
    except InvalidInput:
        raise
    except (av.error.FFmpegError, ValueError, OSError, EOFError) as exc:
        raise InvalidInput(
            f"driving_video could not be decoded: {_clean(exc)}", code="invalid_driving_video"
        ) from None


def _first_frame_size(container: Any, stream: Any, limits: VideoLimits) -> tuple[int, int]:
    for count, packet in enumerate(container.demux(stream)):
        if count >= limits.max_packets_to_first_frame:
            break
        for frame in packet.decode():
            _check_frame_size(frame.width, frame.height, limits)
            return int(frame.width), int(frame.height)
    raise InvalidInput("driving_video has no decodable frame", code="invalid_driving_video")


def _check_frame_size(width: int, height: int, limits: VideoLimits) -> None:
    if max(width, height) > limits.max_side:
        raise InvalidInput(
            f"driving_video is {width}x{height}; each side must be at most {limits.max_side} pixels",
            code="driving_video_too_large",
            status_code=413,
        )
    if min(width, height) < limits.min_side:
        raise InvalidInput(
            f"driving_video is {width}x{height}; each side must be at least {limits.min_side} pixels",
            code="invalid_driving_video",
        )


def frames_at_rate(data: bytes, fps: float, max_frames: int) -> Iterator[npt.NDArray[np.uint8]]:
    """A video's frames as shown at ``fps``, uint8 RGB ``(H, W, 3)``, at most ``max_frames``.

    Output frame ``i`` is the source frame on screen at ``i / fps`` (frames are held, or skipped,
    by their timestamps); when the video ends before ``max_frames``, its last frame comes once and
    the iteration stops, so a shorter video gives fewer frames. Only the frames used are converted.

    Raises:
        ValueError: the bytes are not a decodable video.
    """
    import av

    count = 0
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = container.streams.video[0]
            pending: npt.NDArray[np.uint8] | None = None  # the latest decoded frame not yet shown
            for frame in container.decode(stream):
                time = float(frame.time) if frame.time is not None else count / fps
                # every output frame whose time falls before this source frame shows the one before
                while pending is not None and count < max_frames and count / fps < time:
                    count += 1
                    yield pending
                if count >= max_frames:
                    return
                pending = np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)
            if pending is not None and count < max_frames:  # the last frame shows until the end
                yield pending
    except (av.error.FFmpegError, IndexError) as error:
        raise ValueError(f"cannot decode the driving video: {error}") from error
