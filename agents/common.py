"""What the search algorithms share: config dataclasses checked against their field types, the common
set-up (a joint-action codec and a seeded NumPy generator), optional imports and RNG state.

A new algorithm with hyper-parameters needs only this module and :mod:`agents.base`::

    @dataclass(frozen=True)
    class MyConfig(AlgorithmConfig):
        step: float = 0.1

        def check(self) -> None:                       # value checks; field types are checked already
            in_range("MyConfig", "step", self.step, 0.0, 1.0, lo_open=True)

    class MySearch(ConfiguredSearch):
        name = "mine"
        config_class = MyConfig                        # MySearch(step=0.2) or MySearch(MyConfig(step=0.2))

        def setup(self, action_spaces, seed):
            super().setup(action_spaces, seed)         # self.codec, self.agents, self.seed, self.rng
            ...

        def propose(self, n):                          # int64 [n, D] in self.codec's layout
            return self.codec.sample(self.rng, n)

        def observe(self, actions, scores):            # the rows as proposed, float64 scores
            actions, scores = self.observed_batch(actions, scores)

(:class:`ConfiguredSearch` and :func:`make_config` would sit naturally in :mod:`agents.base`; they live
here while that module is being reworked.)
"""

from __future__ import annotations

import copy
import dataclasses
import math
import numbers
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import gymnasium
import numpy as np

from agents.base import SearchAlgorithm
from ma2ml_env.imports import import_module

__all__ = [
    "AlgorithmConfig",
    "ConfigTypeError",
    "ConfiguredSearch",
    "check_field_types",
    "choice",
    "in_range",
    "load_rng",
    "make_config",
    "positive_int",
    "require",
    "rng_state",
    "softmax",
]


# ---------------------------------------------------------------------------------------------------
# Config values against the config dataclass's field types
# ---------------------------------------------------------------------------------------------------
class ConfigTypeError(TypeError, ValueError):
    """A config value of the wrong type (both a ``TypeError`` and a ``ValueError``, so code that expects
    either for a bad config catches it)."""


def _is_bool(v: Any) -> bool:
    return isinstance(v, (bool, np.bool_))


def _matches(value: Any, tp: Any) -> bool | None:
    """Whether ``value`` fits the annotation ``tp`` (``None``: an annotation this check does not read)."""
    if tp is Any:
        return True
    if tp is type(None) or tp is None:
        return value is None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        results = [_matches(value, t) for t in typing.get_args(tp)]
        return True if any(results) else (None if None in results else False)
    if origin is typing.Literal:  # the type of the allowed values; the values themselves: the config's check
        return any(_matches(value, type(v)) for v in typing.get_args(tp))
    if tp is bool:
        return _is_bool(value)
    if tp is int:
        return isinstance(value, numbers.Integral) and not _is_bool(value)
    if tp is float:
        return isinstance(value, numbers.Real) and not _is_bool(value)
    if tp is str:
        return isinstance(value, str)
    if origin in (tuple, list, Sequence) or tp in (tuple, list):
        return isinstance(value, (tuple, list))
    if origin is Mapping or tp is Mapping or origin is dict or tp is dict:
        return isinstance(value, Mapping)
    return None


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(t) for t in typing.get_args(tp))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(tp))
    if origin in (tuple, list, Sequence) or tp in (tuple, list):
        return "a sequence"
    if origin in (Mapping, dict) or tp in (Mapping, dict):
        return "a mapping"
    names = {bool: "a bool (True or False)", int: "an integer", float: "a number", str: "a string",
             type(None): "None"}
    return names.get(tp, str(tp))


_HINTS: dict[type, dict[str, Any]] = {}


def check_field_types(config_cls: type, values: Mapping[str, Any]) -> None:
    """Check ``values`` (``{field: value}``) against the field types of the dataclass ``config_cls``.

    Numbers: an ``int`` field takes integers, a ``float`` field any real number; booleans are neither.
    A ``Literal`` field takes values of its literals' type (which ones are allowed is the config's own
    check); tuples take lists and tuples; annotations it does not read pass.

    Raises:
        ConfigTypeError: naming the field, the expected type and the value.
    """
    hints = _HINTS.get(config_cls)
    if hints is None:
        hints = _HINTS[config_cls] = typing.get_type_hints(config_cls)
    for name, value in values.items():
        tp = hints.get(name)
        if tp is not None and _matches(value, tp) is False:
            raise ConfigTypeError(f"{config_cls.__name__}.{name} must be {_describe(tp)}, got {value!r} "
                                  f"({type(value).__name__})")


