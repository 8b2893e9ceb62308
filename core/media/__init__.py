"""Media I/O with Pillow and PyAV: ``inputs`` decodes and checks uploads, ``outputs`` encodes chunk
segments, assembles the MP4 and probes it. Both halves' public names are importable from here."""

from core.media.inputs import (
    FEATURE_SAMPLE_RATE,
    IMAGE_FORMATS,
    AudioLimits,
    DecodedAudio,
    ImageLimits,
    InputLimits,
    VideoLimits,
    VideoProbe,
    check_image,
    check_video,
    decode_audio,
    decode_image,
    frames_at_rate,
)
from core.media.outputs import VideoInfo, assemble_mp4, encode_segment, fps_fraction, probe_video

__all__ = [
    "FEATURE_SAMPLE_RATE",
    "IMAGE_FORMATS",
    "AudioLimits",
    "DecodedAudio",
    "ImageLimits",
    "InputLimits",
    "VideoInfo",
    "VideoLimits",
    "VideoProbe",
    "assemble_mp4",
    "check_image",
    "check_video",
    "decode_audio",
    "decode_image",
    "encode_segment",
    "fps_fraction",
    "frames_at_rate",
    "probe_video",
]
