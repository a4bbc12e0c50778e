"""Multi-fidelity peers through their own libraries, on our simulated clock, one result at a time.

Each peer is a :class:`~agents.schedulers.Scheduler` that chooses its own children (``Job.row``) with its
library's sampler and stops them with its library's own early-stopping logic, driven step by step by the
multi-fidelity loop (:mod:`agents.multifidelity`: W simulated workers, results in arrival order):

* ``optuna-hyperband`` / ``optuna-sh``: Optuna's TPE (``TPESampler(seed=)``) by ask and tell, with its
  ``HyperbandPruner`` / ``SuccessiveHalvingPruner``: ``trial.report(score, step=resource)`` at each rung,
  ``should_prune()`` stops the child. Needs ``pip install "ma2ml[optuna]"``.
* ``syne-asha`` / ``syne-bohb``: syne-tune 0.16's ``ASHA`` (random search, stopping type) and ``BOHB``
  (KDE searcher under ASHA) from ``syne_tune.optimizer.baselines``, driven as its ``Tuner`` does
  (``suggest``, ``on_trial_add``, ``on_trial_result``; ``on_trial_remove`` on ``STOP``).
  Needs ``pip install "ma2ml[syne-tune]"``.
* ``smac-mf``: SMAC3 2.4's ``MultiFidelityFacade`` (random forest, Hyperband intensifier) by ask and tell;
  SMAC asks for (configuration, budget) pairs and stops a child by never asking for it again.
  Needs ``pip install "ma2ml[smac]"``.

    peer = make_peer("optuna-hyperband", seed=0)
    result = run(peer.algorithm, env, budget=100, seed=0, scheduler=peer, workers=4)

``peer.algorithm`` is a :class:`PeerChooses` placeholder: :func:`agents.base.run` needs an algorithm, and
this one only hands the peer the codec (it is never asked for proposals) and names the peer in the store.

The joint action is the peer's config space as one categorical per decision (``"{agent}.{j}"``, choices
``0..n-1``). Resources: the libraries count in units of the lowest level (``min_level``, default the
evaluator's first level), so their rungs ``eta ** k`` (Optuna, syne-tune) or budgets ``R / eta ** k``
(SMAC) are in the evaluator's own unit times that level; each is mapped to the nearest level the
evaluator has (in log scale, :func:`agents.schedulers.nearest_level`) and reported to the library as the
library's own resource. A child that is not stopped continues from its level (``Job(child, next, start=)``).

Determinism and resume: every library is seeded from ``seed``; the global NumPy RNG that syne-tune draws
from is the peer's own during each library call (and the caller's is restored after it); a peer's whole
state is the sequence of results it was told, so a stored search resumes exactly by replay. Nothing is
written: SMAC's output folder is a temporary one, removed as soon as SMAC has been built, and its
``tell`` does not save.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np

from agents.base import SearchAlgorithm
from agents.common import require
from agents.schedulers import Job, Scheduler, nearest_level
from ma2ml_env.codec import JointActionCodec
from ma2ml_env.rewards.fidelity import Fidelity

__all__ = ["PEERS", "Peer", "PeerChooses", "make_peer"]


class PeerChooses(SearchAlgorithm):
    """The algorithm a peer runs under (``peer.algorithm``): hands the peer the codec at ``setup`` and is
    never asked for proposals (the peer gives its children's rows itself); ``name`` is the peer's."""

    def __init__(self, peer: Peer) -> None:
        self.peer, self.name = peer, peer.name

    def setup(self, action_spaces: Mapping[str, gymnasium.Space], seed: int) -> None:
        super().setup(action_spaces, seed)
        self.peer._codec = self.codec

    def propose(self, n: int) -> np.ndarray:
        raise RuntimeError(f"{self.name} chooses its children through its own library: run it with the peer as "
                           f"the scheduler, run(peer.algorithm, env, budget, scheduler=peer)")

    def observe(self, actions: np.ndarray, scores: np.ndarray) -> None:
        self.propose(0)


class Peer(Scheduler):
    """Base class of the peers (module docstring). A subclass builds its library's objects in :meth:`_start`
    and chooses jobs in :meth:`next_job` / learns in :meth:`on_result`.

    Args:
        seed: seeds the library.
        eta: the library's reduction factor.
        min_level: the lowest rung's resource (default: the evaluator's first level); the unit of the
            resources the library sees.
    """

    package, extra = "", ""

    def __init__(self, seed: int = 0, eta: float = 3, min_level: float | None = None) -> None:
        super().__init__(eta, min_level)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.seed = int(seed)
        self.algorithm = PeerChooses(self)
        self._codec: JointActionCodec | None = None

    def bind(self, fidelity: Fidelity) -> None:
        codec, self._codec = self._codec, None
        if codec is None:
            raise ValueError(f"{self.name} chooses its own children: run it with its own placeholder algorithm, "
                             f"run(peer.algorithm, env, budget, scheduler=peer)")
        self.fidelity, self.codec = fidelity, codec
        self.lowest = 0 if self.min_level is None else nearest_level(fidelity, self.min_level)
        if self.min_level is not None and self.min_level > fidelity.levels[-1]:
            raise ValueError(f"min_level {self.min_level} is above the full training ({fidelity.levels[-1]} "
                             f"{fidelity.unit})")
        self.unit = float(fidelity.levels[self.lowest])
        self.max_resource = max(1, round(fidelity.levels[-1] / self.unit))
        self.names = [f"{a}.{j}" for a, size in zip(codec.agents, codec.sizes) for j in range(size)]
        self._np_state = np.random.RandomState(self.seed).get_state()
        self._start(require(self.package, self.extra))

    def _start(self, library: Any) -> None:
        raise NotImplementedError

    def ladder(self) -> list[tuple[int, int]]:
        """``(level index, library resource)`` of the rungs ``eta ** k`` below the maximum resource, and the
        maximum: each at the level nearest to it (several rungs at one level: the highest)."""
        nominal, r = [], 1.0
        while r < self.max_resource:
            nominal.append(round(r))
            r *= self.eta
        out: dict[int, int] = {}
        for v in [*nominal, self.max_resource]:
            out[max(self.lowest, nearest_level(self.fidelity, v * self.unit))] = v
        out[self.fidelity.top] = self.max_resource
        return sorted(out.items())

    def _row(self, config: Mapping[str, Any]) -> tuple[int, ...]:
        return tuple(int(config[n]) for n in self.names)

    @contextlib.contextmanager
    def _own_rng(self) -> Iterator[None]:
        """The global NumPy RNG is the peer's own while the library runs; the caller's is restored after."""
        outer = np.random.get_state()
        np.random.set_state(self._np_state)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # BOHB's KDE: statsmodels divide-by-zero
                warnings.filterwarnings("ignore", "After 0.17", FutureWarning)  # pandas, from BOHB's sampling
                yield
        finally:
            self._np_state = np.random.get_state()
            np.random.set_state(outer)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "seed": self.seed}


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Silence one library logger for a moment: syne-tune warns about an argument its own baselines pass,
    SMAC each time its acquisition finds no new configuration of a small discrete space and samples one."""
    log = logging.getLogger(logger)
    before, log.disabled = log.disabled, True
    try:
        yield
    finally:
        log.disabled = before


