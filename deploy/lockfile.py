"""requirements.lock's header, and the guard that keeps CUDA packages out of the lock.

``make lock`` compiles the lock with uv, then runs
``python deploy/lockfile.py pyproject.toml COMPILED requirements.lock``: this checks what uv
resolved and writes it under a header that records a digest of pyproject.toml's dependency lists,
so that tests/test_lock.py can tell when pyproject.toml changed without a new lock.
Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tomllib
from pathlib import Path

DIGEST_LINE = re.compile(r"^# pyproject-dependencies-sha256: ([0-9a-f]{64})$", re.MULTILINE)
# Packages that only a CUDA torch brings. They appear when uv resolved torch from PyPI (a CUDA
# build) instead of the CPU wheel: such a lock would install gigabytes on every CPU machine.
CUDA_ONLY = re.compile(r"^(nvidia-[a-z0-9-]+|cuda-[a-z0-9-]+|triton)==", re.MULTILINE)

HEADER = """\
# Every runtime and dev dependency of pyproject.toml, pinned with hashes. Written by `make lock`
# (uv pip compile); do not edit by hand.
# Platform: Linux x86_64 (manylinux_2_28), CPython 3.11: that of CI, the image and the GPU hosts.
# torch==2.13.0 is not listed: the Makefile and the Dockerfile install it first, from the wheel index
# that suits the machine (CPU or CUDA). Its common dependencies are pinned here; a CUDA torch brings
# its own exactly pinned nvidia-* wheels.
# Install: pip install --require-hashes --no-deps -r requirements.lock
# pyproject-dependencies-sha256: {digest}
"""


def dependency_lists(pyproject: Path) -> dict[str, list[str]]:
    """The requirement lists that the lock is made from: ``dependencies`` and the ``dev`` extra."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    return {
        "dependencies": list(project["dependencies"]),
        "dev": list(project["optional-dependencies"]["dev"]),
    }


def dependency_digest(pyproject: Path) -> str:
    """SHA-256 of the dependency lists: edits elsewhere in pyproject.toml do not stale the lock."""
    canonical = json.dumps(dependency_lists(pyproject), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def recorded_digest(lock_text: str) -> str | None:
    """The digest written in a lock's header, or None when the header has none."""
    found = DIGEST_LINE.search(lock_text)
    return found.group(1) if found else None


def write_lock(pyproject: Path, compiled: Path, lock: Path) -> None:
    """Write ``compiled`` (uv's output, no header) to ``lock`` under the header.

    Raises:
        SystemExit: uv resolved CUDA-only packages; ``lock`` is left as it was.
    """
    body = compiled.read_text(encoding="utf-8")
    cuda = sorted(set(CUDA_ONLY.findall(body)))
    if cuda:
        raise SystemExit(
            f"the resolution holds CUDA-only packages ({', '.join(cuda)}): uv saw a CUDA torch. "
            "Point LOCK_FIND_LINKS at a directory or page with the torch 2.13.0 CPU wheel."
        )
    partial = lock.with_name(lock.name + ".partial")
    partial.write_text(HEADER.format(digest=dependency_digest(pyproject)) + body, encoding="utf-8")
    os.replace(partial, lock)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: python deploy/lockfile.py PYPROJECT COMPILED LOCK")
    write_lock(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
