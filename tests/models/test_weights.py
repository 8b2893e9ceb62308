"""``python -m models.weights``: the layout an engine loads and what a directory lacks (names only)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from models.weights import main, missing_files, required_files
from service.stack import REPO_ROOT


def fill(root: Path, names: list[str]) -> None:
    """Empty files at the published paths (the first of each ``a or b``)."""
    for name in names:
        path = root / name.split(" or ")[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def test_layout_lists_the_vexpress_files(capsys: pytest.CaptureFixture[str]) -> None:
    files = required_files("vexpress")
    assert "stable-diffusion-v1-5/unet/config.json" in files
    assert "wav2vec2-base-960h/preprocessor_config.json" in files
    assert any(name.startswith("v-express/") for name in files)
    assert main(["layout", "vexpress"]) == 0
    assert capsys.readouterr().out.split("\n")[:-1] == files


def test_check_names_what_is_missing_and_passes_once_complete(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = required_files("vexpress")
    fill(tmp_path, files)
    assert missing_files("vexpress", tmp_path) == []
    assert main(["check", "vexpress", str(tmp_path)]) == 0
    (tmp_path / "wav2vec2-base-960h" / "preprocessor_config.json").unlink()
    assert main(["check", "vexpress", str(tmp_path)]) == 1
    out = capsys.readouterr()
    assert "missing  wav2vec2-base-960h/preprocessor_config.json" in out.out
    assert f"1 missing of {len(files)}" in out.err


def test_engines_without_weights_and_bad_directories(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert required_files("warp") == [] and main(["check", "test", str(tmp_path)]) == 0
    assert "loads no weights" in capsys.readouterr().out
    assert main(["check", "vexpress", str(tmp_path / "absent")]) == 2
    with pytest.raises(SystemExit):
        main(["check", "nope", str(tmp_path)])


@pytest.mark.slow  # a fresh interpreter imports torch and diffusers (~15 s)
def test_the_module_runs_as_a_command(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "models.weights", "check", "vexpress", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1 and "missing  v-express/" in done.stdout, done.stderr