class _StoppingPeer(Peer):
    """A peer whose library starts children and decides, at each rung, whether one goes on (Optuna's
    pruners, syne-tune's stopping ASHA). A continuing child is served before a new one is started.
    ``variant`` picks the library's method (one of ``variants``); the peer's name is ``{prefix}-{variant}``."""

    prefix, variants = "", ()

    def __init__(self, seed: int = 0, eta: float = 3, min_level: float | None = None, variant: str = "") -> None:
        super().__init__(seed, eta, min_level)
        if variant not in self.variants:
            raise ValueError(f"{type(self).__name__} variant must be one of {list(self.variants)}, got {variant!r}")
        self.variant = variant
        self.name = self.algorithm.name = f"{self.prefix}-{variant}"

    def config(self) -> dict[str, Any]:
        return {**super().config(), "variant": self.variant}

    def _start(self, library: Any) -> None:
        self.rungs = tuple(level for level, _ in self.ladder())
        self._resource = dict(self.ladder())
        self._open: dict[int, Any] = {}       # library trial handles by our tag
        self._continue: list[Job] = []
        self._tags = 0

    def next_job(self, can_start: bool) -> Job | None:
        if self._continue:
            return self._continue.pop(0)
        if not can_start:
            return None
        with self._own_rng():
            handle, config = self._ask()
        if handle is None:
            return None
        tag, self._tags = self._tags, self._tags + 1
        self._open[tag] = handle
        return Job(-1, self.rungs[0], bracket=tag, row=self._row(config))

    def on_result(self, job: Job, child: int, score: float) -> None:
        handle = self._open[job.bracket]
        with self._own_rng():
            goes_on = self._tell(handle, self._resource[job.level], float(score))
        if goes_on and job.level != self.fidelity.top:
            self._continue.append(Job(child, self.rungs[self.rungs.index(job.level) + 1], job.level, job.bracket))
        else:
            del self._open[job.bracket]

    def _ask(self) -> tuple[Any, Mapping[str, Any] | None]:
        """A new library trial and its configuration (``(None, None)``: the library has none to give)."""
        raise NotImplementedError

    def _tell(self, handle: Any, resource: int, score: float) -> bool:
        """Report ``score`` at ``resource``; whether the child goes on (always ``False`` at the maximum)."""
        raise NotImplementedError


