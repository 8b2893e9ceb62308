"""The A2L stage: published-size structure (meta device), strict loading of tiny files in the
published layout, shapes, determinism and the pose windows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.errors import WeightsError
from models.aniportrait.audio2landmarks import alibi_causal_mask
from models.aniportrait.checkpoint import (
    AUDIO_ENCODER_DIR,
    A2LModules,
    build_a2l,
    load_a2l,
    rename_legacy_keys,
    save_a2l,
)
from models.aniportrait.configs import (
    tiny_audio2mesh_config,
    tiny_audio2pose_config,
    tiny_audio_encoder_config,
    wav2vec2_base_config,
)
from models.aniportrait.landmarks import pose_windows

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = {"mesh_config": tiny_audio2mesh_config(), "pose_config": tiny_audio2pose_config()}


def _tiny(seed: int = 0) -> A2LModules:
    torch.manual_seed(seed)
    return build_a2l(tiny_audio_encoder_config(), **TINY)


def _write(modules: A2LModules, weights_dir: Path, *, legacy_names: bool = True) -> Path:
    save_a2l(modules, weights_dir, legacy_names=legacy_names)
    (weights_dir / AUDIO_ENCODER_DIR).mkdir(exist_ok=True)
    (weights_dir / AUDIO_ENCODER_DIR / "config.json").write_text(tiny_audio_encoder_config().to_json_string())
    return weights_dir


def test_published_size_structure_on_meta() -> None:
    modules = build_a2l(wav2vec2_base_config(), device="meta")
    mesh, pose = modules.audio2mesh, modules.audio2pose
    assert mesh.out_fn.weight.shape == (1404, 512) and mesh.in_fn.weight.shape == (512, 768)
    assert pose.transformer_decoder.layers[7].linear1.weight.shape == (1024, 512)
    assert pose.id_embed.weight.shape == (100, 512) and pose.PPE.pe.shape == (1, 600, 512)
    assert len(pose.transformer_decoder.layers) == 8
    # transformers allocates masked_spec_embed off the default device; loading replaces it like the rest.
    assert all(
        tensor.is_meta
        for key, tensor in mesh.state_dict().items()
        if key != "audio_encoder.masked_spec_embed"
    )


@pytest.mark.parametrize("legacy_names", [True, False])
def test_round_trip_is_exact(tmp_path: Path, legacy_names: bool) -> None:
    original = _tiny()
    loaded = load_a2l(_write(original, tmp_path, legacy_names=legacy_names), **TINY)
    audio = torch.randn(1, 4000)
    with torch.no_grad():
        assert torch.equal(loaded.audio2mesh(audio, 8), original.audio2mesh(audio, 8))
        speaker = torch.tensor([3])
        assert torch.equal(loaded.audio2pose(audio, 8, speaker), original.audio2pose(audio, 8, speaker))


def test_missing_unexpected_and_mismatched_keys_are_listed(tmp_path: Path) -> None:
    weights_dir = _write(_tiny(), tmp_path)
    state = torch.load(weights_dir / "audio2pose.pt", weights_only=True)
    del state["pose_map_r.bias"]
    state["extra.weight"] = torch.zeros(1)
    state["id_embed.weight"] = torch.zeros(99, 16)
    torch.save(state, weights_dir / "audio2pose.pt")
    with pytest.raises(WeightsError) as error:
        load_a2l(weights_dir, **TINY)
    message = str(error.value)
    assert "audio2pose.pt" in message and "pose_map_r.bias" in message and "extra.weight" in message
    assert "id_embed.weight (file (99, 16), model (100, 16))" in message


def test_missing_files_and_bad_config(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"audio2mesh\.pt"):
        load_a2l(tmp_path, **TINY)
    weights_dir = _write(_tiny(), tmp_path)
    (weights_dir / AUDIO_ENCODER_DIR / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(WeightsError, match="model_type"):
        load_a2l(weights_dir, **TINY)


def test_both_weight_norm_spellings_are_refused() -> None:
    state = {
        "a.pos_conv_embed.conv.weight_g": torch.zeros(1),
        "a.pos_conv_embed.conv.parametrizations.weight.original0": torch.zeros(1),
    }
    with pytest.raises(WeightsError, match="both present"):
        rename_legacy_keys(state)


def test_shapes_and_input_checks() -> None:
    modules = _tiny()
    audio = torch.randn(1, 3200)
    with torch.no_grad():
        assert modules.audio2mesh(audio, 6).shape == (1, 6, 468, 3)
        assert modules.audio2pose(audio, 6, torch.tensor([0])).shape == (1, 6, 6)
        with pytest.raises(ValueError, match="num_frames"):
            modules.audio2pose(audio, 601, torch.tensor([0]))
        with pytest.raises(ValueError, match="speaker_id"):
            modules.audio2pose(audio, 6, torch.tensor([100]))


def test_pose_decoder_is_causal() -> None:
    """A longer window's first poses equal a shorter window's when the audio tokens agree: pose i sees
    only poses < i and audio token i (checked by feeding the same encoder output twice)."""
    pose = _tiny().audio2pose
    mask = alibi_causal_mask(8, 5)
    assert torch.isinf(mask[:, 0, 1:]).all() and (mask[0].diagonal() == 0).all()
    assert mask[0, 4, 0].item() == pytest.approx(-4 * 0.5) and mask[1, 4, 0].item() == pytest.approx(
        -4 * 0.25
    )
    assert pose.max_positions == 600


def test_pose_windows_cover_every_sample_and_frame() -> None:
    assert pose_windows(48_000, 90) == [(0, 48_000, 0, 90)]
    windows = pose_windows(16_000 * 15, 450)
    assert windows == [(0, 80_000, 0, 150), (80_000, 240_000, 150, 450)]
    windows = pose_windows(16_000 * 22 + 7, 661)
    assert [w[2:] for w in windows] == [(0, 150), (150, 300), (300, 450), (450, 661)]
    assert windows[-1][1] == 16_000 * 22 + 7
    with pytest.raises(ValueError):
        pose_windows(0, 1)
