"""What keeps memory flat and what the reference schedule does: audio2mesh windows, the reference's
"uniform" windows and sampler, and driving-video poses."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
import torch

from models.aniportrait.a2l import mesh_windows, predict_landmarks
from models.aniportrait.engine import driving_video_poses
from models.aniportrait.geometry import FaceGeometry
from models.aniportrait.landmarks import pose_matrix
from models.aniportrait.pipeline import render_clip, render_clip_reference, uniform_windows

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_mesh_windows_cover_every_frame_once() -> None:
    assert mesh_windows(100, 600, 30) == [(0, 100, 0, 100)]  # the reference's single pass
    windows = mesh_windows(1300, 600, 30)
    assert windows == [(0, 630, 0, 600), (570, 1230, 600, 1200), (1170, 1300, 1200, 1300)]
    with pytest.raises(ValueError):
        mesh_windows(10, 0, 30)


def test_windowed_audio2mesh_stays_close_to_one_pass() -> None:
    from models.aniportrait.testing import FixedGeometryAnalyzer, tiny_components

    modules = tiny_components().a2l
    mesh = FixedGeometryAnalyzer().analyze(np.zeros((8, 8, 3), np.uint8))
    assert mesh is not None
    audio = np.random.default_rng(0).normal(0, 0.1, 16000 * 4).astype(np.float32)

    def points(window: int | None) -> np.ndarray:
        return predict_landmarks(
            modules, audio, mesh.portrait_mesh(), head_motion="still", seed=0, height=256, width=256,
            mesh_window_frames=window, mesh_margin_frames=15,
        ).points  # fmt: skip

    one_pass, windowed = points(None), points(40)
    assert one_pass.shape == windowed.shape == (120, 468, 2)
    np.testing.assert_array_equal(points(120), one_pass)  # a window as long as the clip is one pass
    # context each side keeps the windowed mesh within a fraction of a pixel of the single pass
    assert np.abs(one_pass - windowed).max() < 0.5
    assert not np.array_equal(one_pass, windowed)


def test_uniform_windows_wrap_around_like_the_reference() -> None:
    assert uniform_windows(5, 8, 2) == [[0, 1, 2, 3, 4]]
    windows = uniform_windows(20, 8, 2)
    assert [w[0] for w in windows] == [0, 6, 12, 18]
    assert windows[-1] == [18, 19, 0, 1, 2, 3, 4, 5]  # closed loop
    with pytest.raises(ValueError, match="smaller"):
        uniform_windows(20, 8, 8)


def test_the_reference_sampler_is_the_one_window_render_for_a_short_clip() -> None:
    from models.aniportrait.pipeline import aniportrait_scheduler_config
    from models.aniportrait.testing import tiny_components
    from models.sd.pipeline import SDVideoPipeline

    parts = tiny_components()
    pipeline = SDVideoPipeline(
        parts.vae,
        parts.reference_net,
        parts.denoiser,
        aniportrait_scheduler_config(),
        torch.device("cpu"),
        torch.float32,
    )
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    poses = rng.integers(0, 255, (5, 64, 64, 3), dtype=np.uint8)
    tokens = torch.randn(1, 1, 32)
    kwargs = {"num_inference_steps": 2, "context_frames": 8, "context_overlap": 2}
    latents = render_clip_reference(
        pipeline,
        parts.pose_guider,
        image,
        tokens,
        poses,
        generator=torch.Generator().manual_seed(3),
        **kwargs,
    )
    frames = render_clip(
        pipeline,
        parts.pose_guider,
        image,
        tokens,
        poses,
        generator=torch.Generator().manual_seed(3),
        **kwargs,
    )
    np.testing.assert_array_equal(pipeline.decode_latents(latents), frames)
    longer = np.concatenate([poses] * 3)  # 15 frames: wrapped windows, every frame denoised
    assert render_clip_reference(pipeline, parts.pose_guider, image, tokens, longer, **kwargs).shape[2] == 15


class TurningHead:
    """A face geometry analyzer whose head turns with the frame's mean brightness (yaw = brightness / 10)."""

    def analyze(self, image: np.ndarray) -> FaceGeometry | None:
        brightness = float(image.mean())
        if brightness < 5:
            return None  # a black frame shows no face
        matrix = pose_matrix(np.array([0.0, brightness / 10, 0.0, 0.0, 0.0, -50.0]))
        return FaceGeometry(np.zeros((478, 3)), np.zeros((468, 3)), matrix)


def _video(levels: list[int], fps: int = 30) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        stream.options = {"qp": "0"}
        for level in levels:
            frame = np.full((32, 32, 3), level, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def test_driving_video_poses_are_relative_to_the_first_frame() -> None:
    levels = [100, 100, 100, 150, 150, 0, 150, 150]  # a faceless frame holds the previous pose
    poses = driving_video_poses(_video(levels), TurningHead(), lambda frame: frame, 12)
    assert poses.shape == (12, 6)
    np.testing.assert_allclose(poses[0], 0, atol=0.6)  # smoothed over 5 frames: a little of the turn leaks in
    assert 3.0 < poses[5, 1] < 5.5  # about 5 degrees of yaw (brightness 150 - 100, over 10)
    np.testing.assert_allclose(poses[:, [0, 2, 3, 4, 5]], 0, atol=1e-6)
    np.testing.assert_allclose(poses[8:12], poses[6:2:-1])  # a short video plays back and forth
    with pytest.raises(ValueError, match="no face"):
        driving_video_poses(_video([0, 0]), TurningHead(), lambda frame: frame, 4)