class OptunaPeer(_StoppingPeer):
    """Optuna's TPE with its ``HyperbandPruner`` (``variant="hyperband"``) or ``SuccessiveHalvingPruner``
    (``"sh"``): module docstring."""

    package, extra, prefix, variants = "optuna", "optuna", "optuna", ("hyperband", "sh")

    def _start(self, optuna: Any) -> None:
        super()._start(optuna)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if self.variant == "hyperband":
            pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=self.max_resource,
                                                    reduction_factor=self.eta)
        else:
            pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=self.eta)
        # a fixed study name: Optuna's Hyperband assigns trials to brackets by a hash of it
        self.study = optuna.create_study(study_name=f"ma2ml-{self.name}-{self.seed}", direction="maximize",
                                         sampler=optuna.samplers.TPESampler(seed=self.seed), pruner=pruner)
        self._space = {n: optuna.distributions.CategoricalDistribution(list(range(int(k))))
                       for n, k in zip(self.names, self.codec.nvec)}
        self._pruned = optuna.trial.TrialState.PRUNED

    def _ask(self) -> tuple[Any, Mapping[str, Any]]:
        trial = self.study.ask(self._space)
        return trial, trial.params

    def _tell(self, trial: Any, resource: int, score: float) -> bool:
        trial.report(score, step=resource)
        if resource >= self.max_resource:
            self.study.tell(trial, score)
            return False
        if trial.should_prune():
            self.study.tell(trial, state=self._pruned)
            return False
        return True


class SynePeer(_StoppingPeer):
    """syne-tune's ``ASHA`` (``variant="asha"``) or ``BOHB`` (``"bohb"``): module docstring."""

    package, extra, prefix, variants = "syne_tune.optimizer.baselines", "syne-tune", "syne", ("asha", "bohb")

    def _start(self, baselines: Any) -> None:
        super()._start(baselines)
        from syne_tune.backend.trial_status import Trial
        from syne_tune.config_space import choice
        from syne_tune.optimizer.scheduler import SchedulerDecision

        self._trial_class, self._stop = Trial, SchedulerDecision.STOP
        space = {n: choice(list(range(int(k)))) for n, k in zip(self.names, self.codec.nvec)}
        cls = baselines.ASHA if self.variant == "asha" else baselines.BOHB
        with self._own_rng(), _quiet("syne_tune.optimizer.schedulers.searchers.last_value_multi_fidelity_searcher"):
            self.sched = cls(config_space=space, metric="score", do_minimize=False, time_attr="resource",
                             max_t=self.max_resource, grace_period=1, reduction_factor=self.eta,
                             random_seed=self.seed)
        self._ids = 0

    def _ask(self) -> tuple[Any, Mapping[str, Any] | None]:
        suggestion = self.sched.suggest()
        if suggestion is None:
            return None, None
        # a fixed creation time: nothing here may depend on the wall clock
        trial = self._trial_class(trial_id=self._ids, config=suggestion.config,
                                  creation_time=datetime(2000, 1, 1, tzinfo=timezone.utc))
        self._ids += 1
        self.sched.on_trial_add(trial=trial)
        return trial, suggestion.config

    def _tell(self, trial: Any, resource: int, score: float) -> bool:
        decision = self.sched.on_trial_result(trial=trial, result={"score": score, "resource": resource})
        if decision == self._stop or resource >= self.max_resource:
            self.sched.on_trial_remove(trial=trial)
            return False
        return True


