"""Media I/O with Pillow and PyAV: decode and check uploads, encode chunk segments, assemble the MP4."""

from __future__ import annotations

import io
import itertools
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from core.errors import InvalidInput

FEATURE_SAMPLE_RATE = 16_000
IMAGE_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
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
    """Format (``PNG``/``JPEG``/``WEBP``), width and height, read from the header only.

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
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidInput(f"image could not be read: {exc}", code="invalid_image") from None
    if fmt not in IMAGE_FORMATS:
        raise InvalidInput(
            f"image format {fmt or 'unknown'} is not PNG, JPEG or WebP", code="unsupported_image_format"
        )
    if width * height > limits.max_pixels:
        raise InvalidInput(
            f"image has {width}x{height} pixels, more than {limits.max_pixels}",
            code="image_too_large",
            status_code=413,
        )
    if min(width, height) < limits.min_side:
        raise InvalidInput(
            f"image is {width}x{height}; each side must be at least {limits.min_side} pixels",
            code="image_too_small",
        )
    return fmt, width, height


def decode_image(data: bytes, limits: ImageLimits | None = None) -> npt.NDArray[np.uint8]:
    """RGB uint8 ``(H, W, 3)``, rotated as its EXIF orientation says. Checks ``limits`` first."""
    from PIL import Image, ImageOps

    check_image(data, limits or ImageLimits())
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            upright = ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt pixel data
        raise InvalidInput(f"image could not be decoded: {exc}", code="invalid_image") from None
    return np.asarray(upright, dtype=np.uint8).copy()


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
        raise InvalidInput(f"audio could not be decoded: {exc}", code="invalid_audio") from None
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


# --- video


def encode_segment(frames: npt.NDArray[np.uint8], fps: float, crf: int = 18) -> bytes:
    """H.264 (libx264, yuv420p, no B-frames so segments remux without reordering) MP4 of ``(F, H, W, 3)``."""
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
        stream.options = {"crf": str(crf), "preset": "veryfast", "bf": "0", "threads": "2"}
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
