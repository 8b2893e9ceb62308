"""Media I/O with Pillow and PyAV: decode and check uploads, encode chunk segments, assemble the MP4."""

from __future__ import annotations

import io
import itertools
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
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
AAC_SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)


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


def fps_fraction(fps: float) -> Fraction:
    """Exact frame rate: 25 -> 25/1, 29.97 -> 30000/1001."""
    return Fraction(fps).limit_denominator(1001)


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


# --- output video


def encode_segment(frames: npt.NDArray[np.uint8], fps: float, qp: int = 20) -> bytes:
    """H.264 (libx264, yuv420p, no B-frames so segments remux without reordering) MP4 of ``(F, H, W, 3)``.

    Every segment starts with a keyframe, so segment joins are where a video can pulse: a keyframe
    re-codes the still background that the frames before it had carried over. Hence a constant
    quantizer (``qp``; CRF sets each keyframe's quality from the frames after it) and near-lossless
    keyframes (``ipratio=6``: qp about 4 at qp 20), so that two keyframes of the same still pixels
    decode alike. On the warp engine's sample renders the still background changes by <= 0.035 grey
    levels at a join, as much as between frames within a segment (CRF 18: 0.44-0.71), with a lower
    error than CRF 18, for about 1.7 times the bytes.
    """
    import av

    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (F, H, W, 3), got {frames.dtype} {frames.shape}")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"H.264 yuv420p needs even sides, got {width}x{height}")
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps_fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {
            "qp": str(qp),
            "x264-params": "ipratio=6.0",
            "preset": "veryfast",
            "bf": "0",
            "threads": "2",
        }
        for frame in frames:
            for packet in stream.encode(
                av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            ):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


class _AudioTrack:
    """The original upload, re-encoded as AAC into an output container."""

    def __init__(self, container: Any, audio: bytes) -> None:
        import av

        self.source = av.open(io.BytesIO(audio), mode="r")
        self.in_stream = self.source.streams.audio[0]
        rate = self.in_stream.codec_context.sample_rate or 48000
        self.rate = rate if rate in AAC_SAMPLE_RATES else 48000
        self.layout = "mono" if (self.in_stream.codec_context.channels or 1) == 1 else "stereo"
        self.container = container
        self.stream = container.add_stream("aac", rate=self.rate, layout=self.layout)
        self.stream.bit_rate = 128_000

    def mux_all(self) -> None:
        import av

        resampler = av.AudioResampler(format="fltp", layout=self.layout, rate=self.rate)
        fifo = av.AudioFifo()
        frame_size = self.stream.codec_context.frame_size or 1024

        def drain(final: bool) -> None:
            while fifo.samples >= frame_size or (final and fifo.samples > 0):
                chunk = fifo.read(min(frame_size, fifo.samples))
                for packet in self.stream.encode(chunk):
                    self.container.mux(packet)

        try:
            for frame in self.source.decode(self.in_stream):
                frame.pts = None
                for out in resampler.resample(frame):
                    fifo.write(out)
                drain(final=False)
            for out in resampler.resample(None):
                fifo.write(out)
            drain(final=True)
            for packet in self.stream.encode(None):
                self.container.mux(packet)
        finally:
            self.source.close()


def assemble_mp4(segments: Iterable[bytes], audio: bytes, fps: float, out_path: Path) -> None:
    """Remux the video segments (no re-encode) back to back, mux the original audio once as AAC.

    Writes ``out_path`` with ``+faststart`` (the index first, so players can start before the end).
    """
    import av

    rate = fps_fraction(fps)
    segment_iter = iter(segments)
    first = next(segment_iter, None)
    if first is None:
        raise ValueError("no video segments to assemble")
    fd, tmp_name = tempfile.mkstemp(suffix=".mp4", dir=out_path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as output:
            with av.open(io.BytesIO(first), mode="r") as template:
                out_stream = output.add_stream_from_template(template.streams.video[0])
            out_stream.time_base = Fraction(1, rate.numerator * 512)
            audio_track = _AudioTrack(output, audio)
            frame_offset = 0
            for segment in itertools.chain([first], segment_iter):
                with av.open(io.BytesIO(segment), mode="r") as source:
                    in_stream = source.streams.video[0]
                    in_tb, out_tb = in_stream.time_base, out_stream.time_base
                    if in_tb is None or out_tb is None:
                        raise ValueError("a video segment has no time base")
                    offset = Fraction(frame_offset) / rate
                    for packet in source.demux(in_stream):
                        if packet.dts is None or packet.pts is None:  # the demuxer's final empty packet
                            continue
                        packet.pts = round((packet.pts * in_tb + offset) / out_tb)
                        packet.dts = round((packet.dts * in_tb + offset) / out_tb)
                        packet.duration = round(packet.duration * in_tb / out_tb) if packet.duration else 0
                        packet.time_base = out_tb
                        packet.stream = out_stream
                        output.mux(packet)
                        frame_offset += 1
            audio_track.mux_all()
        tmp.replace(out_path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    fps: float
    width: int
    height: int
    duration_s: float
    video_codec: str
    audio_codec: str | None
    audio_duration_s: float | None


def probe_video(path: Path, count_frames: bool = True) -> VideoInfo:
    """Read an MP4's streams; with ``count_frames`` every video frame is decoded and counted."""
    import av

    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        fps = float(video.average_rate or video.guessed_rate or 0)
        frames = sum(1 for _ in container.decode(video)) if count_frames else int(video.frames)
        audio_duration = (
            float(audio.duration * audio.time_base) if audio and audio.duration and audio.time_base else None
        )
        return VideoInfo(
            frames=frames,
            fps=fps,
            width=video.codec_context.width,
            height=video.codec_context.height,
            duration_s=frames / fps if fps else 0.0,
            video_codec=video.codec_context.name,
            audio_codec=audio.codec_context.name if audio else None,
            audio_duration_s=audio_duration,
        )
