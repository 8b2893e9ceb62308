"""Loading the published V-Express layout strictly: full-size structure (meta device) and tiny files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from core.errors import WeightsError
from models.sd.checkpoint import check_keys
from models.sd.configs import sd15_unet_config, tiny_unet_config
from models.vexpress.checkpoint import (
    CONVERTED_FORMAT_VERSION,
    PUBLISHED_FILES,
    VExpressModules,
    build_modules,
    convert_to_safetensors,
    load_converted,
    load_published,
    missing_files,
    save_published,
)
from models.vexpress.configs import tiny_audio_projection_config, tiny_guider_config

MANIFEST = json.loads((Path(__file__).parent / "data" / "checkpoint_manifest.json").read_text())
TINY = {"guider_config": tiny_guider_config(), "audio_projection_config": tiny_audio_projection_config()}


def _tiny_modules(seed: int = 0) -> VExpressModules:
    torch.manual_seed(seed)
    return build_modules(tiny_unet_config(), **TINY)


@pytest.fixture(scope="module")
def full_size_meta() -> VExpressModules:
    return build_modules(sd15_unet_config(), device="meta", dtype=torch.float16)


@pytest.fixture(scope="module")
def tiny_published_once(tmp_path_factory: pytest.TempPathFactory) -> tuple[VExpressModules, Path]:
    modules = _tiny_modules()
    weights_dir = tmp_path_factory.mktemp("published")
    save_published(modules, weights_dir, tiny_unet_config())
    return modules, weights_dir


@pytest.fixture()
def tiny_published(
    tiny_published_once: tuple[VExpressModules, Path], tmp_path: Path
) -> tuple[VExpressModules, Path]:
    """A private copy of the tiny published layout (tests edit the files)."""
    modules, source = tiny_published_once
    shutil.copytree(source, tmp_path / "weights")
    return modules, tmp_path / "weights"


def _bin(weights_dir: Path, name: str) -> Path:
    return weights_dir / "v-express" / name


# --- full size, meta device ---------------------------------------------------------------------


@pytest.mark.parametrize("file_name", list(PUBLISHED_FILES))
def test_full_size_state_dicts_equal_the_published_manifest(
    full_size_meta: VExpressModules, file_name: str
) -> None:
    entry = MANIFEST["files"][file_name]
    module = getattr(full_size_meta, PUBLISHED_FILES[file_name])
    ours = [
        (key, list(tensor.shape)) for key, tensor in module.state_dict().items() if _in_file(file_name, key)
    ]
    published = [(key, shape) for key, shape, _ in entry["keys"]]
    assert ours == published  # same keys, same shapes, same order
    assert {dtype for _, _, dtype in entry["keys"]} == {"float16"}
    assert sum(torch.Size(shape).numel() for _, shape in published) == entry["total_numel"]
    # The strict checker accepts the published shapes as they are (read without data).
    only = (lambda key: "motion_module" in key) if file_name == "motion_module.bin" else None
    check_keys(module, {key: torch.Size(shape) for key, shape in published}, file_name, only=only)


def _in_file(file_name: str, key: str) -> bool:
    return file_name != "motion_module.bin" or "motion_module" in key


def test_full_size_layout_details(full_size_meta: VExpressModules) -> None:
    unet_keys = full_size_meta.denoising_unet.state_dict().keys()
    motion = {
        key.split(".motion_modules.")[0] + ".motion_modules." + key.split(".motion_modules.")[1].split(".")[0]
        for key in unet_keys
        if ".motion_modules." in key
    }
    assert len(motion) == 21
    assert "mid_block.motion_modules.0" in motion
    assert sum(key.endswith("pos_encoder.pe") for key in unet_keys) == 42
    assert "conv_norm_out.weight" in unet_keys
    assert not any("conv_norm_out" in key for key in full_size_meta.reference_net.state_dict())


def test_full_size_strict_check_names_a_wrong_shape(full_size_meta: VExpressModules) -> None:
    shapes = {key: torch.Size(shape) for key, shape, _ in MANIFEST["files"]["audio_projection.bin"]["keys"]}
    shapes["latents"] = torch.Size([1, 8, 768])
    with pytest.raises(WeightsError, match=r"latents \(file \(1, 8, 768\), model \(1, 5, 768\)\)"):
        check_keys(full_size_meta.audio_projection, shapes, "audio_projection.bin")


# --- tiny files in the published layout ----------------------------------------------------------


def test_tiny_published_layout_loads_strictly(tiny_published: tuple[VExpressModules, Path]) -> None:
    modules, weights_dir = tiny_published
    assert missing_files(weights_dir) == []
    saved = torch.load(_bin(weights_dir, "denoising_unet.bin"), weights_only=True)
    assert {tensor.dtype for tensor in saved.values()} == {torch.float16}
    loaded = load_published(weights_dir, **TINY)
    for (name, original), (_, result) in zip(modules.items(), loaded.items(), strict=True):
        expected, actual = original.state_dict(), result.state_dict()
        assert list(actual) == list(expected), name
        for key, tensor in expected.items():
            assert actual[key].dtype == torch.float32
            assert torch.equal(actual[key], tensor.half().float()), key
        assert not any(p.is_meta for p in (*result.parameters(), *result.buffers()))
        assert not result.training


def test_loaded_modules_run(tiny_published: tuple[VExpressModules, Path]) -> None:
    _, weights_dir = tiny_published
    loaded = load_published(weights_dir, dtype=torch.bfloat16, **TINY)
    with torch.no_grad():
        bank = loaded.reference_net(
            torch.randn(1, 4, 8, 8, dtype=torch.bfloat16), 0, torch.zeros(1, 1, 32, dtype=torch.bfloat16)
        )
        audio = loaded.audio_projection(torch.randn(2, 10, 32, dtype=torch.bfloat16))
        out = loaded.denoising_unet(torch.randn(1, 4, 2, 8, 8, dtype=torch.bfloat16), 999, audio, bank)
    assert out.shape == (1, 4, 2, 8, 8) and out.dtype == torch.bfloat16


def _rewrite(path: Path, edit: Any) -> None:
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)


@pytest.mark.parametrize(
    ("file_name", "edit", "message"),
    [
        (
            "reference_net.bin",
            lambda s: s.pop("up_blocks.3.attentions.2.proj_out.bias"),
            r"1 missing keys: up_blocks\.3\.attentions\.2\.proj_out\.bias",
        ),
        (
            "reference_net.bin",
            lambda s: s.__setitem__("conv_norm_out.weight", torch.ones(32)),
            r"1 unexpected keys: conv_norm_out\.weight",
        ),
        (
            "v_kps_guider.bin",
            lambda s: s.__setitem__("conv_out.bias", torch.zeros(31)),
            r"conv_out\.bias \(file \(31,\), model \(32,\)\)",
        ),
        (
            "denoising_unet.bin",
            lambda s: s.pop(
                "mid_block.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.1.pos_encoder.pe"
            ),
            r"missing keys: mid_block\.motion_modules\.0\..*pos_encoder\.pe",
        ),
        (
            "motion_module.bin",
            lambda s: s.__setitem__("conv_in.weight", torch.zeros(32, 4, 3, 3)),
            r"motion_module\.bin does not match VExpressUNet3D: 1 unexpected keys: conv_in\.weight",
        ),
        (
            "motion_module.bin",
            lambda s: s.pop("down_blocks.0.motion_modules.1.temporal_transformer.proj_out.weight"),
            r"missing keys: down_blocks\.0\.motion_modules\.1\.temporal_transformer\.proj_out\.weight",
        ),
        (
            "audio_projection.bin",
            lambda s: s.__setitem__("extra", [1, 2]),
            r"unexpected keys: extra.*not tensors: extra",
        ),
    ],
)
def test_mismatches_raise_weights_error_naming_the_key(
    tiny_published: tuple[VExpressModules, Path], file_name: str, edit: Any, message: str
) -> None:
    _, weights_dir = tiny_published
    _rewrite(_bin(weights_dir, file_name), edit)
    with pytest.raises(WeightsError, match=message):
        load_published(weights_dir, **TINY)


def test_motion_module_file_values_win(tiny_published: tuple[VExpressModules, Path]) -> None:
    modules, weights_dir = tiny_published
    key = "up_blocks.2.motion_modules.0.temporal_transformer.proj_in.weight"
    replacement = torch.randn(modules.denoising_unet.state_dict()[key].shape).half()
    _rewrite(_bin(weights_dir, "motion_module.bin"), lambda s: s.__setitem__(key, replacement))
    loaded = load_published(weights_dir, **TINY).denoising_unet.state_dict()
    assert torch.equal(loaded[key], replacement.float())
    full = torch.load(_bin(weights_dir, "denoising_unet.bin"), weights_only=True)
    assert not torch.equal(loaded[key], full[key].float())


def test_position_tables_come_from_the_file(tiny_published: tuple[VExpressModules, Path]) -> None:
    _, weights_dir = tiny_published
    key = "down_blocks.1.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.pos_encoder.pe"
    table = torch.rand(1, 32, 64).half()
    for name in ("denoising_unet.bin", "motion_module.bin"):
        _rewrite(_bin(weights_dir, name), lambda s: s.__setitem__(key, table))
    loaded = load_published(weights_dir, **TINY).denoising_unet
    assert torch.equal(loaded.state_dict()[key], table.float())
    buffer = dict(loaded.named_buffers())[key]
    assert torch.equal(buffer, table.float())


def test_pickled_code_is_never_executed(tiny_published: tuple[VExpressModules, Path]) -> None:
    _, weights_dir = tiny_published
    torch.save({"conv_in.weight": _NotATensor()}, _bin(weights_dir, "v_kps_guider.bin"))
    with pytest.raises(WeightsError, match=r"v_kps_guider\.bin as a plain tensor state dict"):
        load_published(weights_dir, **TINY)
    assert not UNPICKLED


UNPICKLED: list[bool] = []


def _record_unpickling() -> list[bool]:
    UNPICKLED.append(True)
    return UNPICKLED


class _NotATensor:
    """Unpickling this calls a function: what a malicious checkpoint would do."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_record_unpickling, ())


