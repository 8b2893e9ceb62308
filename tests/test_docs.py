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
