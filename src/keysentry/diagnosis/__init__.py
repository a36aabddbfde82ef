"""Diagnosis: requirement profiles and the catalogue of findings and their fixes.

- `profiles`: what a key must and must not allow (`trading`, `futures-trading`, `read-only`,
  `market-making`, and operator-defined ones) and `evaluate_permissions`, which turns granted
  permissions into findings.
- `catalog`: every finding code with its status, severity, message and per-exchange remedy
  steps (`finding`), the texts of the headline statuses (`STATUS_TEXTS`) and docs/statuses.md
  (`render_markdown`).

Names are loaded on first use, so `python -m keysentry.diagnosis.catalog` runs the module once
and importing the package stays cheap for the CLI.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keysentry.diagnosis.catalog import (
        CATALOG,
        STATUS_TEXTS,
        StatusText,
        all_codes,
        finding,
        no_ip_expiry_days,
        render_markdown,
    )
    from keysentry.diagnosis.profiles import (
        BUILTIN_PROFILES,
        DEFAULT_PROFILE,
        Profile,
        ProfileError,
        evaluate_permissions,
        get_profile,
        load_profiles,
    )
    from keysentry.diagnosis.remedies import KEY_ROTATION_DAYS, Entry

_HOMES = {
    "keysentry.diagnosis.catalog": (
        "CATALOG",
        "STATUS_TEXTS",
        "StatusText",
        "all_codes",
        "finding",
        "no_ip_expiry_days",
        "render_markdown",
    ),
    "keysentry.diagnosis.remedies": ("KEY_ROTATION_DAYS", "Entry"),
    "keysentry.diagnosis.profiles": (
        "BUILTIN_PROFILES",
        "DEFAULT_PROFILE",
        "Profile",
        "ProfileError",
        "evaluate_permissions",
        "get_profile",
        "load_profiles",
    ),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "BUILTIN_PROFILES",
    "CATALOG",
    "DEFAULT_PROFILE",
    "KEY_ROTATION_DAYS",
    "STATUS_TEXTS",
    "Entry",
    "Profile",
    "ProfileError",
    "StatusText",
    "all_codes",
    "evaluate_permissions",
    "finding",
    "get_profile",
    "load_profiles",
    "no_ip_expiry_days",
    "render_markdown",
]


def __getattr__(name: str) -> Any:
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'keysentry.diagnosis' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
