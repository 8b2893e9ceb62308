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
    InputLimits,
    VideoLimits,
    assemble_mp4,
    check_image,
    check_video,
    decode_audio,
    decode_image,
    encode_segment,
    frames_at_rate,
    probe_video,
)
from core.settings import Settings
from tests.media import encoded_audio, image_bytes, png_header, wav_bytes


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


# --- decoding of the less common image kinds


def saved(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_16_bit_greyscale_is_scaled_not_clipped() -> None:
    levels = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (200, 1))
    image = decode_image(saved(Image.fromarray(levels), "PNG"))
    assert image.shape == (200, 256, 3)
    row = image[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and abs(row[128] - 128) <= 1
    assert np.all(np.diff(row) >= 0) and abs(image.mean() - 127.5) < 1.0  # was ~254: nearly all white
    assert (image[..., 0] == image[..., 2]).all()


def test_mpo_camera_jpeg_is_read_as_its_first_image() -> None:
    first, second = Image.new("RGB", (200, 160), (200, 30, 30)), Image.new("RGB", (200, 160), (30, 200, 30))
    data = saved(first, "MPO", save_all=True, append_images=[second])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    assert check_image(data, ImageLimits())[0] == "JPEG"
    pixel = decode_image(data)[80, 100].astype(int)
    assert abs(pixel - [200, 30, 30]).max() < 12


def test_cmyk_jpeg_becomes_rgb() -> None:
    pixel = decode_image(saved(Image.new("CMYK", (200, 200), (0, 255, 255, 0)), "JPEG"))[100, 100]
    assert abs(pixel.astype(int) - [255, 0, 0]).max() < 12


def test_transparency_is_composited_on_white() -> None:
    indices = np.zeros((200, 200), np.uint8)
    indices[:, 100:] = 1
    palette = Image.fromarray(indices, "P")
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    decoded = decode_image(saved(palette, "PNG", transparency=0))  # index 0 (red) is transparent
    assert decoded[100, 50].tolist() == [255, 255, 255] and decoded[100, 150].tolist() == [0, 0, 255]

    assert decode_image(saved(Image.new("LA", (200, 200), (100, 0)), "PNG"))[0, 0].tolist() == [255] * 3
    assert decode_image(saved(Image.new("LA", (200, 200), (100, 255)), "PNG"))[0, 0].tolist() == [100] * 3
    half = decode_image(saved(Image.new("RGBA", (200, 200), (255, 0, 0, 128)), "PNG"))[0, 0].astype(int)
    assert half[0] == 255 and abs(half[1] - 127) <= 1 and abs(half[2] - 127) <= 1
    clear_webp = decode_image(saved(Image.new("RGBA", (200, 200), (0, 0, 0, 0)), "WEBP", lossless=True))
    assert (clear_webp == 255).all()
    keyed = decode_image(saved(Image.new("RGB", (200, 200), (1, 2, 3)), "PNG", transparency=(1, 2, 3)))
    assert (keyed == 255).all()


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    ("width", "height"),
    [(8000, 6000), (10_000, 9_500), (20_000, 10_000), (65_535, 65_535)],
    ids=["over-our-limit", "over-pillow-warning", "over-pillow-error", "largest-png"],
)
def test_huge_headers_are_image_too_large_without_decoding(width: int, height: int) -> None:
    data = png_header(width, height)  # a few dozen bytes: decoding it would fail as truncated
    assert len(data) < 100
    with pytest.raises(InvalidInput) as caught:
        decode_image(data)
    assert caught.value.code == "image_too_large" and caught.value.status_code == 413
    assert "pixels" in caught.value.message


@pytest.mark.parametrize(
    "data",
    [b"not an image at all", image_bytes(300, 300, "JPEG")[:2000], b"\x89PNG\r\n\x1a\n" + b"\x00" * 40],
    ids=["garbage", "truncated", "broken-png"],
)
def test_invalid_image_messages_do_not_leak_object_reprs(data: bytes) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_image(data)
    assert caught.value.code == "invalid_image"
    assert "BytesIO" not in caught.value.message and " at 0x" not in caught.value.message, (
        caught.value.message
    )


