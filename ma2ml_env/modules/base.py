"""AutoML modules: the agents of MA2ML, declared as data.

An :class:`AutoMLModule` declares its decisions once, as a tuple of :class:`Decision` (a name and a
finite tuple of choices). Its action space is derived from them: ``MultiDiscrete([len(d.choices) for d
in decisions])``. ``apply(choice, pipeline) -> pipeline`` is pure: it maps the decoded choice
(``{decision_name: value}``) and the pipeline built so far to a new pipeline.

Registering a module class makes it available by name to ``ma2ml_env.parallel_env(modules=[...])``::

    from ma2ml_env import AutoMLModule, Decision, register_module

    @register_module
    class Mixup(AutoMLModule):
        name = "mixup"
        decisions = (Decision("alpha", (0.0, 0.2, 0.4), "Beta(alpha, alpha) mixup; 0 disables it"),)

        def apply(self, choice, pipeline):
            return pipeline.with_train(mixup_alpha=choice["alpha"])
"""

from __future__ import annotations

import functools
import keyword
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import gymnasium
import numpy as np

from ma2ml_env.pipeline import Pipeline

__all__ = [
    "AutoMLModule",
    "Decision",
    "make_module",
    "register_module",
    "registered_modules",
    "resolve_modules",
    "unregister_module",
]


@dataclass(frozen=True)
class Decision:
    """One discrete decision of an AutoML module.

    Attributes:
        name: identifier, unique within the module.
        choices: the allowed values, in a fixed order (the action index is the position).
        doc: one line saying what the decision controls.
    """

    name: str
    choices: tuple[Any, ...]
    doc: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier() or keyword.iskeyword(self.name):
            raise ValueError(f"Decision name must be a Python identifier, got {self.name!r}")
        choices = tuple(self.choices)
        object.__setattr__(self, "choices", choices)
        if len(choices) < 1:
            raise ValueError(f"Decision {self.name!r} needs at least one choice")
        try:
            unique = len(set(choices)) == len(choices)
        except TypeError as exc:
            raise ValueError(f"Decision {self.name!r}: choices must be hashable values: {exc}") from exc
        if not unique:
            raise ValueError(f"Decision {self.name!r} has duplicate choices {choices}")

    @functools.cached_property
    def _index(self) -> dict[Any, int]:
        return {c: i for i, c in enumerate(self.choices)}

    def index(self, value: Any) -> int:
        """Position of ``value`` among the choices; ``ValueError`` naming the allowed values if absent."""
        try:
            return self._index[value]
        except (KeyError, TypeError):
            raise ValueError(
                f"{value!r} is not a choice of decision {self.name!r}; allowed: {list(self.choices)}"
            ) from None


class AutoMLModule:
    """Base class of an AutoML module (an agent of the multi-agent search).

    Subclasses set the class attributes ``name`` and ``decisions`` (or set them per instance in
    ``__init__``) and implement :meth:`apply`. Everything else is derived.

    Attributes:
        name: the module's (and agent's) name: a lowercase identifier.
        decisions: the module's decisions, in action-vector order.
        surrogate_effects: optional, for ``reward="surrogate"``: ``{decision name: (logit offset per
            choice, ...)}`` (numbers in [-10, 10]). The surrogate scores only the built-in modules and
            refuses another module whose choices change the pipeline unless it declares this (see
            :mod:`ma2ml_env.rewards.surrogate`); real training ignores it.
    """

    name: ClassVar[str] | str = ""
    decisions: ClassVar[tuple[Decision, ...]] | tuple[Decision, ...] = ()
    surrogate_effects: ClassVar[Mapping[str, Sequence[float]] | None] = None

    def apply(self, choice: Mapping[str, Any], pipeline: Pipeline) -> Pipeline:
        """Return ``pipeline`` changed by the decoded ``choice`` ({decision name: value}). Must be pure."""
        raise NotImplementedError(f"{type(self).__name__} must implement apply(choice, pipeline)")

    # -- derived ---------------------------------------------------------------------------------------
    @property
    def nvec(self) -> np.ndarray:
        """Number of choices per decision."""
        cached = self.__dict__.get("_nvec")
        if cached is None:
            cached = np.array([len(d.choices) for d in self.decisions], dtype=np.int64)
            self.__dict__["_nvec"] = cached
        return cached

    @property
    def action_space(self) -> gymnasium.spaces.MultiDiscrete:
        """``MultiDiscrete`` over the decisions (the same cached object on every access)."""
        space = self.__dict__.get("_action_space")
        if space is None:
            space = gymnasium.spaces.MultiDiscrete(self.nvec)
            self.__dict__["_action_space"] = space
        return space

    def decode(self, action: Any) -> dict[str, Any]:
        """Action vector -> ``{decision name: value}``."""
        a = np.asarray(action).reshape(-1)
        if a.shape[0] != len(self.decisions):
            raise ValueError(
                f"module {self.name!r} expects {len(self.decisions)} action entries, got {a.shape[0]}"
            )
        out = {}
        for d, i in zip(self.decisions, a.tolist()):
            if not 0 <= i < len(d.choices):
                raise ValueError(
                    f"module {self.name!r}: index {i} out of range for decision {d.name!r} "
                    f"(allowed 0..{len(d.choices) - 1})"
                )
            out[d.name] = d.choices[i]
        return out

    def encode(self, choice: Mapping[str, Any]) -> np.ndarray:
        """``{decision name: value}`` -> action vector."""
        missing = [d.name for d in self.decisions if d.name not in choice]
        if missing:
            raise ValueError(f"module {self.name!r}: choice lacks decisions {missing}")
        return np.array([d.index(choice[d.name]) for d in self.decisions], dtype=np.int64)

    def describe(self) -> str:
        """A table of the module's decisions."""
        rows = [f"module {self.name!r} ({type(self).__name__}): {len(self.decisions)} decisions"]
        for d in self.decisions:
            rows.append(f"  {d.name:<20} {len(d.choices):>3} choices  {list(d.choices)!s:.60}  {d.doc}")
        return "\n".join(rows)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, decisions={len(self.decisions)})"


