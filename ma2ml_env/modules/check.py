"""A conformance check users run on their own AutoML modules (Optuna/Gymnasium style)."""

from __future__ import annotations

import pickle

import gymnasium
import numpy as np

from ma2ml_env.modules.base import AutoMLModule, Decision
from ma2ml_env.pipeline import Pipeline

__all__ = ["ModuleCheckError", "check_module"]


class ModuleCheckError(AssertionError):
    """Raised by :func:`check_module` with a message that says which rule failed and how to fix it."""


def _fail(module: AutoMLModule, msg: str) -> None:
    raise ModuleCheckError(f"AutoML module {getattr(module, 'name', module)!r}: {msg}")


def check_module(module: AutoMLModule, base: Pipeline | None = None, num_samples: int = 32, seed: int = 0) -> None:
    """Check that ``module`` follows the AutoML-module contract.

    Rules checked: the name is a lowercase identifier; decisions are a non-empty tuple of
    :class:`Decision` with unique names; ``action_space`` is a ``MultiDiscrete`` matching the decisions
    and the same object on every access; decode/encode round-trip on the corner and ``num_samples``
    random actions; ``apply`` returns a :class:`Pipeline`, does not modify its input, is deterministic,
    and gives a pipeline whose ``to_dict()``/``key()`` work; the module and its pipelines pickle (needed
    for worker processes and Ray).

    Raises:
        ModuleCheckError: on the first broken rule.
    """
    if not isinstance(module, AutoMLModule):
        raise ModuleCheckError(f"{module!r} is not an AutoMLModule instance; subclass ma2ml_env.AutoMLModule")
    name = module.name
    if not isinstance(name, str) or not name.isidentifier() or name != name.lower():
        _fail(module, f"name must be a lowercase identifier, got {name!r}")
    decisions = module.decisions
    if not isinstance(decisions, tuple) or not decisions:
        _fail(module, "decisions must be a non-empty tuple of Decision")
    if not all(isinstance(d, Decision) for d in decisions):
        _fail(module, "every entry of decisions must be a ma2ml_env.Decision")
    names = [d.name for d in decisions]
    if len(set(names)) != len(names):
        _fail(module, f"decision names must be unique, got {names}")
    space = module.action_space
    if not isinstance(space, gymnasium.spaces.MultiDiscrete):
        _fail(module, f"action_space must be MultiDiscrete, got {type(space).__name__}")
    if space is not module.action_space:
        _fail(module, "action_space must return the same cached object on every access")
    if not np.array_equal(space.nvec, [len(d.choices) for d in decisions]):
        _fail(module, f"action_space.nvec {space.nvec} does not match the decisions' choice counts")

    base = base if base is not None else Pipeline()
    rng = np.random.default_rng(seed)
    nvec = module.nvec
    actions = [np.zeros_like(nvec), nvec - 1] + [
        (rng.random(nvec.shape) * nvec).astype(np.int64) for _ in range(num_samples)
    ]
    for a in actions:
        choice = module.decode(a)
        if not np.array_equal(module.encode(choice), a):
            _fail(module, f"encode(decode(a)) != a for a={a.tolist()}")
        before = base.key()
        try:
            out = module.apply(choice, base)
        except Exception as exc:  # noqa: BLE001 - any failure of the user's module is reported
            _fail(module, f"apply raised {type(exc).__name__}: {exc} for choice {choice}")
        if not isinstance(out, Pipeline):
            _fail(module, f"apply must return a Pipeline, got {type(out).__name__}")
        if base.key() != before:
            _fail(module, "apply modified its input pipeline; derive a new one with pipeline.replace/with_*")
        again = module.apply(choice, base)
        try:
            key = out.key()
        except Exception as exc:  # noqa: BLE001 - any failure of the user's module is reported
            _fail(module, f"the pipeline apply returns is not serialisable ({exc}); keep extras JSON-able")
        if again.key() != key:
            _fail(module, f"apply is not deterministic for choice {choice}")
        for h in (*out.batch_hooks, *out.model_hooks):
            if not callable(h):
                _fail(module, f"hook {h!r} is not callable")
    try:
        pickle.loads(pickle.dumps(module))
        pickle.loads(pickle.dumps(out))
    except Exception as exc:  # noqa: BLE001 - any failure of the user's module is reported
        _fail(module, f"module or its pipeline cannot be pickled ({exc}); define classes and hooks at module level")
