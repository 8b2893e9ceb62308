"""Non-square frames: ``width`` / ``height``, the V-Express script's framing (the whole portrait resized)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from diffusers.image_processor import VaeImageProcessor
from PIL import Image
from pydantic import ValidationError

from models.engine import RenderInputs, RenderParams, make_params
from models.vexpress.engine import VExpressEngine
from models.vexpress.framing import detection_image, reference_portrait
from models.vexpress.options import VExpressOptions, VExpressTinyOptions

HEIGHT, WIDTH = 64, 96


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def portrait(height: int = 90, width: int = 70) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize(("height", "width"), [(64, 96), (96, 64), (72, 72), (512, 320)])
def test_the_portrait_is_resized_as_the_script_resizes_it(height: int, width: int) -> None:
    image = portrait()
    # inference.py: Image.open(...).convert("RGB").resize((image_height, image_width)); then the
    # pipeline's VaeImageProcessor(vae_scale_factor=8).preprocess(image, height=..., width=...)
    first = Image.fromarray(image).resize((height, width))
    scripts = VaeImageProcessor(vae_scale_factor=8, do_convert_rgb=True).preprocess(
        first, height=height, width=width
    )
    ours = reference_portrait(image, height, width)
    assert ours.shape == (height, width, 3) and ours.dtype == np.uint8
    ours_tensor = torch.from_numpy(ours).permute(2, 0, 1)[None].float() / 255.0 * 2.0 - 1.0
    assert torch.equal(ours_tensor, scripts)


def test_keypoints_are_detected_in_the_scripts_bilinear_resize() -> None:
    import cv2

    image = portrait()
    resized = detection_image(image, HEIGHT, WIDTH)
    # inference.py: cv2.resize(cv2.imread(path), (image_width, image_height)); BGR or RGB alike
    bgr = cv2.resize(image[..., ::-1].copy(), (WIDTH, HEIGHT))
    np.testing.assert_array_equal(resized, bgr[..., ::-1])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"width": 96}, "width needs height too"),
        ({"height": 96}, "height needs width too"),
        ({"width": 100, "height": 64}, "width 100 is not a multiple of 8.*would silently use 96"),
        ({"width": 64, "height": 70}, "height 70 is not a multiple of 8"),
        ({"width": 32, "height": 64}, "greater than or equal to 64"),
        ({"width": 64, "height": 2048}, "less than or equal to 1024"),
    ],
)
def test_invalid_frame_sizes_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        VExpressOptions.model_validate(options)


def test_a_valid_frame_size_resolves() -> None:
    assert VExpressOptions.model_validate({"width": 96, "height": 64}).frame_size() == (64, 96)
    assert VExpressOptions().frame_size() is None


# rendering ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine() -> VExpressEngine:
    from models.vexpress.testing import FixedKeypointAnalyzer, tiny_engine

    return tiny_engine(seed=0, face_analyzer=FixedKeypointAnalyzer())


def params(**overrides: object) -> RenderParams[VExpressOptions]:
    values: dict[str, object] = {
        "fps": 10.0,
        "seed": 7,
        "head_motion": "still",
        "context_frames": 6,
        "motion_frames": 2,
        "width": WIDTH,
        "height": HEIGHT,
    }
    values.update(overrides)
    return make_params(VExpressTinyOptions, **values)


def job_inputs(seconds: float = 1.2) -> RenderInputs:
    audio = np.random.default_rng(1).normal(0, 0.1, int(16000 * seconds)).astype(np.float32)
    return RenderInputs(image=portrait(), audio=audio)


def render_all(engine: VExpressEngine, inputs: RenderInputs, job_params: RenderParams) -> np.ndarray:
    prepared = engine.prepare(inputs, job_params)
    frames, carry = [], None
    for chunk in engine.plan(prepared):
        chunk_frames, carry = engine.render_chunk(prepared, chunk, carry)
        assert chunk_frames.shape == (chunk.num_frames, HEIGHT, WIDTH, 3)
        frames.append(chunk_frames)
    return np.concatenate(frames)


def test_the_frame_is_the_whole_portrait_in_both_framings(engine: VExpressEngine) -> None:
    for framing in ("crop", "full"):
        prepared = engine.prepare(job_inputs(0.3), params(framing=framing, size=64))
        assert (prepared.height, prepared.width, prepared.model_size) == (HEIGHT, WIDTH, (HEIGHT, WIDTH))
        assert prepared.paste_back is None
        # FixedKeypointAnalyzer places the eyes at 38 % / 62 % of the width, 42 % of the height of
        # the image it is given: the resized one
        np.testing.assert_allclose(prepared.kps_sequence[0, 0], [0.38 * WIDTH, 0.42 * HEIGHT], rtol=1e-6)


def test_chunks_equal_the_one_shot_pipeline_at_a_non_square_size(engine: VExpressEngine) -> None:
    from models.vexpress.kps import still_kps

    inputs = job_inputs(1.2)
    image = reference_portrait(inputs.image, HEIGHT, WIDTH)
    face = engine.face_analyzer.detect(detection_image(inputs.image, HEIGHT, WIDTH))[0]
    kps = still_kps(np.asarray(face.keypoints, np.float32)[:3], 12)
    for continuity in ("motion_frames", "overlap_average"):
        chunked = render_all(engine, inputs, params(continuity=continuity))
        one_shot = engine.pipeline(
            image, kps, inputs.audio, num_inference_steps=2, context_frames=6, motion_frames=2,
            continuity=continuity, generator=torch.Generator().manual_seed(7),
        )  # fmt: skip
        assert chunked.shape == (12, HEIGHT, WIDTH, 3)
        np.testing.assert_array_equal(chunked, one_shot)
