"""Vendors hls.js (Apache-2.0) into the playground: ``make vendor-hlsjs [HLSJS_VERSION=1.7.4]``.

    python deploy/vendor_hlsjs.py [VERSION]

Runs ``npm pack hls.js@VERSION`` in a temporary directory, checks the tarball against the
registry's ``dist.integrity`` (``npm view``) and, when VERSION is the pinned one, against the
integrity the manifest already records, then writes ``dist/hls.light.min.js`` and ``LICENSE`` to
``service/playground/vendor/`` with ``manifest.json`` (package, version, tarball integrity, sha256
of each file written). Only those files are committed: the tests, ``make test`` and the image
never run npm (``tests/service/test_playground_vendor.py`` holds the files to the manifest).
Standard library only; npm is needed here and nowhere else.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

PACKAGE = "hls.js"
VENDOR_DIR = Path(__file__).resolve().parents[1] / "service" / "playground" / "vendor"
MANIFEST = "manifest.json"
FILES = {"hls.light.min.js": "package/dist/hls.light.min.js", "LICENSE": "package/LICENSE"}
"""Written file -> its member in the npm tarball."""


class VendorError(RuntimeError):
    """The tarball is not the one the registry (or the manifest) names, or lacks a file."""


def sri_sha512(data: bytes) -> str:
    """The Subresource Integrity string npm records for a tarball: ``sha512-<base64>``."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def extract(tarball: bytes, expected_integrity: str) -> dict[str, bytes]:
    """The vendored files from ``tarball``, after checking it against ``expected_integrity``.

    Raises:
        VendorError: the integrity differs, or a file is missing from the tarball.
    """
    actual = sri_sha512(tarball)
    if actual != expected_integrity:
        raise VendorError(f"tarball integrity {actual} is not the registry's {expected_integrity}")
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        for name, member in FILES.items():
            try:
                handle = archive.extractfile(member)
            except KeyError:
                handle = None
            if handle is None:
                raise VendorError(f"the tarball has no {member}")
            files[name] = handle.read()
    return files


def manifest_for(version: str, integrity: str, files: dict[str, bytes]) -> dict[str, Any]:
    return {
        "package": PACKAGE,
        "version": version,
        "license": "Apache-2.0",
        "source": f"npm pack {PACKAGE}@{version}",
        "integrity": integrity,
        "files": {name: {"from": FILES[name], "sha256": sha256_hex(data)} for name, data in files.items()},
    }


def _npm(*args: str, cwd: Path) -> str:
    return subprocess.run(["npm", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def vendor(version: str | None = None, out_dir: Path = VENDOR_DIR) -> dict[str, Any]:
    """Fetch, check and write hls.js ``version`` (default: the manifest's); returns the manifest."""
    previous = json.loads((out_dir / MANIFEST).read_text()) if (out_dir / MANIFEST).is_file() else None
    if version is None:
        if previous is None:
            raise VendorError("no version given and no manifest to take it from")
        version = str(previous["version"])
    with tempfile.TemporaryDirectory(prefix="parla-hlsjs-") as tmp:
        work = Path(tmp)
        integrity = _npm("view", f"{PACKAGE}@{version}", "dist.integrity", cwd=work)
        if previous is not None and previous["version"] == version and previous["integrity"] != integrity:
            raise VendorError(
                f"the registry's integrity for {PACKAGE}@{version} ({integrity}) is not the one the "
                f"manifest pinned ({previous['integrity']})"
            )
        tarball_name = _npm("pack", f"{PACKAGE}@{version}", "--silent", cwd=work).splitlines()[-1]
        files = extract((work / tarball_name).read_bytes(), integrity)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (out_dir / name).write_bytes(data)
    manifest = manifest_for(version, integrity, files)
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


if __name__ == "__main__":
    written = vendor(sys.argv[1] if len(sys.argv) > 1 else None)
    print(f"vendored {PACKAGE}@{written['version']} into {VENDOR_DIR}")
