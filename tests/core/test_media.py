from __future__ import annotations

import io
import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.errors import InvalidInput
from core.media import (
    AudioLimits,
    ImageLimits,
    assemble_mp4,
    check_image,
    decode_audio,
    decode_image,
    encode_segment,
    probe_video,
)
from tests.media import encoded_audio, image_bytes, wav_bytes


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_images_of_each_format_decode_to_rgb(fmt: str) -> None:
    image = decode_image(image_bytes(200, 150, fmt))
    assert image.shape == (150, 200, 3) and image.dtype == np.uint8


def test_exif_orientation_is_applied() -> None:
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.new("RGB", (300, 200), (10, 20, 30)).save(buffer, format="JPEG", exif=exif)
    assert decode_image(buffer.getvalue()).shape == (300, 200, 3)


def test_decompression_bomb_is_refused_from_the_header() -> None:
    buffer = io.BytesIO()
    Image.new("1", (8000, 6000)).save(buffer, format="PNG")  # tiny file, 48 megapixels
    with pytest.raises(InvalidInput) as caught:
        check_image(buffer.getvalue(), ImageLimits(max_pixels=40_000_000))
    assert caught.value.code == "image_too_large" and caught.value.status_code == 413


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "invalid_image"),
        (b"not an image at all", "invalid_image"),
        (image_bytes(64, 300), "image_too_small"),
        (image_bytes(300, 300, "GIF"), "unsupported_image_format"),
    ],
)
def test_bad_images_have_codes(data: bytes, code: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_image(data)
    assert caught.value.code == code


def test_truncated_image_is_invalid() -> None:
    data = image_bytes(300, 300, "JPEG")
    with pytest.raises(InvalidInput) as caught:
        decode_image(data[: len(data) // 3])
    assert caught.value.code == "invalid_image"


@pytest.mark.parametrize(
    ("container", "codec"), [("mp3", "libmp3lame"), ("ipod", "aac"), ("ogg", "libopus"), ("flac", "flac")]
)
def test_audio_formats_decode_to_16k_mono(container: str, codec: str) -> None:
    audio = decode_audio(encoded_audio(1.5, container, codec))
    assert audio.sample_rate == 16_000 and audio.samples.dtype == np.float32
    assert abs(audio.duration_s - 1.5) < 0.05
    assert np.abs(audio.samples).max() > 0.1


def test_stereo_wav_is_mixed_to_mono() -> None:
    audio = decode_audio(wav_bytes(1.0, 44_100, channels=2))
    assert audio.samples.ndim == 1 and abs(audio.duration_s - 1.0) < 1e-3


@pytest.mark.parametrize(
    ("data", "limits", "code"),
    [
        (wav_bytes(0.2), AudioLimits(), "audio_too_short"),
        (wav_bytes(3.0), AudioLimits(max_seconds=2.0), "audio_too_long"),
        (b"RIFF\x00\x00garbage", AudioLimits(), "invalid_audio"),
        (image_bytes(), AudioLimits(), "invalid_audio"),
        (b"", AudioLimits(), "invalid_audio"),
    ],
)
def test_bad_audio_has_codes(data: bytes, limits: AudioLimits, code: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_audio(data, limits)
    assert caught.value.code == code


@pytest.mark.parametrize("fps", [25.0, 29.97])
def test_segments_remux_with_audio_into_one_mp4(tmp_path: Path, fps: float) -> None:
    audio = wav_bytes(2.0, 22_050)
    frames_total = round(2.0 * fps)
    ramp = np.linspace(0, 255, frames_total).astype(np.uint8)
    segments = [
        encode_segment(
            np.broadcast_to(ramp[i : i + 7, None, None, None], (len(ramp[i : i + 7]), 64, 96, 3)).copy(), fps
        )
        for i in range(0, frames_total, 7)
    ]
    out = tmp_path / "video.mp4"
    assemble_mp4(segments, audio, fps, out)
    info = probe_video(out)
    assert info.frames == frames_total
    assert (info.width, info.height) == (96, 64)
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    assert abs(info.fps - fps) < 1e-3
    assert abs(info.duration_s - 2.0) <= 1 / fps
    assert info.audio_duration_s is not None and abs(info.audio_duration_s - 2.0) < 0.05
    # the remux kept the frames in order: brightness rises monotonically
    import av

    with av.open(str(out)) as container:
        means = [frame.to_ndarray(format="gray").mean() for frame in container.decode(video=0)]
    assert all(b >= a - 2 for a, b in itertools.pairwise(means))
    assert means[-1] - means[0] > 200


def top_level_boxes(data: bytes) -> list[str]:
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        boxes.append(data[offset + 4 : offset + 8].decode("latin-1"))
        if size == 1:
            size = int.from_bytes(data[offset + 8 : offset + 16], "big")
        offset += size if size else len(data)
    return boxes


def test_mp4_has_the_index_before_the_media(tmp_path: Path) -> None:
    out = tmp_path / "video.mp4"
    assemble_mp4([encode_segment(np.zeros((5, 32, 32, 3), np.uint8), 25)], wav_bytes(0.5), 25, out)
    boxes = top_level_boxes(out.read_bytes())
    assert boxes.index("moov") < boxes.index("mdat"), boxes


def test_odd_frame_size_is_refused() -> None:
    with pytest.raises(ValueError, match="even"):
        encode_segment(np.zeros((2, 33, 32, 3), np.uint8), 25)
