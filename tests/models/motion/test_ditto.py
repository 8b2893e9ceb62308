"""Ditto's LMDM: full-size structure, strict loading of the published layout, the window sampler."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import WeightsError
from models.engine import ChunkCarry
from models.motion.ditto import (
    CFG_PATH,
    LMDM_PATH,
    DittoSampler,
    DittoSampling,
    DittoState,
    bins_to_degrees,
    condition_rows,
    emotion_probs,
    load_ditto,
    motion_to_kp_info,
    read_ditto_cfg,
    source_motion_vector,
)
from models.motion.ditto_model import DITTO_V04, DittoDenoiser, tiny_ditto_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_full_size_structure_on_meta() -> None:
    with torch.device("meta"):
        model = DittoDenoiser(DITTO_V04)
    state = model.state_dict()
    assert len(state) == 249  # as the reference's MotionDecoder(265, 80, 512, 1024, 8, 8, cond 1103)
    assert DITTO_V04.cond_dim == 1103
    assert state["cond_projection.weight"].shape == (512, 1103)
    assert state["input_projection.weight"].shape == (512, 530)
    assert state["null_cond_embed"].shape == (1, 80, 512)
    assert state["seqTransDecoder.stack.7.film3.block.1.weight"].shape == (1024, 512)
    assert state["cond_encoder.1.rotary.freqs"].shape == (256,)
    assert sum(p.numel() for p in model.parameters()) == 47_788_297


def test_loads_published_layout_and_reads_sampling_defaults(ditto_dir: Path) -> None:
    model, sampling = load_ditto(ditto_dir, tiny_ditto_config())
    assert sampling == DittoSampling(steps=4, overlap=4, smoothing=3)
    assert all(p.device.type == "cpu" for p in model.parameters())
    config, _ = read_ditto_cfg(ditto_dir / CFG_PATH)
    assert config.cond_dim == tiny_ditto_config().cond_dim and config.seq_frames == 16


def test_mismatched_keys_are_listed(ditto_dir: Path, tmp_path: Path) -> None:
    state = torch.load(ditto_dir / LMDM_PATH, weights_only=True)["model_state_dict"]
    state.pop("final_layer.bias")
    state["extra.weight"] = torch.zeros(1)
    state["norm_cond.weight"] = torch.zeros(7)
    (tmp_path / LMDM_PATH).parent.mkdir(parents=True)
    torch.save({"model_state_dict": state}, tmp_path / LMDM_PATH)
    with pytest.raises(WeightsError) as error:
        load_ditto(tmp_path, tiny_ditto_config())
    message = str(error.value)
    assert (
        "final_layer.bias" in message
        and "extra.weight" in message
        and "norm_cond.weight (file (7,)" in message
    )


def test_missing_files_and_unsafe_config(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="lacks"):
        load_ditto(tmp_path)

    class Code:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("pickled code ran",))

    (tmp_path / CFG_PATH).parent.mkdir(parents=True)
    (tmp_path / CFG_PATH).write_bytes(pickle.dumps({"audio2motion_cfg": {}, "x": Code()}))
    with pytest.raises(WeightsError, match=r"refusing to load global builtins\.print"):
        read_ditto_cfg(tmp_path / CFG_PATH)


def _sampler(ditto_dir: Path) -> DittoSampler:
    return DittoSampler(*load_ditto(ditto_dir, tiny_ditto_config()))


def _cond(frames: int, dim: int) -> np.ndarray:
    return np.random.RandomState(3).randn(frames, dim).astype(np.float32)


def test_deterministic_and_seeded(ditto_dir: Path) -> None:
    sampler = _sampler(ditto_dir)
    cond = _cond(40, sampler.config.cond_dim)
    source = np.zeros(265, np.float32)
    a = sampler.generate(source, lambda i, j: cond[i:j], 40, seed=5)
    b = sampler.generate(source, lambda i, j: cond[i:j], 40, seed=5)
    c = sampler.generate(source, lambda i, j: cond[i:j], 40, seed=6)
    assert a.shape == (40, 265)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_windows_match_the_reference_arithmetic(ditto_dir: Path) -> None:
    # The offline reference: windows at 0, 12, 24, ... (16 frames, overlap 4) until idx >= N;
    # frames become final once no later window can touch them.
    sampler = _sampler(ditto_dir)
    cond = _cond(41, sampler.config.cond_dim)
    reads: list[tuple[int, int]] = []

    def read(i: int, j: int) -> np.ndarray:
        reads.append((i, j))
        return cond[i:j]

    state = sampler.start(np.zeros(265, np.float32), 41, seed=0)
    emitted = []
    while state.emitted < 41:
        frames, state = sampler.step(state, read)
        emitted.append(frames.shape[0])
        assert state.tail.shape[0] <= 2 * sampler.config.seq_frames  # flat memory
    assert reads == [(0, 16), (12, 28), (24, 40), (36, 41)]
    assert emitted == [11, 12, 12, 6] and sum(emitted) == 41
    with pytest.raises(ValueError, match="every window"):
        sampler.step(state, read)


def test_resume_from_carry_equals_uninterrupted(ditto_dir: Path) -> None:
    sampler = _sampler(ditto_dir)
    cond = _cond(50, sampler.config.cond_dim)
    source = np.random.RandomState(1).randn(265).astype(np.float32)
    whole = sampler.generate(source, lambda i, j: cond[i:j], 50, seed=9)
    state = sampler.start(source, 50, seed=9)
    parts = []
    while state.emitted < 50:
        state = DittoState.from_carry(ChunkCarry.from_bytes(state.to_carry().to_bytes()))
        frames, state = _sampler(ditto_dir).step(state, lambda i, j: cond[i:j])
        parts.append(frames)
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    with pytest.raises(ValueError, match="not a Ditto"):
        DittoState.from_carry(ChunkCarry(meta={"model": "joyvasa"}))


def test_bad_inputs(ditto_dir: Path) -> None:
    sampler = _sampler(ditto_dir)
    with pytest.raises(ValueError, match="num_frames"):
        sampler.start(np.zeros(265, np.float32), 0, seed=0)
    with pytest.raises(ValueError, match="source_motion"):
        sampler.start(np.zeros(10, np.float32), 10, seed=0)
    state = sampler.start(np.zeros(265, np.float32), 10, seed=0)
    with pytest.raises(ValueError, match="condition rows"):
        sampler.step(state, lambda i, j: np.zeros((j - i, 3), np.float32))
    with pytest.raises(ValueError, match="overlap"):
        DittoSampler(sampler.model, DittoSampling(overlap=16))


def test_conversions() -> None:
    logits = np.full((2, 66), -50.0, np.float32)
    logits[0, 0] = 50.0
    logits[1, 40] = 50.0
    np.testing.assert_allclose(bins_to_degrees(logits)[:, 0], [-97.5, 22.5], atol=1e-4)
    frames = np.zeros((3, 265), np.float32)
    info = motion_to_kp_info(frames)
    assert info["scale"].shape == (3, 1) and np.all(info["scale"] == 1)
    assert info["exp"].shape == (3, 21, 3) and info["t"].shape == (3, 3)
    np.testing.assert_allclose(info["yaw"], 0.0, atol=1e-4)  # uniform bins -> 0 degrees
    vec = source_motion_vector(
        {
            "scale": [1.5],
            "pitch": np.zeros(66),
            "yaw": np.zeros(66),
            "roll": np.zeros(66),
            "t": np.ones(3),
            "exp": np.ones(63),
        }
    )
    assert vec.shape == (265,) and vec[0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="lacks 'pitch'"):
        source_motion_vector({"scale": [1.0]})


def test_emotion_condition() -> None:
    probs = emotion_probs(4)
    assert probs.argmax() == 4 and probs[4] == pytest.approx(np.exp(8) / (np.exp(8) + 7))
    np.testing.assert_allclose(emotion_probs(4, strength=0.0), np.full(8, 1 / 8), rtol=1e-6)
    assert emotion_probs(3, strength=2.0)[3] > emotion_probs(3)[3]
    with pytest.raises(ValueError):
        emotion_probs(8)
    config = tiny_ditto_config()
    rows = condition_rows(
        np.zeros((5, 1024), np.float32), config, probs, np.ones(2), np.zeros(6), np.zeros(63)
    )
    assert rows.shape == (5, config.cond_dim)
    np.testing.assert_allclose(rows[:, 1024:1032], np.broadcast_to(probs, (5, 8)))
    with pytest.raises(ValueError, match="eye_open"):
        condition_rows(np.zeros((5, 1024), np.float32), config, probs, np.ones(3), np.zeros(6), np.zeros(63))
