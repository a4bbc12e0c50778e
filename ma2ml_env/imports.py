"""Import torch-based libraries without leaving ``$TMPDIR/torchinductor_<user>/`` behind.

Importing torchvision (or stable-baselines3, or anything else that imports it) imports ``torch._dynamo``,
whose module ``torch._dynamo.package`` asks for the
inductor cache folder at import time, and that call creates ``$TMPDIR/torchinductor_<user>`` (torch 2.14)
although nothing is ever compiled: every search on real training left that folder in the temp directory.
:func:`import_module` imports such a module with ``TORCHINDUCTOR_CACHE_DIR`` pointing at
a folder that already exists (this package's own; creating an existing folder writes nothing), then
restores the variable, so a later ``torch.compile`` (which we never call) would still use the user's or
torch's default location. A ``TORCHINDUCTOR_CACHE_DIR`` the user set is left as it is.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

__all__ = ["import_module"]

_VAR = "TORCHINDUCTOR_CACHE_DIR"


def import_module(name: str) -> ModuleType:
    """``importlib.import_module(name)`` without the inductor cache folder torch would create in the temp
    folder when the import brings in ``torch._dynamo`` for the first time."""
    if "torch._dynamo.package" in sys.modules or os.environ.get(_VAR) is not None:
        return importlib.import_module(name)
    os.environ[_VAR] = os.path.dirname(os.path.abspath(__file__))  # exists: torch creates nothing
    try:
        return importlib.import_module(name)
    finally:
        os.environ.pop(_VAR, None)
