"""Search algorithms by name: what the CLI and the benchmark use.

    from agents.registry import make_algorithm, registered_algorithms
    algo = make_algorithm("tpe", n_startup_trials=20)     # config fields as keyword arguments
    registered_algorithms()   # ('a2c', 'evolution', 'gp', 'independent', 'ippo', 'iql', 'local-search',
                              #  'ma2ml', 'ma2ml-lite', 'ma2ml-paper', 'mappo', 'ppo', 'qmix', 'random',
                              #  'separate', 'tpe', 'vdn')

Entries are ``"package.module:Class"`` strings imported on first use, so an algorithm whose optional
dependency is missing or broken does not stop the others from loading. Users add their own with
:func:`register_algorithm`.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agents.base import SearchAlgorithm
from agents.common import check_field_types

__all__ = [
    "EXTRA_MODULES",
    "AlgorithmSpec",
    "algorithm_spec",
    "config_fields",
    "make_algorithm",
    "register_algorithm",
    "registered_algorithms",
]


@dataclass(frozen=True)
class AlgorithmSpec:
    """A registered algorithm.

    Attributes:
        name: the registry name.
        target: ``"package.module:Class"`` of the :class:`SearchAlgorithm` subclass.
        config: ``"package.module:ConfigClass"`` of its config dataclass (``None``: no hyper-parameters);
            used to check keyword arguments by name before anything is built.
        defaults: keyword arguments always passed (e.g. ``{"algo": "a2c"}``).
        summary: one line for ``ma2ml list``.
        extra: the pip extra its optional dependency comes with (``None``: none needed).
    """

    name: str
    target: str
    config: str | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    summary: str = ""
    extra: str | None = None

    @property
    def requires(self) -> str | None:
        """The module its extra brings (``None``: no extra), e.g. ``"stable_baselines3"`` for ``sb3``."""
        return None if self.extra is None else EXTRA_MODULES.get(self.extra, self.extra)


#: the importable module of each pip extra an algorithm may need
EXTRA_MODULES = {"optuna": "optuna", "sb3": "stable_baselines3", "torchrl": "torchrl"}

_REGISTRY: dict[str, AlgorithmSpec] = {}


def register_algorithm(
    name: str,
    target: str,
    *,
    config: str | None = None,
    defaults: Mapping[str, Any] | None = None,
    summary: str = "",
    extra: str | None = None,
    overwrite: bool = False,
) -> None:
    """Register a search algorithm under ``name`` (see :class:`AlgorithmSpec` for the arguments)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"algorithm name must be a non-empty string, got {name!r}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"algorithm {name!r} is already registered; pass overwrite=True to replace it")
    for label, t in (("target", target), ("config", config)):
        if t is not None and (not isinstance(t, str) or t.count(":") != 1):
            raise ValueError(f"{label} must look like 'package.module:Name', got {t!r}")
    _REGISTRY[name] = AlgorithmSpec(name, target, config, dict(defaults or {}), summary, extra)


def registered_algorithms() -> tuple[str, ...]:
    """Names of every registered algorithm, sorted."""
    return tuple(sorted(_REGISTRY))


def algorithm_spec(name: str) -> AlgorithmSpec:
    """The :class:`AlgorithmSpec` of ``name``; ``ValueError`` listing the names if unknown."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown search algorithm {name!r}; registered algorithms are {list(registered_algorithms())}"
        ) from None


def _load(target: str) -> Any:
    mod, attr = target.split(":")
    return getattr(importlib.import_module(mod), attr)


def config_fields(name: str) -> dict[str, Any]:
    """The config fields of algorithm ``name`` and their defaults (``{}`` when it has no config).

    Imports the algorithm's module (not its optional dependencies)."""
    spec = algorithm_spec(name)
    if spec.config is None:
        return {}
    cls = _load(spec.config)
    base = getattr(_load(spec.target), "default_config", None)
    base = base() if callable(base) else None
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in spec.defaults:
            out[f.name] = spec.defaults[f.name]
        elif isinstance(base, cls):
            out[f.name] = getattr(base, f.name)
        elif f.name in spec.defaults:
            out[f.name] = spec.defaults[f.name]
        elif f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def make_algorithm(name: str, **kwargs: Any) -> SearchAlgorithm:
    """A new instance of the algorithm registered as ``name``.

    Args:
        name: a name from :func:`registered_algorithms`.
        **kwargs: fields of the algorithm's config (e.g. ``make_algorithm("separate", evals_per_stage=10)``),
            or ``config=<its config instance>``.

    Raises:
        ValueError: unknown name, unknown config field, or a value the config rejects; a value of the wrong
            type (checked against the config dataclass's field types, booleans are not numbers) raises
            :class:`agents.common.ConfigTypeError`, a ``ValueError`` and a ``TypeError``, naming the field,
            the expected type and the value.
    """
    spec = algorithm_spec(name)
    fixed = sorted(set(kwargs) & set(spec.defaults))
    if fixed:
        raise ValueError(f"option(s) {fixed} of algorithm {name!r} are fixed by its name; valid options are "
                         f"{sorted(set(config_fields(name)) - set(spec.defaults))}")
    kwargs = {**spec.defaults, **kwargs}
    if spec.config is None:
        if kwargs:
            raise ValueError(f"algorithm {name!r} takes no configuration, got {sorted(kwargs)}")
    else:
        cls = _load(spec.config)
        names = {f.name for f in dataclasses.fields(cls)} | {"config"}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown} for algorithm {name!r}; valid options are "
                f"{sorted(names - {'config'} - set(spec.defaults))}"
            )
        check_field_types(cls, {k: v for k, v in kwargs.items() if k != "config"})
    algo = _load(spec.target)(**kwargs)
    if not isinstance(algo, SearchAlgorithm):
        raise TypeError(f"{spec.target} did not build a SearchAlgorithm (got {type(algo).__name__})")
    return algo


