"""The LivePortrait networks: shapes, determinism, dtype, config validation (tiny config, CPU)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from models.liveportrait.checkpoint import LivePortraitModules, build_modules
from models.liveportrait.configs import LivePortraitConfig, liveportrait_config, tiny_config
from models.liveportrait.keypoints import (
    bins_to_degrees,
    matrix_to_degrees,
    place_keypoints,
    refine,
    rotation_matrix,
)
from models.liveportrait.testing import tiny_modules


@pytest.fixture(scope="module")
def modules() -> LivePortraitModules:
    return tiny_modules(seed=0)


def test_shapes_through_the_chain(modules: LivePortraitModules) -> None:
    config = modules.config
    size = config.input_size
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    volume = modules.appearance_feature_extractor(images)
    assert volume.shape == (
        2,
        config.appearance.reshape_channel,
        config.appearance.reshape_depth,
        size // 4,
        size // 4,
    )
    motion = modules.motion_extractor(images)
    assert motion.kp.shape == motion.exp.shape == (2, 3 * config.num_kp)
    assert motion.pitch.shape == (2, config.motion.num_bins) and motion.t.shape == (2, 3)
    assert motion.scale.shape == (2, 1)
    info = refine(motion, config.num_kp)
    kp = place_keypoints(
        info["kp"],
        rotation_matrix(info["pitch"], info["yaw"], info["roll"]),
        info["exp"],
        info["scale"],
        info["t"],
    )
    warped = modules.warping_module(volume, kp + 0.01, kp)
    assert warped.shape == (2, config.warping.block_expansion * 4, size // 4, size // 4)
    image = modules.spade_generator(warped)
    assert image.shape == (2, 3, config.output_size, config.output_size)
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert modules.stitching(torch.zeros(3, 126)).shape == (3, 65)
    assert modules.retarget_lip(torch.zeros(3, 65)).shape == (3, 63)
    assert modules.retarget_eye(torch.zeros(3, 66)).shape == (3, 63)


def test_same_seed_same_weights_and_outputs() -> None:
    a, b = tiny_modules(seed=3), tiny_modules(seed=3)
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.appearance_feature_extractor(images), b.appearance_feature_extractor(images))
    assert torch.equal(a.motion_extractor(images).exp, b.motion_extractor(images).exp)
    assert not torch.equal(tiny_modules(seed=4).motion_extractor(images).exp, a.motion_extractor(images).exp)


def test_batch_of_frames_equals_frame_by_frame(modules: LivePortraitModules) -> None:
    generator = torch.Generator().manual_seed(2)
    volume = modules.appearance_feature_extractor(torch.rand(1, 3, 64, 64, generator=generator))
    kp_source = torch.rand(1, 21, 3, generator=generator) - 0.5
    kp_driving = kp_source + 0.05 * torch.randn(3, 21, 3, generator=generator)
    batched = modules.warping_module(
        volume.expand(3, -1, -1, -1, -1), kp_driving, kp_source.expand(3, -1, -1)
    )
    single = torch.cat([modules.warping_module(volume, kp_driving[i : i + 1], kp_source) for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-6)


def test_dtype_follows_the_weights() -> None:
    # bf16/fp16 run on CUDA (CPU lacks bf16 avg_pool3d); float64 shows nothing is pinned to fp32.
    wide = tiny_modules(seed=0, dtype=torch.float64)
    images = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    kp = torch.zeros(1, 21, 3, dtype=torch.float64)
    out = wide.spade_generator(wide.warping_module(wide.appearance_feature_extractor(images), kp, kp))
    assert out.dtype == torch.float64 and torch.isfinite(out).all()


def test_rotation_round_trip_and_bins() -> None:
    pitch, yaw, roll = (
        torch.tensor([[10.0], [-20.0]]),
        torch.tensor([[5.0], [30.0]]),
        torch.tensor([[-7.0], [2.0]]),
    )
    back = matrix_to_degrees(rotation_matrix(pitch, yaw, roll))
    for got, want in zip(back, (pitch, yaw, roll), strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    assert torch.allclose(rotation_matrix(*torch.zeros(3, 1, 1)), torch.eye(3)[None])
    logits = torch.full((1, 66), -1e4)
    logits[0, 40] = 0.0
    assert float(bins_to_degrees(logits)) == pytest.approx(40 * 3 - 97.5)


def test_full_size_structure_is_constructible_on_meta() -> None:
    modules = build_modules(liveportrait_config(), device="meta")
    counts = {name: sum(p.numel() for p in module.parameters()) for name, module in modules.items()}
    assert counts["appearance_feature_extractor"] == 836_224
    assert counts["spade_generator"] == 55_365_388
    assert modules.config.output_size == 512


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: dataclasses.replace(c, appearance=dataclasses.replace(c.appearance, max_features=30)),
            "max_features",
        ),
        (lambda c: dataclasses.replace(c, spade=dataclasses.replace(c.spade, max_features=8)), "SPADE"),
        (lambda c: dataclasses.replace(c, input_size=48), "input_size"),
    ],
)
def test_config_validation_names_the_mismatch(change: object, message: str) -> None:
    config: LivePortraitConfig = change(tiny_config())  # type: ignore[operator]
    with pytest.raises(ValueError, match=message):
        build_modules(config, device="meta")


def test_config_dict_round_trip() -> None:
    for config in (tiny_config(), liveportrait_config()):
        assert LivePortraitConfig.from_dict(config.to_dict()) == config
