"""Live previews of a job from its finished chunks: an HLS playlist, a progressive MP4, a thumbnail.

The worker stores every finished chunk as an H.264 MP4 segment (``core.storage.segment_key``)
before it records the chunk in the job's progress, so the first ``progress.chunks_done`` segments
can be served while the job still renders. Two forms, both with the speech as AAC:

- ``GET /v1/videos/{id}/stream.m3u8`` and ``/stream/{index}.ts``: an HLS ``EVENT`` playlist of the
  finished chunks, which gets ``#EXT-X-ENDLIST`` (and so plays as a VOD) once the job has ended.
  Each segment is the stored chunk remuxed (no re-encode) into MPEG-TS with its slice of the speech,
  timestamps continuing from the previous chunk: what Safari, iOS, Android, recent Chromium (its
  own player; tested), hls.js (the playground's player; tested), VLC and ffmpeg play. A
  ``<video src>`` sends no ``Authorization`` header, though, and Firefox plays HLS only through a
  player library.
- ``GET /v1/videos/{id}/preview.mp4``: the finished chunks so far as one MP4 with the speech cut to
  them. Any ``<video>`` plays it without a library or MSE: the playground's fallback (it fetches it
  again as chunks arrive).
- ``GET /v1/videos/{id}/thumbnail.jpg``: the first rendered frame.

Nothing is stored: each answer is built from one chunk (TS segment, thumbnail) or streamed through
one chunk at a time (the MP4, into a temporary file). Frame counts of segments are cached (a
stored segment never changes its length).
"""

from __future__ import annotations

import io
import math
import tempfile
import wave
from collections import OrderedDict
from fractions import Fraction
from pathlib import Path
from threading import Lock

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, Response
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from core.errors import Conflict, NotFound
from core.jobs import Job
from core.media import assemble_mp4, fps_fraction
from core.storage import Storage, job_key, segment_key
from service.deps import Services, ServicesDep, TenantDep
from service.openapi import PLAYLIST_ERRORS, PREVIEW_ERRORS, SEGMENT_ERRORS, JobId

router = APIRouter(prefix="/v1/videos", tags=["previews"])

AUDIO_RATE = 48_000
"""Sample rate of the previews' AAC track."""
TIMELINE_START = Fraction(1, 10)
"""Where the HLS timeline starts (s): past the AAC encoder's priming samples, which would otherwise
have negative timestamps in the first segment and make the muxer shift that segment alone."""
_FRAMES_CACHE_SIZE = 4096
_frames_cache: OrderedDict[tuple[str, int], int] = OrderedDict()
_frames_lock = Lock()


def segment_frames(storage: Storage, job_id: str, index: int) -> int:
    """Video frames in stored segment ``index`` of ``job_id`` (cached).

    Raises:
        NotFound: the segment is not in storage.
    """
    import av

    with _frames_lock:
        if (job_id, index) in _frames_cache:
            _frames_cache.move_to_end((job_id, index))
            return _frames_cache[(job_id, index)]
    with av.open(io.BytesIO(storage.get_bytes(segment_key(job_id, index))), mode="r") as source:
        stream = source.streams.video[0]
        frames = int(stream.frames) or sum(1 for packet in source.demux(stream) if packet.size)
    with _frames_lock:
        _frames_cache[(job_id, index)] = frames
        while len(_frames_cache) > _FRAMES_CACHE_SIZE:
            _frames_cache.popitem(last=False)
    return frames


def finished_segments(services: Services, job: Job) -> list[int]:
    """Frame counts of the job's finished segments, in order (stops at the first one not stored)."""
    counts = []
    for index in range(job.progress.chunks_done):
        try:
            counts.append(segment_frames(services.storage, job.id, index))
        except NotFound:
            break
    return counts


def hls_playlist(frame_counts: list[int], fps: float, *, ended: bool) -> str:
    """An HLS (version 3) ``EVENT`` media playlist of ``stream/{index}.ts`` segments."""
    durations = [count / fps for count in frame_counts]
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        f"#EXT-X-TARGETDURATION:{max(1, math.ceil(max(durations, default=1.0)))}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:EVENT",
        "#EXT-X-INDEPENDENT-SEGMENTS",
    ]
    for index, duration in enumerate(durations):
        lines += [f"#EXTINF:{duration:.5f},", f"stream/{index:05d}.ts"]
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def speech_samples(audio: bytes) -> npt.NDArray[np.float32]:
    """The job's speech as mono float32 at ``AUDIO_RATE`` (already checked at submit)."""
    import av

    blocks = []
    with av.open(io.BytesIO(audio), mode="r") as source:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
        for frame in source.decode(source.streams.audio[0]):
            for out in resampler.resample(frame):
                blocks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            blocks.append(out.to_ndarray().reshape(-1))
    return np.concatenate(blocks).astype(np.float32) if blocks else np.zeros(0, np.float32)


def _speech_slice(
    samples: npt.NDArray[np.float32], start_s: Fraction, end_s: Fraction
) -> npt.NDArray[np.float32]:
    start, end = round(start_s * AUDIO_RATE), round(end_s * AUDIO_RATE)
    piece = samples[start:end]
    return np.pad(piece, (0, max(0, end - start - len(piece))))  # speech shorter than the video: silence


