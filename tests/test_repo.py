"""What the repository holds: no virtual environment, build output or local state is committed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOCAL_ONLY = (".venv", "out/", "var/", ".pytest_cache/", ".mypy_cache/", ".ruff_cache/")


def test_no_virtual_environment_or_local_state_is_tracked() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.splitlines()
    # A .venv symlink (a worktree sharing another checkout's environment) is a file to git: once
    # committed, merging it replaces the real environment of the checkout it is merged into.
    assert [path for path in tracked if path == ".venv" or path.startswith(LOCAL_ONLY)] == []
