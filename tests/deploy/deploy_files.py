"""Helpers shared by the deploy tests: repository paths and PARLA_ name extraction."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
PARLA_NAME = re.compile(r"\bPARLA_[A-Z0-9_]+\b")


def load_yaml_documents(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as handle:
        return [document for document in yaml.safe_load_all(handle) if document is not None]


def parla_names(text: str) -> set[str]:
    """Every ``PARLA_...`` name mentioned in a file (env keys and ``${...}`` interpolations)."""
    return set(PARLA_NAME.findall(text))
