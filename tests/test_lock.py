"""requirements.lock agrees with pyproject.toml, pins everything with hashes, and leaves torch out."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from importlib import metadata
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
PYPROJECT = ROOT / "pyproject.toml"
TORCH_PIN = "torch==2.13.0"
# One requirement: `name==version \` then `    --hash=sha256:<hex>` lines, the last without `\`.
PINNED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)\s*\\?$")
HASH = re.compile(r"^--hash=sha256:[0-9a-f]{64}\s*\\?$")


def load_lockfile_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("parla_lockfile", ROOT / "deploy" / "lockfile.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_lock(text: str) -> dict[str, tuple[Version, list[str]]]:
    """``{canonical name: (version, hashes)}``; fails on any line that is not a pin or a hash."""
    locked: dict[str, tuple[Version, list[str]]] = {}
    current: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if pinned := PINNED.match(line):
            current = canonicalize_name(pinned.group(1))
            assert current not in locked, f"line {number}: {current} is locked twice"
            locked[current] = (Version(pinned.group(2)), [])
        elif HASH.match(line) and current is not None:
            locked[current][1].append(line.split("=", 1)[1].rstrip(" \\"))
        else:
            raise AssertionError(f"line {number} is neither a `name==version` pin nor a hash: {raw!r}")
    return locked


@pytest.fixture(scope="module")
def lock_text() -> str:
    return LOCK.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def locked(lock_text: str) -> dict[str, tuple[Version, list[str]]]:
    return parse_lock(lock_text)


def project_requirements() -> list[Requirement]:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]


def test_lock_was_made_from_the_current_pyproject(lock_text: str) -> None:
    lockfile = load_lockfile_module()
    recorded = lockfile.recorded_digest(lock_text)
    assert recorded is not None, "requirements.lock has no pyproject digest in its header: run `make lock`"
    assert recorded == lockfile.dependency_digest(PYPROJECT), (
        "pyproject.toml's dependencies changed since requirements.lock was made: run `make lock` and commit it"
    )


def test_every_line_is_a_pin_with_hashes(locked: dict[str, tuple[Version, list[str]]]) -> None:
    assert len(locked) > 50, "the lock looks truncated"
    unhashed = sorted(name for name, (_, hashes) in locked.items() if not hashes)
    assert not unhashed, f"locked without --hash: {unhashed}"


def test_every_pyproject_requirement_is_locked_within_its_range(
    locked: dict[str, tuple[Version, list[str]]],
) -> None:
    for requirement in project_requirements():
        name = canonicalize_name(requirement.name)
        if name == "torch":
            continue  # installed first, from the index that suits the machine: not in the lock
        assert name in locked, f"{requirement} is not in requirements.lock: run `make lock`"
        version = locked[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{name}=={version} breaks {requirement}"
        )


def test_the_extras_that_pyproject_asks_for_are_locked(locked: dict[str, tuple[Version, list[str]]]) -> None:
    """``uvicorn[standard]``, ``moto[server]``: the packages of those extras, read from the installed
    metadata of the locked version, are in the lock too."""
    for requirement in project_requirements():
        if not requirement.extras:
            continue
        name = canonicalize_name(requirement.name)
        assert Version(metadata.version(name)) == locked[name][0], f"the venv's {name} is not the locked one"
        for extra in requirement.extras:
            for entry in metadata.requires(name) or []:
                needed = Requirement(entry)
                if needed.marker is None or not needed.marker.evaluate({"extra": extra}):
                    continue
                if needed.marker.evaluate({"extra": ""}):
                    continue  # needed without the extra as well: already covered by the resolver
                assert canonicalize_name(needed.name) in locked, f"{requirement} needs {needed}, not locked"


def test_uv_is_locked_so_that_make_lock_can_bootstrap_it(
    locked: dict[str, tuple[Version, list[str]]],
) -> None:
    assert "uv" in locked
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "/^uv==/" in makefile, "make lock installs uv from the lock's uv entry"


def test_lock_pins_rq_3(locked: dict[str, tuple[Version, list[str]]]) -> None:
    assert locked["rq"][0] == Version("3.0.0")


def test_torch_is_pinned_in_pyproject_and_makefile_but_not_locked(
    locked: dict[str, tuple[Version, list[str]]],
) -> None:
    [torch] = [r for r in project_requirements() if canonicalize_name(r.name) == "torch"]
    assert str(torch) == TORCH_PIN
    assert "torch" not in locked
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    [torch_step] = [line for line in makefile.splitlines() if "pip" in line.lower() and "torch==" in line]
    assert TORCH_PIN in torch_step.split()
    for common in ("sympy", "networkx", "jinja2", "fsspec", "filelock", "typing-extensions"):
        assert common in locked, f"torch's dependency {common} must be locked"


def test_make_venv_installs_torch_then_the_lock_then_checks() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    rule = re.search(r"^\$\(STAMP\):(.*)\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert rule is not None, "the Makefile has no $(STAMP) rule"
    assert {"requirements.lock", "Makefile"} <= set(rule.group(1).split()), "a lock change must reinstall"
    recipe = rule.group(2).splitlines()
    torch_step = next(i for i, line in enumerate(recipe) if TORCH_PIN in line)
    lock_step = next(i for i, line in enumerate(recipe) if "-r requirements.lock" in line)
    check_step = next(i for i, line in enumerate(recipe) if re.search(r"\bcheck\b", line))
    assert torch_step < lock_step < check_step < len(recipe) - 1 and "touch $@" in recipe[-1]
    assert "--require-hashes" in recipe[lock_step] and "--no-deps" in recipe[lock_step]
    assert "TORCH_INDEX_URL" in recipe[torch_step]
    assert not re.search(r"install[^\n]*(--upgrade|-U)\b", makefile), "no unpinned upgrades (pip included)"


def test_no_cuda_only_package_is_locked(locked: dict[str, tuple[Version, list[str]]]) -> None:
    cuda = sorted(name for name in locked if name.startswith(("nvidia-", "cuda-")) or name == "triton")
    assert not cuda, f"the lock was resolved against a CUDA torch: {cuda}"


def test_the_lockfile_writer_refuses_a_cuda_resolution(tmp_path: Path) -> None:
    lockfile = load_lockfile_module()
    compiled = tmp_path / "compiled.txt"
    compiled.write_text("nvidia-cublas==13.1.1.3 \\\n    --hash=sha256:" + "0" * 64 + "\n", encoding="utf-8")
    target = tmp_path / "requirements.lock"
    target.write_text("previous\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="nvidia-cublas"):
        lockfile.write_lock(PYPROJECT, compiled, target)
    assert target.read_text(encoding="utf-8") == "previous\n"


def test_the_digest_ignores_everything_but_the_dependency_lists(tmp_path: Path) -> None:
    lockfile = load_lockfile_module()
    text = PYPROJECT.read_text(encoding="utf-8")
    assert "\ndev = [\n" in text
    other_settings = tmp_path / "settings.toml"
    other_settings.write_text(text + "\n[tool.example]\nkey = 1\n", encoding="utf-8")
    other_dev = tmp_path / "dev.toml"
    other_dev.write_text(text.replace("\ndev = [\n", '\ndev = [\n    "example>=1",\n'), encoding="utf-8")
    assert lockfile.dependency_digest(other_settings) == lockfile.dependency_digest(PYPROJECT)
    assert lockfile.dependency_digest(other_dev) != lockfile.dependency_digest(PYPROJECT)


def test_the_parser_rejects_unpinned_lines() -> None:
    with pytest.raises(AssertionError, match="neither"):
        parse_lock("rq>=3 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    assert parse_lock("rq==3.0.0\n") == {"rq": (Version("3.0.0"), [])}
