"""The README's configuration table is the settings' own table, so neither can drift."""

from __future__ import annotations

from pathlib import Path

from core.settings import settings_markdown

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_lists_every_setting_as_defined() -> None:
    text = README.read_text()
    begin, end = "<!-- settings:begin -->\n", "<!-- settings:end -->"
    table = text[text.index(begin) + len(begin) : text.index(end)].strip()
    assert table == settings_markdown(), "run `python -m core.settings` and paste it into the README"


def test_one_version_string() -> None:
    """``core.__version__`` is the package's (pyproject reads it), the API's and the k8s image tag."""
    import tomllib

    import yaml

    from core import __version__

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "core.__version__"}
    kustomization = yaml.safe_load((root / "deploy/k8s/kustomization.yaml").read_text())
    assert [image["newTag"] for image in kustomization["images"]] == [__version__]
    # the API's own: tests/service/test_videos_api.py::test_openapi_describes_every_render_option