class SmacPeer(Peer):
    """SMAC3's ``MultiFidelityFacade`` (module docstring). SMAC asks for (configuration, budget): a
    configuration that already has a child below that budget continues it; one whose result at that level
    is known is told it at once; otherwise a new child starts at that level.

    Args:
        n_trials: SMAC's ``Scenario.n_trials`` (sizes its initial design; the search's own budget stops it).
        challengers: random configurations its acquisition maximiser scores per ask (SMAC's default 10,000;
            most of SMAC's time goes there: the benchmark uses 1,000 and says so).
    """

    package, extra, name = "smac", "smac", "smac-mf"

    def __init__(self, seed: int = 0, eta: float = 3, min_level: float | None = None,
                 n_trials: int = 1000, challengers: int = 10_000) -> None:
        super().__init__(seed, eta, min_level)
        for label, v in (("n_trials", n_trials), ("challengers", challengers)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{label} must be a positive integer, got {v!r}")
        self.n_trials, self.challengers = n_trials, challengers

    def _start(self, smac: Any) -> None:
        from ConfigSpace import Categorical, ConfigurationSpace
        from smac.runhistory.dataclasses import TrialValue

        self._value = TrialValue
        space = ConfigurationSpace(seed=self.seed)
        space.add([Categorical(n, list(range(int(k)))) for n, k in zip(self.names, self.codec.nvec)])
        levels = self.fidelity.levels
        with tempfile.TemporaryDirectory(prefix="ma2ml-smac-") as folder, self._own_rng():
            scenario = smac.Scenario(space, deterministic=True, n_trials=self.n_trials, seed=self.seed,
                                     min_budget=float(levels[self.lowest]), max_budget=float(levels[-1]),
                                     output_directory=Path(folder))
            intensifier = smac.MultiFidelityFacade.get_intensifier(scenario, eta=self.eta)
            # SMAC saves its scenario here once, when built; tell(save=False) never writes after
            maximiser = smac.MultiFidelityFacade.get_acquisition_maximizer(scenario, challengers=self.challengers)
            self.smac = smac.MultiFidelityFacade(scenario, None, intensifier=intensifier, overwrite=True,
                                                 acquisition_maximizer=maximiser, logging_level=False)
        self._asked: dict[int, Any] = {}                     # SMAC's trial info by our tag
        self._children: dict[tuple[int, ...], int] = {}      # the latest child of each row
        self._scores: dict[int, dict[int, float]] = {}       # child -> level -> score
        self._busy: set[int] = set()
        self._tags = 0

    def next_job(self, can_start: bool) -> Job | None:
        if not can_start:
            return None
        for _ in range(10_000):
            with self._own_rng(), _quiet("smac.main.config_selector"):  # "sampling random configurations"
                info = self.smac.ask()
            row, level = self._row(info.config), max(self.lowest, nearest_level(self.fidelity, info.budget))
            child = self._children.get(row)
            scores = self._scores.get(child, {}) if child is not None and child not in self._busy else {}
            if level in scores:  # this level is known: tell SMAC at once
                with self._own_rng():
                    self.smac.tell(info, self._value(cost=-scores[level]), save=False)
                continue
            tag, self._tags = self._tags, self._tags + 1
            self._asked[tag] = info
            below = [lv for lv in scores if lv < level]
            if below and max(below) == max(scores):
                self._busy.add(child)
                return Job(child, level, max(below), tag)
            return Job(-1, level, bracket=tag, row=row)
        raise RuntimeError("SMAC asked 10000 times for configurations whose results it already has")

    def on_result(self, job: Job, child: int, score: float) -> None:
        info = self._asked.pop(job.bracket)
        self._busy.discard(child)
        self._children[self._row(info.config)] = child
        self._scores.setdefault(child, {})[job.level] = float(score)
        with self._own_rng():
            self.smac.tell(info, self._value(cost=-float(score)), save=False)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "n_trials": self.n_trials, "challengers": self.challengers}


#: The peers by name: (class, fixed arguments).
PEERS: dict[str, tuple[type[Peer], dict[str, Any]]] = {
    "optuna-hyperband": (OptunaPeer, {"variant": "hyperband"}),
    "optuna-sh": (OptunaPeer, {"variant": "sh"}),
    "syne-asha": (SynePeer, {"variant": "asha"}),
    "syne-bohb": (SynePeer, {"variant": "bohb"}),
    "smac-mf": (SmacPeer, {}),
}


def make_peer(name: str, seed: int = 0, **kwargs: Any) -> Peer:
    """A peer by name (:data:`PEERS`), seeded with ``seed``, with its arguments (``eta``, ``min_level``;
    ``n_trials`` for ``smac-mf``). Run it with ``run(peer.algorithm, env, budget, scheduler=peer)``."""
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; use one of {sorted(PEERS)}")
    cls, fixed = PEERS[name]
    return cls(seed, **kwargs, **fixed)
