"""Loading the published LivePortrait layout strictly: full-size structure against the manifest derived
from the reference's modules, tiny random files in the published layout, errors, safetensors conversion."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from core.errors import WeightsError
from models.liveportrait.checkpoint import (
    DITTO_FILES,
    DITTO_STITCH_FILE,
    PUBLISHED_FILES,
    RETARGETING_FILE,
    LivePortraitModules,
    build_modules,
    convert_to_safetensors,
    detect_layout,
    load_converted,
    load_published,
    load_weights,
    missing_files,
    save_published,
    state_manifest,
)
from models.liveportrait.configs import tiny_config
from models.liveportrait.testing import tiny_modules
from models.sd.checkpoint import check_keys

MANIFEST = json.loads((Path(__file__).parent / "data" / "published_manifest.json").read_text())
# Our module name -> the manifest's label (file, and entry for the retargeting file).
LABELS = {
    name: file if entry is None else f"{file}[{entry}]" for name, (file, entry) in PUBLISHED_FILES.items()
}


@pytest.fixture(scope="module")
def tiny_published_once(tmp_path_factory: pytest.TempPathFactory) -> tuple[LivePortraitModules, Path]:
    modules = tiny_modules(seed=0)
    weights_dir = tmp_path_factory.mktemp("published")
    save_published(modules, weights_dir)
    return modules, weights_dir


@pytest.fixture()
def tiny_published(
    tiny_published_once: tuple[LivePortraitModules, Path], tmp_path: Path
) -> tuple[LivePortraitModules, Path]:
    modules, source = tiny_published_once
    shutil.copytree(source, tmp_path / "weights")
    return modules, tmp_path / "weights"


def _same_weights(a: LivePortraitModules, b: LivePortraitModules) -> None:
    for (name, left), (_, right) in zip(a.items(), b.items(), strict=True):
        for (key, x), (_, y) in zip(left.state_dict().items(), right.state_dict().items(), strict=True):
            assert torch.equal(x, y), f"{name}.{key}"


# --- full size, structure only ------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PUBLISHED_FILES))
def test_full_size_structure_matches_the_reference_manifest(name: str) -> None:
    ours = [[key, shape] for key, shape in state_manifest()[name].items()]
    published = [[key, shape] for key, shape, _ in MANIFEST["files"][LABELS[name]]["keys"]]
    assert ours == published  # same keys, same shapes, same order


def test_full_size_checker_accepts_the_manifest_shapes() -> None:
    modules = build_modules(device="meta")
    for name, module in modules.items():
        shapes = {key: torch.Size(shape) for key, shape, _ in MANIFEST["files"][LABELS[name]]["keys"]}
        check_keys(module, shapes, LABELS[name])
        shapes["extra.weight"] = torch.Size([1])
        first = next(iter(shapes))
        shapes[first] = torch.Size([7, 7])
        with pytest.raises(WeightsError, match=r"1 unexpected keys: extra.weight.*1 shape mismatches"):
            check_keys(module, shapes, LABELS[name])


# --- tiny files in the published layout ----------------------------------------------------------------


def test_tiny_published_layout_loads_strictly(tiny_published: tuple[LivePortraitModules, Path]) -> None:
    modules, weights_dir = tiny_published
    assert missing_files(weights_dir) == []
    raw = torch.load(weights_dir / RETARGETING_FILE, weights_only=True)
    assert set(raw) == {"retarget_shoulder", "retarget_mouth", "retarget_eye"}
    assert all(key.startswith("module.") for key in raw["retarget_eye"])
    loaded = load_published(weights_dir, config=tiny_config())
    _same_weights(modules, loaded)
    assert not any(p.requires_grad for _, m in loaded.items() for p in m.parameters())


def test_retargeting_keys_without_the_ddp_prefix_load_too(
    tiny_published: tuple[LivePortraitModules, Path],
) -> None:
    modules, weights_dir = tiny_published
    raw = torch.load(weights_dir / RETARGETING_FILE, weights_only=True)
    plain = {
        entry: {key.removeprefix("module."): v for key, v in state.items()} for entry, state in raw.items()
    }
    torch.save(plain, weights_dir / RETARGETING_FILE)
    _same_weights(modules, load_published(weights_dir, config=tiny_config()))


def test_missing_file_is_named(tiny_published: tuple[LivePortraitModules, Path]) -> None:
    _, weights_dir = tiny_published
    (weights_dir / "base_models" / "warping_module.pth").unlink()
    assert missing_files(weights_dir) == ["base_models/warping_module.pth"]
    with pytest.raises(WeightsError, match=r"lacks base_models/warping_module\.pth"):
        load_published(weights_dir, config=tiny_config())


def test_missing_and_unexpected_keys_are_listed(tiny_published: tuple[LivePortraitModules, Path]) -> None:
    _, weights_dir = tiny_published
    path = weights_dir / "base_models" / "spade_generator.pth"
    state = torch.load(path, weights_only=True)
    del state["G_middle_0.conv_0.weight_u"]
    state["G_middle_0.conv_0.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(
        WeightsError,
        match=r"1 missing keys: G_middle_0.conv_0.weight_u.*1 unexpected keys: G_middle_0.conv_0.weight",
    ):
        load_published(weights_dir, config=tiny_config())


def test_shape_mismatch_and_missing_entry(tiny_published: tuple[LivePortraitModules, Path]) -> None:
    _, weights_dir = tiny_published
    raw = torch.load(weights_dir / RETARGETING_FILE, weights_only=True)
    good = raw["retarget_mouth"]["module.mlp.0.weight"]
    raw["retarget_mouth"]["module.mlp.0.weight"] = torch.zeros(3, 3)
    torch.save(raw, weights_dir / RETARGETING_FILE)
    with pytest.raises(
        WeightsError, match=r"retarget_mouth.*mlp.0.weight \(file \(3, 3\), model \(16, 65\)\)"
    ):
        load_published(weights_dir, config=tiny_config())
    raw["retarget_mouth"]["module.mlp.0.weight"] = good
    del raw["retarget_eye"]
    torch.save(raw, weights_dir / RETARGETING_FILE)
    with pytest.raises(WeightsError, match="has no 'retarget_eye' entry"):
        load_published(weights_dir, config=tiny_config())


def test_pickled_code_is_refused(tiny_published: tuple[LivePortraitModules, Path]) -> None:
    _, weights_dir = tiny_published
    torch.save(
        {"weight": torch.zeros(1), "code": print}, weights_dir / "base_models" / "motion_extractor.pth"
    )
    with pytest.raises(WeightsError, match="plain tensor state dict"):
        load_published(weights_dir, config=tiny_config())


def test_safetensors_conversion_round_trip(
    tiny_published: tuple[LivePortraitModules, Path], tmp_path: Path
) -> None:
    modules, weights_dir = tiny_published
    out_dir = tmp_path / "converted"
    convert_to_safetensors(weights_dir, out_dir, config=tiny_config())
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["format"] == "parla-liveportrait" and set(manifest["modules"]) == set(PUBLISHED_FILES)
    converted = load_converted(out_dir)
    assert converted.config == tiny_config()
    _same_weights(modules, converted)
    _same_weights(modules, load_weights(out_dir))
    (out_dir / "manifest.json").unlink()
    with pytest.raises(WeightsError, match=r"no manifest\.json"):
        load_converted(out_dir)


# --- Ditto's file names for the same networks ----------------------------------------------------------


def test_ditto_names_map_onto_the_same_modules() -> None:
    # Ditto's modules (its core/models/modules, constructor defaults) have LivePortrait's keys and
    # shapes in the same order (checked against the manifest outside the repository, docs): the mapping
    # is by module, so the full-size structure test above covers both layouts.
    retargeting = {"retarget_lip", "retarget_eye"}  # resolved at load (not Ditto's own)
    assert set(DITTO_FILES) == set(PUBLISHED_FILES) - retargeting
    for name, (file, entry) in DITTO_FILES.items():
        assert file.startswith("ditto_pytorch/models/") and entry == PUBLISHED_FILES[name][1]


def test_ditto_layout_loads_strictly(tmp_path: Path) -> None:
    modules = tiny_modules(seed=1)
    save_published(modules, tmp_path, layout="ditto")
    assert missing_files(tmp_path, "ditto") == [] and detect_layout(tmp_path) == "ditto"
    raw = torch.load(tmp_path / DITTO_STITCH_FILE, weights_only=True)
    assert set(raw) == {"retarget_shoulder", "retarget_mouth", "retarget_eye"}
    _same_weights(modules, load_published(tmp_path, config=tiny_config(), layout="ditto"))
    _same_weights(modules, load_published(tmp_path, config=tiny_config()))  # detected


def test_ditto_layout_without_retargeting_takes_liveportraits_file(tmp_path: Path) -> None:
    modules = tiny_modules(seed=1)
    other = tiny_modules(seed=2)
    save_published(modules, tmp_path, layout="ditto", with_retargeting=False)
    assert set(torch.load(tmp_path / DITTO_STITCH_FILE, weights_only=True)) == {"retarget_shoulder"}
    with pytest.raises(WeightsError, match=r"no 'retarget_mouth'/'retarget_eye' entries.*retargeting_models"):
        load_published(tmp_path, config=tiny_config())
    save_published(other, tmp_path / "lp")
    (tmp_path / "retargeting_models").mkdir()
    shutil.copy(tmp_path / "lp" / RETARGETING_FILE, tmp_path / RETARGETING_FILE)
    loaded = load_published(tmp_path, config=tiny_config(), layout="ditto")
    for name in (
        "appearance_feature_extractor",
        "motion_extractor",
        "warping_module",
        "spade_generator",
        "stitching",
    ):
        for key, value in getattr(modules, name).state_dict().items():
            assert torch.equal(getattr(loaded, name).state_dict()[key], value), f"{name}.{key}"
    for name in ("retarget_lip", "retarget_eye"):
        for key, value in getattr(other, name).state_dict().items():
            assert torch.equal(getattr(loaded, name).state_dict()[key], value), f"{name}.{key}"


def test_ditto_layout_mismatches_are_listed(tmp_path: Path) -> None:
    save_published(tiny_modules(seed=1), tmp_path, layout="ditto")
    path = tmp_path / DITTO_FILES["warping_module"][0]
    state = torch.load(path, weights_only=True)
    first = next(iter(state))
    state[first] = torch.zeros(2, 2)
    state["extra.weight"] = torch.zeros(1)
    del state["fourth.bias"]
    torch.save(state, path)
    with pytest.raises(
        WeightsError,
        match=r"warp_network\.pth does not match WarpingNetwork: 1 missing keys: fourth.bias"
        r".*1 unexpected keys: extra.weight.*1 shape mismatches",
    ):
        load_published(tmp_path, config=tiny_config())
    raw = torch.load(tmp_path / DITTO_STITCH_FILE, weights_only=True)
    del raw["retarget_shoulder"]
    torch.save(raw, tmp_path / DITTO_STITCH_FILE)
    save_published(tiny_modules(seed=1), tmp_path / "again", layout="ditto")
    shutil.copy(tmp_path / "again" / DITTO_FILES["warping_module"][0], path)
    with pytest.raises(WeightsError, match=r"stitch_network\.pth has no 'retarget_shoulder' entry"):
        load_published(tmp_path, config=tiny_config())


def test_incomplete_layouts_name_what_each_lacks(tmp_path: Path) -> None:
    save_published(tiny_modules(seed=1), tmp_path, layout="ditto")
    (tmp_path / DITTO_FILES["spade_generator"][0]).unlink()
    with pytest.raises(
        WeightsError,
        match=r"base_models/.*LivePortrait's layout.*ditto_pytorch/models/decoder\.pth \(Ditto's",
    ):
        load_published(tmp_path, config=tiny_config())
    with pytest.raises(WeightsError, match=r"lacks ditto_pytorch/models/decoder\.pth$"):
        load_published(tmp_path, config=tiny_config(), layout="ditto")
    with pytest.raises(ValueError, match="layout must be one of"):
        load_published(tmp_path, layout="other")


def test_liveportrait_layout_wins_when_both_are_complete(tmp_path: Path) -> None:
    lp, ditto = tiny_modules(seed=1), tiny_modules(seed=2)
    save_published(lp, tmp_path)
    save_published(ditto, tmp_path, layout="ditto")
    assert detect_layout(tmp_path) == "liveportrait"
    _same_weights(lp, load_published(tmp_path, config=tiny_config()))
    _same_weights(ditto, load_published(tmp_path, config=tiny_config(), layout="ditto"))


def test_ditto_layout_converts_to_safetensors(tmp_path: Path) -> None:
    modules = tiny_modules(seed=1)
    save_published(modules, tmp_path / "ditto", layout="ditto")
    convert_to_safetensors(tmp_path / "ditto", tmp_path / "out", config=tiny_config())
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert "ditto_pytorch/models/decoder.pth" in manifest["source"]
    _same_weights(modules, load_converted(tmp_path / "out"))


def test_the_engine_accepts_a_complete_ditto_layout(tmp_path: Path) -> None:
    from models.liveportrait.engine import check_weights

    save_published(tiny_modules(seed=1), tmp_path, layout="ditto", with_retargeting=False)
    check_weights(tmp_path)  # Ditto's five files are there; the retargeting MLPs are checked at load
    (tmp_path / DITTO_FILES["motion_extractor"][0]).unlink()
    with pytest.raises(WeightsError, match="or Ditto's ditto_pytorch/models"):
        check_weights(tmp_path)