def ts_segment(segment: bytes, speech: npt.NDArray[np.float32], start_frame: int, fps: float) -> bytes:
    """Stored MP4 chunk -> MPEG-TS with its speech slice, timed from frame ``start_frame`` of the job."""
    import av

    rate = fps_fraction(fps)
    start = Fraction(start_frame) / rate
    offset = TIMELINE_START + start
    buffer = io.BytesIO()
    with (
        av.open(buffer, mode="w", format="mpegts") as output,
        av.open(io.BytesIO(segment), mode="r") as source,
    ):
        in_stream = source.streams.video[0]
        video = output.add_stream_from_template(in_stream)
        audio = output.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        audio.bit_rate = 96_000
        in_tb = in_stream.time_base
        if in_tb is None:
            raise ValueError("the segment has no time base")
        frames = 0
        for packet in source.demux(in_stream):
            if packet.dts is None or packet.pts is None:
                continue
            packet.pts = round(packet.pts + offset / in_tb)
            packet.dts = round(packet.dts + offset / in_tb)
            packet.stream = video
            output.mux(packet)
            frames += 1
        piece = _speech_slice(speech, start, start + Fraction(frames) / rate)
        first_sample = round(offset * AUDIO_RATE)
        frame_size = audio.codec_context.frame_size or 1024
        for at in range(0, len(piece), frame_size):
            block = piece[at : at + frame_size]
            frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate, frame.pts = AUDIO_RATE, first_sample + at
            frame.time_base = Fraction(1, AUDIO_RATE)
            for out in audio.encode(frame):
                output.mux(out)
        for out in audio.encode(None):
            output.mux(out)
    return buffer.getvalue()


def _wav(samples: npt.NDArray[np.float32]) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(AUDIO_RATE)
        writer.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def _job_with_segments(services: Services, job_id: str, tenant: str) -> tuple[Job, list[int]]:
    job = services.jobs.get(job_id, tenant)
    counts = finished_segments(services, job)
    if not counts:
        raise Conflict(
            f"no chunk of {job_id!r} is rendered yet (status {job.status.value})", code="preview_not_ready"
        )
    return job, counts


@router.get(
    "/{job_id}/stream.m3u8",
    responses={**PLAYLIST_ERRORS, 200: {"content": {"application/vnd.apple.mpegurl": {}}}},
    response_class=Response,
    summary="Live HLS playlist of the finished chunks",
)
def get_stream_playlist(job_id: JobId, services: ServicesDep, tenant: TenantDep) -> Response:
    job = services.jobs.get(job_id, tenant)
    playlist = hls_playlist(finished_segments(services, job), job.params.fps, ended=job.status.is_terminal())
    return Response(
        playlist, media_type="application/vnd.apple.mpegurl", headers={"Cache-Control": "no-cache"}
    )


@router.get(
    "/{job_id}/stream/{index}.ts",
    responses={**SEGMENT_ERRORS, 200: {"content": {"video/mp2t": {}}}},
    response_class=Response,
    summary="One HLS segment: a finished chunk with its speech, as MPEG-TS",
)
def get_stream_segment(job_id: JobId, index: int, services: ServicesDep, tenant: TenantDep) -> Response:
    job = services.jobs.get(job_id, tenant)
    counts = finished_segments(services, job)
    if not 0 <= index < len(counts):
        raise NotFound(f"segment {index} of {job_id!r} is not rendered", code="segment_not_found")
    speech = speech_samples(services.storage.get_bytes(job_key(job_id, "inputs", "audio")))
    segment = services.storage.get_bytes(segment_key(job_id, index))
    body = ts_segment(segment, speech, sum(counts[:index]), job.params.fps)
    return Response(body, media_type="video/mp2t", headers={"Cache-Control": "max-age=3600"})


@router.get(
    "/{job_id}/preview.mp4",
    responses={**PREVIEW_ERRORS, 200: {"content": {"video/mp4": {}}}},
    response_class=Response,
    summary="The finished chunks so far as one MP4 with the speech",
)
def get_preview(job_id: JobId, services: ServicesDep, tenant: TenantDep) -> Response:
    job, counts = _job_with_segments(services, job_id, tenant)
    fps = job.params.fps
    speech = speech_samples(services.storage.get_bytes(job_key(job_id, "inputs", "audio")))
    cut = _speech_slice(speech, Fraction(0), Fraction(sum(counts)) / fps_fraction(fps))
    workdir = tempfile.TemporaryDirectory(prefix="parla-preview-")
    path = Path(workdir.name) / "preview.mp4"
    try:
        segments = (services.storage.get_bytes(segment_key(job_id, index)) for index in range(len(counts)))
        assemble_mp4(segments, _wav(cut), fps, path)
    except BaseException:
        workdir.cleanup()
        raise
    return FileResponse(
        path,
        media_type="video/mp4",
        headers={"Cache-Control": "no-cache", "X-Parla-Chunks": f"{len(counts)}/{job.progress.chunks_total}"},
        background=BackgroundTask(workdir.cleanup),
    )


@router.get(
    "/{job_id}/thumbnail.jpg",
    responses={**PREVIEW_ERRORS, 200: {"content": {"image/jpeg": {}}}},
    response_class=Response,
    summary="The first rendered frame, as JPEG",
)
def get_thumbnail(job_id: JobId, services: ServicesDep, tenant: TenantDep) -> Response:
    import av

    _job_with_segments(services, job_id, tenant)
    with av.open(io.BytesIO(services.storage.get_bytes(segment_key(job_id, 0))), mode="r") as source:
        frame = next(source.decode(source.streams.video[0]))
        pixels = frame.to_ndarray(format="rgb24")
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=88)
    return Response(buffer.getvalue(), media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})
