"""The ``PARLA_`` settings the deploy files may use: exactly the fields of ``core.settings.Settings``."""

from __future__ import annotations

from typing import Final

from core.settings import Settings

PARLA_SETTINGS: Final[dict[str, str]] = {
    f"PARLA_{name.upper()}": field.description or "" for name, field in Settings.model_fields.items()
}