# -- registry -----------------------------------------------------------------------------------------
_REGISTRY: dict[str, Callable[..., AutoMLModule]] = {}

M = TypeVar("M", bound=Callable[..., AutoMLModule])


def register_module(factory: M | None = None, *, name: str | None = None, overwrite: bool = False) -> Any:
    """Register an AutoML module class (or factory) under a name; usable as a decorator.

    Args:
        factory: a subclass of :class:`AutoMLModule` or any callable returning one.
        name: registry name; defaults to ``factory.name``.
        overwrite: replace an existing registration instead of raising.

    Raises:
        ValueError: if the name is missing, not a lowercase identifier, or already taken.
    """

    def _register(f: M) -> M:
        key = name if name is not None else getattr(f, "name", None)
        if not isinstance(key, str) or not key.isidentifier() or key != key.lower():
            raise ValueError(
                f"cannot register {f!r}: module name must be a lowercase identifier, got {key!r}; "
                "set the class attribute `name` or pass name=..."
            )
        if key in _REGISTRY and not overwrite and _REGISTRY[key] is not f:
            raise ValueError(
                f"an AutoML module named {key!r} is already registered ({_REGISTRY[key]!r}); "
                "choose another name or pass overwrite=True"
            )
        _REGISTRY[key] = f
        return f

    return _register(factory) if factory is not None else _register


def unregister_module(name: str) -> None:
    """Remove a registered module (mostly for tests)."""
    _REGISTRY.pop(name, None)


def registered_modules() -> tuple[str, ...]:
    """Names of every registered module, sorted."""
    return tuple(sorted(_REGISTRY))


def make_module(name: str, **kwargs: Any) -> AutoMLModule:
    """Build a registered module by name, passing ``kwargs`` to its factory."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown AutoML module {name!r}; registered: {list(registered_modules())}. "
            "Register yours with ma2ml_env.register_module or pass an instance."
        ) from None
    mod = factory(**kwargs)
    if not isinstance(mod, AutoMLModule):
        raise TypeError(f"factory of module {name!r} returned {type(mod).__name__}, not an AutoMLModule")
    return mod


def resolve_modules(modules: Any) -> tuple[AutoMLModule, ...]:
    """Turn a list of module names and/or instances into module instances."""
    if isinstance(modules, (str, AutoMLModule)):
        modules = (modules,)
    out = []
    for m in modules:
        if isinstance(m, str):
            out.append(make_module(m))
        elif isinstance(m, AutoMLModule):
            out.append(m)
        elif isinstance(m, type) and issubclass(m, AutoMLModule):
            out.append(m())
        else:
            raise ValueError(
                f"modules must be registered names or AutoMLModule instances, got {m!r} "
                f"(registered: {list(registered_modules())})"
            )
    return tuple(out)
