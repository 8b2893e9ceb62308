"""Dockerfile: CUDA base, CUDA torch, non-root, no weights inside, health check, API by default."""

from __future__ import annotations

import json
import re

import pytest

from tests.deploy.deploy_files import ROOT, parla_names
from tests.deploy.settings_names import PARLA_SETTINGS

WEIGHT_PATTERN = re.compile(r"weights|\.safetensors|\.ckpt|\.pth?\b|\.bin\b|\.onnx", re.IGNORECASE)


def instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    return [(item.split(None, 1)[0].upper(), item.split(None, 1)[1]) for item in logical]


@pytest.fixture(scope="module")
def steps() -> list[tuple[str, str]]:
    return instructions()


def last_stage(steps: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [index for index, (op, _) in enumerate(steps) if op == "FROM"]
    return steps[starts[-1] :]


def test_base_is_a_cuda_runtime_image(steps: list[tuple[str, str]]) -> None:
    args = {
        value.split("=", 1)[0]: value.split("=", 1)[1] for op, value in steps if op == "ARG" and "=" in value
    }
    base = args["CUDA_IMAGE"]
    assert base.startswith("nvidia/cuda:12.") and "runtime" in base
    assert any(op == "FROM" and value.startswith("${CUDA_IMAGE}") for op, value in steps)
    assert any(op == "RUN" and "python3.11" in value for op, value in steps)


def test_torch_comes_from_the_cuda_wheel_index(steps: list[tuple[str, str]]) -> None:
    args = {
        value.split("=", 1)[0]: value.split("=", 1)[1] for op, value in steps if op == "ARG" and "=" in value
    }
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", args["TORCH_INDEX_URL"])
    [torch_install] = [value for op, value in steps if op == "RUN" and "torch==" in value]
    assert "--index-url ${TORCH_INDEX_URL}" in torch_install
    # The project's own pin must not reinstall a CPU torch from PyPI afterwards.
    assert any(op == "RUN" and "--no-deps" in value for op, value in steps)


def test_runs_as_a_non_root_user(steps: list[tuple[str, str]]) -> None:
    users = [value for op, value in last_stage(steps) if op == "USER"]
    assert users and users[-1] not in {"root", "0", "0:0"}


def test_no_weights_are_copied_into_the_image(steps: list[tuple[str, str]]) -> None:
    for op, value in steps:
        if op in {"COPY", "ADD"}:
            assert not WEIGHT_PATTERN.search(value), f"{op} {value}"
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {"weights", "**/*.safetensors", "**/*.ckpt"} <= set(ignored)
    env_text = " ".join(value for op, value in steps if op == "ENV")
    assert "PARLA_WEIGHTS_DIR=/weights" in env_text


def test_healthcheck_and_default_command(steps: list[tuple[str, str]]) -> None:
    [healthcheck] = [value for op, value in last_stage(steps) if op == "HEALTHCHECK"]
    assert "/app/healthcheck.py" in healthcheck
    probe = (ROOT / "deploy" / "healthcheck.py").read_text(encoding="utf-8")
    assert "/healthz" in probe
    [cmd] = [value for op, value in last_stage(steps) if op == "CMD"]
    assert json.loads(cmd) == ["python", "-m", "service"]
    assert any(op == "EXPOSE" and "8000" in value.split() for op, value in steps)


def test_every_parla_name_is_a_known_setting() -> None:
    used = parla_names((ROOT / "Dockerfile").read_text(encoding="utf-8"))
    used |= parla_names((ROOT / "deploy" / "healthcheck.py").read_text(encoding="utf-8"))
    assert used <= set(PARLA_SETTINGS), f"unknown settings: {sorted(used - set(PARLA_SETTINGS))}"
