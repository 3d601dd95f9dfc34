"""The class a dotted ``class_path`` names (a config's callbacks, a checkpoint's data module)."""

from __future__ import annotations

import importlib


def named_class(path: object) -> type | None:
    """The class ``path`` (``"package.module.Class"``) names, or None when it names none."""
    if not isinstance(path, str) or "." not in path:
        return None
    module, _, name = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None
    return found if isinstance(found, type) else None