# --- driving videos


def small_video(width: int = 48, height: int = 32, frames: int = 5) -> bytes:
    ramp = np.linspace(0, 255, frames).astype(np.uint8)
    return encode_segment(np.broadcast_to(ramp[:, None, None, None], (frames, height, width, 3)).copy(), 25)


def test_a_decodable_video_passes_the_check() -> None:
    probe = check_video(small_video(), VideoLimits())
    assert (probe.width, probe.height, probe.codec) == (48, 32, "h264")
    assert probe.fps == 25.0 and probe.duration_s is not None and abs(probe.duration_s - 0.2) < 0.05


PLAYLIST = b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nhttp://127.0.0.1:9/segment.ts\n#EXT-X-ENDLIST\n"


@pytest.mark.parametrize(
    ("data", "limits", "code", "status"),
    [
        (b"", VideoLimits(), "invalid_driving_video", 422),
        (b"just some text, not a video", VideoLimits(), "invalid_driving_video", 422),
        (wav_bytes(1.0), VideoLimits(), "invalid_driving_video", 422),  # audio only
        (small_video()[:300], VideoLimits(), "invalid_driving_video", 422),
        (PLAYLIST, VideoLimits(), "invalid_driving_video", 422),  # never followed
        (small_video(), VideoLimits(max_bytes=1000), "driving_video_too_large", 413),
        (small_video(), VideoLimits(max_side=40), "driving_video_too_large", 413),
        (small_video(), VideoLimits(min_side=64), "invalid_driving_video", 422),
    ],
    ids=["empty", "text", "audio-only", "truncated", "playlist", "bytes", "too-wide", "too-small"],
)
def test_bad_driving_videos_have_codes(data: bytes, limits: VideoLimits, code: str, status: int) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_video(data, limits)
    assert (caught.value.code, caught.value.status_code) == (code, status), caught.value.message
    assert "<none>" not in caught.value.message and "BytesIO" not in caught.value.message


def test_input_limits_come_from_the_settings() -> None:
    settings = Settings(
        max_image_bytes=1000,
        max_image_pixels=2000,
        min_image_side=30,
        max_audio_bytes=4000,
        min_audio_seconds=0.25,
        max_audio_seconds=900.0,
        max_request_bytes=5000,
    )
    limits = InputLimits.from_settings(settings)
    assert limits.image == ImageLimits(max_bytes=1000, max_pixels=2000, min_side=30)
    assert limits.audio == AudioLimits(max_bytes=4000, min_seconds=0.25, max_seconds=900.0)
    assert limits.driving_video.max_bytes == 5000
    clip = wav_bytes(3.0)
    with pytest.raises(InvalidInput):
        decode_audio(clip, InputLimits.from_settings(Settings(max_audio_seconds=2.0)).audio)
    assert (
        decode_audio(clip, InputLimits.from_settings(Settings(max_audio_seconds=900.0)).audio).duration_s
        > 2.9
    )


def _levels_video(levels: list[int], fps: int = 10) -> bytes:
    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for level in levels:
            image = np.full((32, 32, 3), level, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("fps", "max_frames", "shown"),
    [
        (25.0, 100, [0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 4]),  # held by their timestamps; the last once
        (25.0, 4, [0, 0, 0, 1]),
        (5.0, 100, [0, 2, 4]),  # skipped
        (10.0, 100, [0, 1, 2, 3, 4]),
    ],
)
def test_frames_at_rate_shows_each_source_frame_by_its_time(
    fps: float, max_frames: int, shown: list[int]
) -> None:
    levels = [0, 60, 120, 180, 240]
    frames = list(frames_at_rate(_levels_video(levels), fps, max_frames))
    assert all(frame.dtype == np.uint8 and frame.shape == (32, 32, 3) for frame in frames)
    assert [
        int(np.argmin([abs(float(frame.mean()) - level) for level in levels])) for frame in frames
    ] == shown


def test_frames_at_rate_refuses_what_is_not_a_video() -> None:
    with pytest.raises(ValueError, match="cannot decode the driving video"):
        list(frames_at_rate(b"not a video", 25.0, 10))
