"""The export's one error type and its optional dependencies (the ``export`` extra)."""

from __future__ import annotations

import importlib
from types import ModuleType

# How a user gets the libraries of every format (pyproject.toml's ``export`` extra).
INSTALL_HINT = "pip install densenet_lit[export]"


class ExportError(ValueError):
    """A checkpoint cannot be exported as asked: bad arguments, a missing library, an output
    folder in the way, or an exported file that does not give the network's outputs."""


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (e.g. ``onnx``), or say which extra installs it: ``purpose`` is what
    it is needed for (``"the ONNX export"``)."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ExportError(
            f"{purpose} needs the Python package {module!r}, which is not installed: run "
            f"`{INSTALL_HINT}` (in a checkout: pip install -e '.[export]')."
        ) from err