@dataclasses.dataclass(frozen=True)
class AlgorithmConfig:
    """Base of frozen config dataclasses: on construction every field is checked against its type
    (:func:`check_field_types`), then :meth:`check` checks the values."""

    def __post_init__(self) -> None:
        check_field_types(type(self), {f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        self.check()

    def check(self) -> None:
        """Value checks of a subclass (raise ``ValueError`` naming the field); types are checked already."""


def make_config(config_cls: type, config: Any, overrides: Mapping[str, Any], default: Any = None) -> Any:
    """``config`` (default: ``default`` or ``config_cls()``) with ``overrides`` replaced.

    Raises:
        TypeError: ``config`` is not a ``config_cls``.
        ValueError: an unknown field name; :class:`ConfigTypeError`: a value of the wrong type.
    """
    if config is None:
        config = default if default is not None else config_cls()
    if not isinstance(config, config_cls):
        raise TypeError(f"config must be an instance of {config_cls.__name__}, got {type(config).__name__}")
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown {config_cls.__name__} field(s) {unknown}; valid fields are "
                         f"{sorted(names)}")
    check_field_types(config_cls, overrides)
    return dataclasses.replace(config, **overrides) if overrides else config


# ---------------------------------------------------------------------------------------------------
# Value checks for configs
# ---------------------------------------------------------------------------------------------------
def positive_int(owner: str, name: str, value: Any) -> None:
    """``ValueError`` unless ``value`` is an integer >= 1 (booleans are not)."""
    if _is_bool(value) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{owner}.{name} must be a positive integer, got {value!r}")


def in_range(owner: str, name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False,
             hi_open: bool = False) -> None:
    """``ValueError`` unless ``value`` is a finite number in ``[lo, hi]`` (ends open as asked)."""
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not _is_bool(value) \
        and math.isfinite(value) and (value > lo if lo_open else value >= lo) \
        and (value < hi if hi_open else value <= hi)
    if not ok:
        lb, rb = ("(" if lo_open else "["), (")" if hi_open else "]")
        raise ValueError(f"{owner}.{name} must be a number in {lb}{lo}, {hi}{rb}, got {value!r}")


def choice(owner: str, name: str, value: Any, allowed: Sequence[str]) -> None:
    """``ValueError`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{owner}.{name} must be one of {list(allowed)}, got {value!r}")


# ---------------------------------------------------------------------------------------------------
# The common set-up
# ---------------------------------------------------------------------------------------------------
class ConfiguredSearch(SearchAlgorithm):
    """A :class:`SearchAlgorithm` with an optional frozen config and the common set-up.

    ``Algo(config)`` or ``Algo(field=value, ...)`` builds ``self.config`` from :attr:`config_class`
    (:func:`make_config`; the default is :meth:`default_config`). :meth:`setup` adds, to
    :meth:`SearchAlgorithm.setup`'s (``self.codec``, ``self.agents``, ``self.seed``), ``self.rng``
    (``np.random.default_rng(seed)``).

    Attributes:
        config_class: the config dataclass (``None``: the algorithm takes no configuration).
    """

    config_class: ClassVar[type | None] = None

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        cls = self.config_class
        if cls is None:
            if config is not None or overrides:
                raise ValueError(f"{type(self).__name__} takes no configuration, got "
                                 f"{sorted(overrides) if overrides else type(config).__name__}")
            return
        self.config = make_config(cls, config, overrides, default=self.default_config())

    @classmethod
    def default_config(cls) -> Any:
        """The config used when none is given (``config_class()``)."""
        return None if cls.config_class is None else cls.config_class()

    def setup(self, action_spaces: Mapping[str, gymnasium.Space], seed: int) -> None:
        super().setup(action_spaces, seed)
        self.rng = np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------------------
# Small shared helpers
# ---------------------------------------------------------------------------------------------------
def require(module: str, extra: str) -> Any:
    """Import an optional dependency (without torch's temp-folder litter: :mod:`ma2ml_env.imports`), or raise
    ``ImportError`` with the exact install command."""
    try:
        return import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"this algorithm needs the optional dependency {module.split('.')[0]!r}, which is not installed; "
            f'install it with: pip install "ma2ml[{extra}]"'
        ) from exc


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """A picklable copy of a NumPy generator's state."""
    return copy.deepcopy(rng.bit_generator.state)


def load_rng(state: Mapping[str, Any]) -> np.random.Generator:
    """A generator in the state :func:`rng_state` recorded."""
    rng = np.random.default_rng()
    rng.bit_generator.state = copy.deepcopy(dict(state))
    return rng


def softmax(logits: np.ndarray) -> np.ndarray:
    """``exp(logits) / sum(exp(logits))``, stably."""
    z = np.exp(logits - logits.max())
    return z / z.sum()
