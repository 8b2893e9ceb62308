"""JoyVASA's motion generator: full-size structure, strict loading, template, the window sampler."""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import WeightsError
from models.engine import ChunkCarry
from models.motion.audio import JoyVASAHubert, load_joyvasa_hubert
from models.motion.joyvasa import (
    GENERATOR_PATH,
    HUBERT_DIR,
    TEMPLATE_PATH,
    JoyVASASampler,
    JoyVASAState,
    load_joyvasa,
    read_template,
)
from models.motion.joyvasa_model import JOYVASA_HUBERT_ZH, JoyVASAGenerator, tiny_joyvasa_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_full_size_structure_on_meta() -> None:
    with torch.device("meta"):
        model = JoyVASAGenerator(JOYVASA_HUBERT_ZH)
    state = model.state_dict()
    assert state["audio_feature_map.weight"].shape == (512, 768)
    assert state["start_motion_feat"].shape == (1, 10, 70)
    assert state["denoising_net.alignment_mask"].shape == (110, 110)
    assert state["denoising_net.transformer.layers.7.linear1.weight"].shape == (2048, 512)
    assert state["denoising_net.motion_dec.2.weight"].shape == (70, 256)
    assert state["diffusion_sched.alpha_bars"].shape == (501,)
    assert len([k for k in state if k.startswith("denoising_net.transformer.layers.0.")]) == 18


def _sampler(joyvasa_dir: Path) -> JoyVASASampler:
    model, template, hubert_state = load_joyvasa(joyvasa_dir, tiny_joyvasa_config())
    hubert = load_joyvasa_hubert(joyvasa_dir / HUBERT_DIR, hubert_state)
    return JoyVASASampler(model, template, JoyVASAHubert(hubert, 2 * model.config.n_motions))


def test_loads_published_layout(joyvasa_dir: Path) -> None:
    model, template, hubert_state = load_joyvasa(joyvasa_dir, tiny_joyvasa_config())
    assert hubert_state and all(not k.startswith("audio_encoder.") for k in hubert_state)
    assert model.diffusion_sched.alpha_bars.dtype == torch.float32
    hubert = load_joyvasa_hubert(joyvasa_dir / HUBERT_DIR, hubert_state)
    key = next(iter(hubert_state))
    torch.testing.assert_close(hubert.state_dict()[key], hubert_state[key])  # the checkpoint's HuBERT wins
    assert template.arrays["mean_exp"].shape == (63,)


def test_config_from_checkpoint_args(joyvasa_dir: Path) -> None:
    # Without an explicit config the args decide; the tiny transformer depth is not in args, so
    # the full-size default depth meets the tiny checkpoint and every extra key is listed.
    with pytest.raises(WeightsError, match=r"missing keys: denoising_net\.transformer\.layers\.2\."):
        load_joyvasa(joyvasa_dir)


def test_mismatches_and_unsafe_files(joyvasa_dir: Path, tmp_path: Path) -> None:
    data = torch.load(joyvasa_dir / GENERATOR_PATH, weights_only=False)
    data["model"]["null_audio_feat"] = torch.zeros(1, 1, 3)
    (tmp_path / GENERATOR_PATH).parent.mkdir(parents=True)
    torch.save(data, tmp_path / GENERATOR_PATH)
    (tmp_path / TEMPLATE_PATH).parent.mkdir(parents=True)
    (tmp_path / TEMPLATE_PATH).write_bytes((joyvasa_dir / TEMPLATE_PATH).read_bytes())
    with pytest.raises(WeightsError, match=r"null_audio_feat \(file \(1, 1, 3\)"):
        load_joyvasa(tmp_path, tiny_joyvasa_config())

    class Code:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("pickled code ran",))

    data["args"] = argparse.Namespace(evil=Code())
    torch.save(data, tmp_path / GENERATOR_PATH)
    with pytest.raises(WeightsError, match="cannot load"):
        load_joyvasa(tmp_path, tiny_joyvasa_config())
    (tmp_path / TEMPLATE_PATH).write_bytes(pickle.dumps({"mean_exp": Code()}))
    with pytest.raises(WeightsError, match="refusing"):
        read_template(tmp_path / TEMPLATE_PATH)
    (tmp_path / TEMPLATE_PATH).write_bytes(pickle.dumps({"mean_exp": np.zeros(63)}))
    with pytest.raises(WeightsError, match="lacks std_exp"):
        read_template(tmp_path / TEMPLATE_PATH)


def test_window_plan_matches_the_reference() -> None:
    # 8-frame windows: 1280 + 640 padding samples, clip_len = int(len / 640), ceil(clip_len / 8) windows.
    model_config = tiny_joyvasa_config()
    sampler = JoyVASASampler.__new__(JoyVASASampler)
    sampler.config, sampler.audio_unit, sampler.window_samples = model_config, 640.0, 5120
    plan = sampler.plan(16000)  # 17920 padded -> clip_len 28 -> 4 windows -> 20480 - 17920 = 2560 -> 4 frames
    assert (plan.num_windows, plan.padding_samples, plan.padding_frames, plan.num_frames) == (4, 2560, 4, 28)
    assert sampler.plan(100).num_windows == 1


def test_window_audio_is_the_padded_stream(joyvasa_dir: Path) -> None:
    sampler = _sampler(joyvasa_dir)
    audio = np.arange(1, 9001, dtype=np.float32)
    state = sampler.start(audio.size, seed=0)
    padded = np.concatenate([np.zeros(1280), audio, np.zeros(640 + 5120 * 3)]).astype(np.float32)
    for window in range(sampler.plan(audio.size).num_windows):
        state.window = window
        np.testing.assert_array_equal(
            sampler.window_audio(state, lambda a, b: audio[a:b]), padded[window * 5120 : (window + 1) * 5120]
        )


def test_resume_equals_uninterrupted_and_seeded(joyvasa_dir: Path, speech: np.ndarray) -> None:
    sampler = _sampler(joyvasa_dir)
    audio = speech[:12000]

    def run(seed: int, resume: bool) -> np.ndarray:
        state = sampler.start(audio.size, seed)
        raws = []
        while state.window < sampler.plan(audio.size).num_windows:
            if resume:
                state = JoyVASAState.from_carry(ChunkCarry.from_bytes(state.to_carry().to_bytes()))
            frames, _, state = sampler.step(state, lambda a, b: audio[a:b])
            raws.append(np.concatenate([frames["exp"], frames["scale"], frames["yaw"]], 1))
        return np.concatenate(raws)

    whole = run(3, resume=False)
    assert whole.shape[0] == sampler.plan(audio.size).num_frames
    np.testing.assert_array_equal(run(3, resume=True), whole)
    assert not np.allclose(run(4, resume=False), whole)