def test_missing_files_are_listed(tmp_path: Path) -> None:
    (tmp_path / "v-express").mkdir()
    torch.save({}, tmp_path / "v-express" / "v_kps_guider.bin")
    missing = missing_files(tmp_path)
    assert "v-express/reference_net.bin" in missing
    assert not any(path.startswith("sd-vae") for path in missing)
    missing = missing_files(tmp_path, include_external=True)
    assert "v-express/v_kps_guider.bin" not in missing
    assert "stable-diffusion-v1-5/unet/config.json" in missing
    assert "sd-vae-ft-mse/config.json" in missing
    assert "wav2vec2-base-960h/model.safetensors|wav2vec2-base-960h/pytorch_model.bin" in missing
    with pytest.raises(WeightsError, match=r"lacks v-express/reference_net\.bin"):
        load_published(tmp_path)


def test_safetensors_round_trip_is_identical(
    tiny_published: tuple[VExpressModules, Path], tmp_path: Path
) -> None:
    _, weights_dir = tiny_published
    out_dir = tmp_path / "converted"
    convert_to_safetensors(weights_dir, out_dir, **TINY)
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["format_version"] == CONVERTED_FORMAT_VERSION
    assert manifest["modules"]["denoising_unet"]["tensors"] == len(
        _tiny_modules().denoising_unet.state_dict()
    )
    assert manifest["modules"]["v_kps_guider"]["dtypes"] == ["float16"]
    published = load_published(weights_dir, **TINY)
    converted = load_converted(out_dir)
    for (name, a), (_, b) in zip(published.items(), converted.items(), strict=True):
        sa, sb = a.state_dict(), b.state_dict()
        assert list(sa) == list(sb), name
        assert all(torch.equal(sa[key], sb[key]) for key in sa), name
        assert a.config == b.config


def test_converted_directory_is_checked(tiny_published: tuple[VExpressModules, Path], tmp_path: Path) -> None:
    _, weights_dir = tiny_published
    with pytest.raises(WeightsError, match=r"no manifest\.json"):
        load_converted(tmp_path / "nothing")
    out_dir = tmp_path / "converted"
    convert_to_safetensors(weights_dir, out_dir, **TINY)
    manifest = json.loads((out_dir / "manifest.json").read_text())
    manifest["format_version"] = 99
    (out_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match="version 99"):
        load_converted(out_dir)


def test_unet_config_comes_from_the_weights_directory(tiny_published: tuple[VExpressModules, Path]) -> None:
    _, weights_dir = tiny_published
    config_path = weights_dir / "stable-diffusion-v1-5" / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    assert config["block_out_channels"] == [32, 64, 64, 64]
    config["block_out_channels"] = [32, 64, 64, 128]
    config_path.write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="shape mismatches"):
        load_published(weights_dir, **TINY)
    load_published(weights_dir, unet_config=tiny_unet_config(), **TINY)  # an explicit config wins
