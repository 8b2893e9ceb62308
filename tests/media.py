"""Builds small real media files for tests (PNG/JPEG/WebP images, speech-like audio in many formats)."""

from __future__ import annotations

import io
import struct
import wave
import zlib

import numpy as np


def image_bytes(width: int = 256, height: int = 256, fmt: str = "PNG", seed: int = 0) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 // max(1, width - 1), yy * 255 // max(1, height - 1), (xx + yy) % 256], -1)
    noisy = np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, format=fmt)
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` (its pixel data is a few bytes)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload)
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def tone_samples(seconds: float, sample_rate: int = 16_000, seed: int = 0) -> np.ndarray:
    """Speech-like test signal: a pitched tone whose loudness goes up and down like syllables."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 3.0 * t)) * (t % 1.0 < 0.7)
    rng = np.random.default_rng(seed)
    signal = envelope * (0.4 * np.sin(2 * np.pi * 180 * t) + 0.05 * rng.standard_normal(len(t)))
    return signal.astype(np.float32)


def wav_bytes(seconds: float = 1.0, sample_rate: int = 16_000, channels: int = 1) -> bytes:
    samples = (tone_samples(seconds, sample_rate) * 32767).astype(np.int16)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(np.repeat(samples[:, None], channels, axis=1).tobytes())
    return buffer.getvalue()


def encoded_audio(seconds: float, container: str, codec: str, sample_rate: int = 48_000) -> bytes:
    """The test signal encoded with PyAV, e.g. ("mp3", "libmp3lame"), ("ipod", "aac"), ("ogg", "libopus")."""
    import av

    samples = tone_samples(seconds, sample_rate)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=sample_rate, layout="mono")
        frame_size = stream.codec_context.frame_size or 1024
        pts = 0
        for start in range(0, len(samples), frame_size):
            block = samples[start : start + frame_size]
            if len(block) < frame_size and codec in ("libopus",):
                block = np.pad(block, (0, frame_size - len(block)))
            fmt = "s16" if codec in ("flac",) else "flt" if codec != "aac" and codec != "libopus" else "fltp"
            data = (block * 32767).astype(np.int16) if fmt == "s16" else block
            frame = av.AudioFrame.from_ndarray(data[None, :], format=fmt, layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = pts
            pts += len(block)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()
