"""How a search writes JSON: exactly for the store, strictly for the files people and tools read."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["json_default", "json_dumps", "jsonable"]


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` for what a search records: numpy scalars and arrays as Python values,
    sets as lists, anything else by its ``repr``."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return repr(obj)


def jsonable(obj: Any) -> Any:
    """``obj`` as strict JSON values, for files people and other tools read (``trials.jsonl``,
    ``best.json``...): numpy values as Python ones, tuples and sets as lists, a NaN or infinite float as
    ``None`` (JSON has no NaN), anything else unknown by its ``repr``. The store keeps its own exact form
    (:func:`json_dumps`)."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset, np.ndarray)):
        return [jsonable(v) for v in (obj.tolist() if isinstance(obj, np.ndarray) else obj)]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    return repr(obj)


def json_dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` with :func:`json_default` (NaN and infinities written as JSON's ``NaN``/``Infinity``):
    how a search writes what it records."""
    return json.dumps(obj, default=json_default, **kwargs)
