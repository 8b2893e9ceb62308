"""Loading Hallo's published ``net.pth`` strictly: full-size structure (meta device) and tiny files."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest
import torch

from core.errors import WeightsError
from models.hallo.checkpoint import (
    MOTION_MODULE_FILE,
    NET_FILE,
    build_modules,
    check_motion_module_file,
    convert_to_safetensors,
    key_manifest,
    load_converted,
    load_published,
    missing_files,
    save_published,
)
from models.hallo.configs import tiny_hallo_unet_config
from models.hallo.testing import tiny_modules, tiny_sizes
from models.sd.configs import sd15_unet_config

DATA = Path(__file__).parent / "data"


def test_full_size_keys_and_shapes_match_the_reference_manifest() -> None:
    """The manifest was derived from the reference's modules built on the meta device (see docs/hallo.md)."""
    with gzip.open(DATA / "net_manifest.json.gz", "rt") as handle:
        reference = json.load(handle)
    ours = key_manifest(build_modules(sd15_unet_config(), device="meta"))
    assert len(reference) == 2656
    assert [key for key in reference if key not in ours] == []
    assert [key for key in ours if key not in reference] == []
    assert {key: shape for key, shape in ours.items() if reference[key] != shape} == {}


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hallo")
    save_published(tiny_modules(seed=1), folder, tiny_hallo_unet_config(), dtype=torch.float32)
    return folder


def test_published_roundtrip_is_exact(published: Path) -> None:
    loaded = load_published(published, sizes=tiny_sizes())
    expected = tiny_modules(seed=1).state_dict()
    state = loaded.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[key], expected[key]) for key in expected)
    check_motion_module_file(published / MOTION_MODULE_FILE, loaded.denoising_unet)


def _rewrite(published: Path, tmp_path: Path, edit: str) -> Path:
    folder = tmp_path / "edited"
    (folder / NET_FILE).parent.mkdir(parents=True)
    (folder / "stable-diffusion-v1-5/unet").mkdir(parents=True)
    (folder / "stable-diffusion-v1-5/unet/config.json").write_text(
        (published / "stable-diffusion-v1-5/unet/config.json").read_text()
    )
    state = torch.load(published / NET_FILE, weights_only=True)
    if edit == "missing":
        del state["audioproj.proj1.weight"]
    elif edit == "unexpected":
        state["denoising_unet.extra.weight"] = torch.zeros(1)
    elif edit == "shape":
        state["imageproj.norm.weight"] = torch.zeros(3)
    elif edit == "orphan":
        state["net.thing"] = torch.zeros(1)
    torch.save(state, folder / NET_FILE)
    return folder


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("missing", "1 missing keys: proj1.weight"),
        ("unexpected", "1 unexpected keys: extra.weight"),
        ("shape", "1 shape mismatches: norm.weight (file (3,), model (32,))"),
        ("orphan", "keys under no module prefix"),
    ],
)
def test_mismatches_are_listed(published: Path, tmp_path: Path, edit: str, message: str) -> None:
    folder = _rewrite(published, tmp_path, edit)
    with pytest.raises(WeightsError, match=re.escape(message)):
        load_published(folder, sizes=tiny_sizes())


def test_missing_files_and_pickled_code_are_refused(tmp_path: Path) -> None:
    assert set(missing_files(tmp_path)) == {NET_FILE, "stable-diffusion-v1-5/unet/config.json"}
    with pytest.raises(WeightsError, match="lacks"):
        load_published(tmp_path)
    (tmp_path / NET_FILE).parent.mkdir(parents=True)
    torch.save({"x": object()}, tmp_path / NET_FILE)
    with pytest.raises(WeightsError, match="plain tensor state dict"):
        load_published(tmp_path, unet_config=tiny_hallo_unet_config(), sizes=tiny_sizes())


def test_motion_module_file_is_checked(published: Path, tmp_path: Path) -> None:
    modules = build_modules(tiny_hallo_unet_config(), tiny_sizes(), device="meta")
    state = torch.load(published / MOTION_MODULE_FILE, weights_only=True)
    state.pop(next(iter(state)))
    torch.save(state, tmp_path / "mm.ckpt")
    with pytest.raises(WeightsError, match="1 missing keys"):
        check_motion_module_file(tmp_path / "mm.ckpt", modules.denoising_unet)


def test_safetensors_conversion_roundtrip(published: Path, tmp_path: Path) -> None:
    out = tmp_path / "converted"
    with pytest.raises(WeightsError, match=r"manifest\.json"):
        load_converted(out)
    convert_to_safetensors(published, out, sizes=tiny_sizes())
    loaded = load_converted(out)
    expected = load_published(published, sizes=tiny_sizes()).state_dict()
    state = loaded.state_dict()
    assert all(torch.equal(state[key], expected[key]) for key in expected)
