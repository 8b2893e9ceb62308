"""Live previews: the HLS playlist and its MPEG-TS segments, the progressive MP4 and the thumbnail,
checked by decoding what they serve (ffmpeg's own HLS demuxer reads the playlist)."""

from __future__ import annotations

import io
from itertools import pairwise
from pathlib import Path

import av
import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient
from PIL import Image

from core.jobs import JobStatus, Progress, VideoResult
from core.jobstore import Attempt, JobStore
from core.media import encode_segment, probe_video
from core.settings import Settings
from core.storage import LocalStorage
from service.routes.previews import hls_playlist, segment_key
from tests.media import image_bytes, wav_bytes
from worker.runner import segment_key as worker_segment_key

CHUNK = 10  # frames per chunk; the job is 1.2 s at 25 fps: 30 frames, 3 chunks


def frames(index: int) -> np.ndarray:
    """Chunk ``index``: flat frames of a colour that tells the chunks apart."""
    block = np.zeros((CHUNK, 64, 64, 3), np.uint8)
    block[..., index % 3] = 200
    return block


@pytest.fixture()
def store(settings: Settings) -> JobStore:
    return JobStore(redis.Redis.from_url(settings.redis_url or ""), settings.key_prefix, settings.job_ttl_s)


def submit(client: TestClient) -> str:
    files = {"image": ("p.png", image_bytes(200, 200)), "audio": ("a.wav", wav_bytes(1.2))}
    response = client.post("/v1/videos", files=files, data={"size": "64", "fps": "25"})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def render_chunks(settings: Settings, store: JobStore, attempt: Attempt, upto: int) -> None:
    """What the worker does per chunk: store the segment, then record the progress."""
    storage = LocalStorage(settings.storage_dir)
    for index in range(upto):
        storage.put_bytes(segment_key(attempt.job.id, index), encode_segment(frames(index), 25.0))
    store.set_progress(
        attempt.job.id,
        Progress(chunks_done=upto, chunks_total=3, frames_done=upto * CHUNK, frames_total=30),
        attempt.token,
    )


def test_segment_key_is_the_workers() -> None:
    assert segment_key("vid_a", 7) == worker_segment_key("vid_a", 7)


def test_playlist_has_one_entry_per_finished_chunk_and_ends_with_the_job() -> None:
    live = hls_playlist([10, 10], 25.0, ended=False)
    assert live.splitlines()[:6] == [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        "#EXT-X-TARGETDURATION:1",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:EVENT",
        "#EXT-X-INDEPENDENT-SEGMENTS",
    ]
    assert live.count("#EXTINF:0.40000,") == 2 and "stream/00001.ts" in live and "ENDLIST" not in live
    assert hls_playlist([10, 10, 5], 25.0, ended=True).rstrip().endswith("#EXT-X-ENDLIST")


def test_previews_while_running_and_after_the_end(
    client: TestClient, settings: Settings, store: JobStore, tmp_path: Path
) -> None:
    job_id = submit(client)
    queued = client.get(f"/v1/videos/{job_id}/stream.m3u8")
    assert queued.status_code == 200 and "#EXTINF" not in queued.text and "ENDLIST" not in queued.text
    not_yet = client.get(f"/v1/videos/{job_id}/preview.mp4")
    assert not_yet.status_code == 409 and not_yet.json()["error"]["code"] == "preview_not_ready"
    assert client.get(f"/v1/videos/{job_id}/thumbnail.jpg").status_code == 409

    attempt = store.start_attempt(job_id, "test-worker")
    assert attempt is not None
    render_chunks(settings, store, attempt, 2)
    playlist = client.get(f"/v1/videos/{job_id}/stream.m3u8")
    assert playlist.headers["content-type"] == "application/vnd.apple.mpegurl"
    assert playlist.text.count("#EXTINF") == 2 and "ENDLIST" not in playlist.text
    missing = client.get(f"/v1/videos/{job_id}/stream/00002.ts")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "segment_not_found"

    second = client.get(f"/v1/videos/{job_id}/stream/00001.ts")
    assert second.status_code == 200 and second.headers["content-type"] == "video/mp2t"
    with av.open(io.BytesIO(second.content), format="mpegts") as ts:
        assert {stream.type for stream in ts.streams} == {"video", "audio"}
        video = ts.streams.video[0]
        decoded = list(ts.decode(video))
        assert (
            len(decoded) == CHUNK and decoded[0].to_ndarray(format="rgb24")[32, 32, 1] > 150
        )  # chunk 1: green
        assert float(decoded[0].time) - float(video.start_time * video.time_base) >= 0  # continues chunk 0

    preview = client.get(f"/v1/videos/{job_id}/preview.mp4")
    assert preview.status_code == 200 and preview.headers["x-parla-chunks"] == "2/3"
    (tmp_path / "preview.mp4").write_bytes(preview.content)
    info = probe_video(tmp_path / "preview.mp4")
    assert (info.frames, info.width, info.video_codec, info.audio_codec) == (20, 64, "h264", "aac")
    assert info.audio_duration_s is not None and abs(info.audio_duration_s - 0.8) < 0.1

    thumb = client.get(f"/v1/videos/{job_id}/thumbnail.jpg")
    assert thumb.headers["content-type"] == "image/jpeg"
    pixel = Image.open(io.BytesIO(thumb.content)).convert("RGB").getpixel((32, 32))
    assert isinstance(pixel, tuple) and pixel[0] > 150 and pixel[1] < 60  # chunk 0: red

    render_chunks(settings, store, attempt, 3)
    result = VideoResult(duration_s=1.2, fps=25, frames=30, width=64, height=64, bytes=1)
    assert store.finish(job_id, JobStatus.SUCCEEDED, result=result, token=attempt.token) is not None
    ended = client.get(f"/v1/videos/{job_id}/stream.m3u8").text
    assert ended.count("#EXTINF") == 3 and ended.rstrip().endswith("#EXT-X-ENDLIST")

    # The whole stream as an HLS player sees it: ffmpeg's HLS demuxer over the served files.
    (tmp_path / "hls" / "stream").mkdir(parents=True)
    (tmp_path / "hls" / "stream.m3u8").write_text(ended)
    for index in range(3):
        body = client.get(f"/v1/videos/{job_id}/stream/{index:05d}.ts").content
        (tmp_path / "hls" / "stream" / f"{index:05d}.ts").write_bytes(body)
    with av.open(str(tmp_path / "hls" / "stream.m3u8"), format="hls") as hls:
        video_frames = list(hls.decode(hls.streams.video[0]))
    assert len(video_frames) == 30
    times = [float(frame.time) for frame in video_frames]
    assert all(later > earlier for earlier, later in pairwise(times))  # one timeline
    assert abs((times[-1] - times[0]) - 29 / 25) < 1e-3
    with av.open(str(tmp_path / "hls" / "stream.m3u8"), format="hls") as hls:
        samples = sum(frame.samples for frame in hls.decode(hls.streams.audio[0]))
    assert abs(samples / 48_000 - 1.2) < 0.1


def test_previews_of_another_tenants_or_unknown_job_are_not_found(client: TestClient) -> None:
    for path in ("stream.m3u8", "stream/00000.ts", "preview.mp4", "thumbnail.jpg"):
        response = client.get(f"/v1/videos/vid_nope/{path}")
        assert response.status_code == 404 and response.json()["error"]["code"] == "job_not_found", path
