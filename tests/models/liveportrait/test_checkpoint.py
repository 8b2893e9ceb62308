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
    PUBLISHED_FILES,
    RETARGETING_FILE,
    LivePortraitModules,
    build_modules,
    convert_to_safetensors,
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
