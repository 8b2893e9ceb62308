"""The playground's vendored hls.js: the committed files are the ones the manifest names, and the
vendoring script refuses a tarball that is not the registry's (no npm, no network here)."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import re
import tarfile
from types import ModuleType

import pytest

from tests.deploy.deploy_files import ROOT

VENDOR = ROOT / "service" / "playground" / "vendor"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("parla_vendor_hlsjs", ROOT / "deploy" / "vendor_hlsjs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tarball(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_the_committed_files_match_the_manifest() -> None:
    manifest = json.loads((VENDOR / "manifest.json").read_text())
    assert manifest["package"] == "hls.js" and manifest["license"] == "Apache-2.0"
    assert re.fullmatch(r"\d+\.\d+\.\d+", manifest["version"])  # pinned, never a range or a tag
    assert re.fullmatch(r"sha512-[A-Za-z0-9+/]{86}==", manifest["integrity"])
    assert sorted(path.name for path in VENDOR.iterdir()) == sorted([*manifest["files"], "manifest.json"])
    for name, entry in manifest["files"].items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == entry["sha256"], name
    assert "Apache License, Version 2.0" in (VENDOR / "LICENSE").read_text()
    assert f"hls.js@{manifest['version']}" in manifest["source"]


def test_the_playground_loads_the_vendored_player_and_no_cdn() -> None:
    page = (ROOT / "service" / "playground" / "index.html").read_text()
    assert '<script src="vendor/hls.light.min.js"></script>' in page
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert sources and not [source for source in sources if "//" in source]  # all served by Parla


def test_a_tarball_that_is_not_the_registrys_is_refused() -> None:
    script = load_script()
    good = tarball({"package/dist/hls.light.min.js": b"var Hls;", "package/LICENSE": b"Apache"})
    files = script.extract(good, script.sri_sha512(good))
    assert files == {"hls.light.min.js": b"var Hls;", "LICENSE": b"Apache"}
    manifest = script.manifest_for("1.2.3", script.sri_sha512(good), files)
    assert manifest["files"]["LICENSE"]["sha256"] == hashlib.sha256(b"Apache").hexdigest()
    with pytest.raises(script.VendorError, match="integrity"):
        script.extract(good, script.sri_sha512(good + b"x"))
    partial = tarball({"package/LICENSE": b"Apache"})
    with pytest.raises(script.VendorError, match=r"no package/dist/hls\.light\.min\.js"):
        script.extract(partial, script.sri_sha512(partial))