# -- the built-in algorithms: one module each -------------------------------------------------------------
register_algorithm("random", "agents.random_search:RandomSearch", summary="uniform random joint actions")
register_algorithm("evolution", "agents.evolution:RegularizedEvolution",
                   config="agents.evolution:EvolutionConfig",
                   summary="regularised (aging) evolution, tournament selection (Real et al. 2019)")
register_algorithm("tpe", "agents.tpe:OptunaTPE", config="agents.tpe:TPEConfig", extra="optuna",
                   summary="Optuna's TPE over the joint space (one categorical per decision)")
register_algorithm("gp", "agents.gp:GPBO", config="agents.gp:GPConfig", extra="optuna",
                   summary="Optuna's Gaussian-process Bayesian optimisation (GPSampler)")
register_algorithm("local-search", "agents.local_search:LocalSearch",
                   config="agents.local_search:LocalSearchConfig",
                   summary="local search over one-decision neighbours, first improvement, random restarts "
                           "(White et al. 2021)")
register_algorithm("ppo", "agents.sb3:SB3Agent", config="agents.sb3:SB3Config", extra="sb3",
                   defaults={"algo": "ppo"},
                   summary="stable-baselines3 PPO on the joint MultiDiscrete action")
register_algorithm("a2c", "agents.sb3:SB3Agent", config="agents.sb3:SB3Config", extra="sb3",
                   defaults={"algo": "a2c"},
                   summary="stable-baselines3 A2C on the joint MultiDiscrete action")
register_algorithm("independent", "agents.independent:IndependentLearners",
                   config="agents.independent:IndependentConfig",
                   summary="one learner per agent on the shared reward (no critic, no credit assignment)")
register_algorithm("separate", "agents.separate:ModuleByModule",
                   config="agents.separate:ModuleByModuleConfig",
                   summary="one module at a time, the others fixed to the best so far (paper's ablation)")
# the paper's MA2ML and MA2ML-Lite (agents/ma2ml.py); "ma2ml", the default, is our extension of it
register_algorithm("ma2ml", "agents.ma2ml_plus:MA2MLPlus", config="agents.ma2ml_plus:MA2MLPlusConfig",
                   summary="MA2ML, our extension (default): the paper's method plus rank targets, critic "
                           "ensembles, a mirror-descent policy step and critic screening")
register_algorithm("ma2ml-paper", "agents.ma2ml:MA2ML", config="agents.ma2ml:MA2MLConfig",
                   summary="MA2ML as in the paper: centralised critic, credit assignment, off-policy clipped "
                           "updates around target policies")
register_algorithm("ma2ml-lite", "agents.ma2ml:MA2MLLite", config="agents.ma2ml:MA2MLConfig",
                   summary="MA2ML-Lite (the paper's): per-agent REINFORCE on the shared reward, on-policy")
# MARL-library algorithms (TorchRL 0.14's multi-agent components) on the decision-per-step view
register_algorithm("mappo", "agents.marl.ppo:MAPPO", config="agents.marl.ppo:PPOConfig", extra="torchrl",
                   summary="TorchRL MAPPO on the decision-per-step view: shared masked policy, centralised critic")
register_algorithm("ippo", "agents.marl.ppo:IPPO", config="agents.marl.ppo:PPOConfig", extra="torchrl",
                   summary="TorchRL IPPO on the decision-per-step view: shared masked policy, per-agent critic")
register_algorithm("iql", "agents.marl.q:IQL", config="agents.marl.q:QConfig", extra="torchrl",
                   summary="TorchRL independent Q-learning (DQNLoss) on the decision-per-step view")
register_algorithm("vdn", "agents.marl.q:VDN", config="agents.marl.q:QConfig", extra="torchrl",
                   summary="TorchRL VDN (QMixerLoss + VDNMixer) on the decision-per-step view")
register_algorithm("qmix", "agents.marl.q:QMIX", config="agents.marl.q:QConfig", extra="torchrl",
                   summary="TorchRL QMIX (QMixerLoss + QMixer on the global state) on the decision-per-step view")
