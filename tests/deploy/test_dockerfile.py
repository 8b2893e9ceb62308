"""Dockerfile: CUDA base, CUDA torch, the lock, non-root, no weights inside, health check, API by default."""

from __future__ import annotations

import json
import re
import tomllib

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


def build_args(steps: list[tuple[str, str]]) -> dict[str, str]:
    return {
        value.split("=", 1)[0]: value.split("=", 1)[1] for op, value in steps if op == "ARG" and "=" in value
    }


def pip_installs(steps: list[tuple[str, str]]) -> list[str]:
    """Every ``pip install ...`` command of the RUN steps, in order."""
    commands = [part.strip() for op, value in steps if op == "RUN" for part in value.split("&&")]
    return [command for command in commands if re.match(r"(python\S* -m )?pip install\b", command)]


def test_base_is_a_cuda_runtime_image(steps: list[tuple[str, str]]) -> None:
    base = build_args(steps)["CUDA_IMAGE"]
    assert base.startswith("nvidia/cuda:12.") and "runtime" in base
    assert any(op == "FROM" and value.startswith("${CUDA_IMAGE}") for op, value in steps)
    assert any(op == "RUN" and "python3.11" in value for op, value in steps)


def test_torch_comes_from_the_cuda_wheel_index(steps: list[tuple[str, str]]) -> None:
    args = build_args(steps)
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", args["TORCH_INDEX_URL"])
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert f"torch=={args['TORCH_VERSION']}" in project["dependencies"]
    [torch_install] = [command for command in pip_installs(steps) if "torch==" in command]
    assert "--index-url ${TORCH_INDEX_URL}" in torch_install
    assert "torch==${TORCH_VERSION}" in torch_install.split()
    # The project itself is installed without dependencies: nothing may reinstall a CPU torch from PyPI.
    [project_install] = [command for command in pip_installs(steps) if command.endswith(" /src")]
    assert "--no-deps" in project_install.split()


def test_everything_else_comes_from_the_lock_with_hashes_after_torch(steps: list[tuple[str, str]]) -> None:
    installs = pip_installs(steps)
    [lock_install] = [command for command in installs if "requirements.lock" in command]
    assert {"--require-hashes", "--no-deps", "-r"} <= set(lock_install.split())
    torch_index = next(i for i, command in enumerate(installs) if "torch==" in command)
    assert torch_index < installs.index(lock_install), "torch must be installed before the lock"
    [lock_run] = [value for op, value in steps if op == "RUN" and lock_install in value]
    after = lock_run.split(lock_install, 1)[1]
    assert "pip check" in after and "torch.version.cuda" in after
    copied = [value for op, value in steps if op == "COPY"]
    assert copied.index("requirements.lock /src/requirements.lock") < copied.index(". /src")
    # No unpinned install: each pip install is the pinned torch, the lock, or the project without deps.
    for command in installs:
        assert command in {installs[torch_index], lock_install} or "--no-deps" in command.split(), command
        assert "--upgrade" not in command and " -U " not in command, command


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
