r"""Baseline search algorithms, all behind the one :class:`~agents.base.SearchAlgorithm` interface.

=================  ==================================================================================
name               algorithm
=================  ==================================================================================
``random``         :class:`RandomSearch`: uniform joint actions.
``evolution``      :class:`RegularizedEvolution`: aging evolution with tournament selection (Real
                   et al. 2019), one decision mutated per child.
``tpe``            :class:`OptunaTPE`: Optuna's Tree-structured Parzen Estimator over the joint space
                   (one categorical parameter per decision of every agent), ask/tell API.
``ppo``, ``a2c``   :class:`SB3Agent`: stable-baselines3's PPO / A2C (the library's own ``train()``)
                   as one agent choosing the whole joint action (the joint ``MultiDiscrete`` view).
``independent``    :class:`IndependentLearners`: one learner per agent on the shared reward, no
                   critic, no credit assignment (Claus & Boutilier 1998's independent learners).
``separate``       :class:`ModuleByModule`: the paper's "separate" ablation: one module at a time
                   with the others fixed to the best pipeline so far, cycling through the modules.
=================  ==================================================================================

Two more baselines have modules of their own: ``local-search`` (:mod:`agents.local_search`, White et al.
2021's local search) and ``gp`` (:mod:`agents.gp`, Optuna's Gaussian-process BO, on the ask/tell part
shared with ``tpe``).

Every algorithm is seeded by ``setup(action_spaces, seed)`` and draws randomness only from its own
generators, so the same seed gives the same trials whatever else runs in the process. Each takes a
frozen, validated config dataclass (``Algo(Config(...))`` or ``Algo(field=value)``), and
``state_dict()`` / ``load_state_dict()`` resume a search exactly.

Optional dependencies (Optuna, stable-baselines3) are imported when the algorithm is set up; when
missing, the error names the ``pip install "ma2ml[extra]"`` command.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib
import math
import pickle
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import gymnasium
import numpy as np

from agents.base import JointAction, SearchAlgorithm, torch_threads

__all__ = [
    "EvolutionConfig",
    "IndependentConfig",
    "IndependentLearners",
    "ModuleByModule",
    "ModuleByModuleConfig",
    "OptunaTPE",
    "RandomSearch",
    "RegularizedEvolution",
    "SB3Agent",
    "SB3Config",
    "TPEConfig",
    "require",
]


# ---------------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------------
def require(module: str, extra: str) -> Any:
    """Import an optional dependency, or raise ``ImportError`` with the exact install command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"this algorithm needs the optional dependency {module.split('.')[0]!r}, which is not installed; "
            f'install it with: pip install "ma2ml[{extra}]"'
        ) from exc


def _check_config(config_cls: type, config: Any, overrides: Mapping[str, Any]) -> Any:
    """``config`` (default ``config_cls()``) with ``overrides`` replaced; unknown names raise ``ValueError``."""
    if config is None:
        config = config_cls()
    if not isinstance(config, config_cls):
        raise TypeError(f"config must be a {config_cls.__name__}, got {type(config).__name__}")
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown {config_cls.__name__} field(s) {unknown}; valid fields are {sorted(names)}")
    return dataclasses.replace(config, **overrides) if overrides else config


def _positive_int(owner: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{owner}.{name} must be a positive integer, got {value!r}")


def _boolean(owner: str, name: str, value: Any) -> None:
    if type(value) not in (bool, np.bool_):
        raise ValueError(f"{owner}.{name} must be True or False, got {value!r}")


def _in_range(owner: str, name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False,
              hi_open: bool = False) -> None:
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool) \
        and math.isfinite(value) and (value > lo if lo_open else value >= lo) \
        and (value < hi if hi_open else value <= hi)
    if not ok:
        lb, rb = ("(" if lo_open else "["), (")" if hi_open else "]")
        raise ValueError(f"{owner}.{name} must be a number in {lb}{lo}, {hi}{rb}, got {value!r}")


def _choice(owner: str, name: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{owner}.{name} must be one of {list(allowed)}, got {value!r}")


class _Layout:
    """The joint action space flattened into decisions (``Discrete`` = one decision, ``MultiDiscrete`` =
    one per entry), in agent order: ``nvec[d]`` choices for decision ``d``; ``agent_of[d]`` its agent."""

    def __init__(self, action_spaces: Mapping[str, gymnasium.Space]) -> None:
        self.agents = tuple(action_spaces)
        nvec, start, slices, discrete, agent_of = [], [], {}, {}, []
        for i, (agent, space) in enumerate(action_spaces.items()):
            lo = len(nvec)
            if isinstance(space, gymnasium.spaces.Discrete):
                nvec.append(int(space.n))
                start.append(int(space.start))
                discrete[agent] = True
            else:
                n = np.asarray(space.nvec)
                if n.ndim != 1:
                    raise TypeError(f"agent {agent!r}: only 1-d MultiDiscrete spaces are supported, got {n.shape}")
                nvec.extend(int(v) for v in n)
                start.extend(int(v) for v in np.broadcast_to(np.asarray(space.start), n.shape))
                discrete[agent] = False
            slices[agent] = slice(lo, len(nvec))
            agent_of.extend([i] * (len(nvec) - lo))
        self.nvec = np.array(nvec, dtype=np.int64)
        self.start = np.array(start, dtype=np.int64)
        self.slices = slices
        self.discrete = discrete
        self.agent_of = np.array(agent_of, dtype=np.int64)
        self.size = len(nvec)

    def to_joint(self, idx: np.ndarray) -> JointAction:
        """Decision indices (``[D]``, 0-based) -> ``{agent: action}``."""
        vals = np.asarray(idx, dtype=np.int64) + self.start
        return {a: (np.int64(vals[s][0]) if self.discrete[a] else vals[s].copy()) for a, s in self.slices.items()}

    def to_index(self, action: Mapping[str, Any]) -> np.ndarray:
        """``{agent: action}`` -> decision indices ``[D]`` (0-based)."""
        flat = np.concatenate([np.atleast_1d(np.asarray(action[a], dtype=np.int64)) for a in self.agents])
        return flat - self.start

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` uniform decision-index vectors ``[n, D]``."""
        return (rng.random((n, self.size)) * self.nvec).astype(np.int64)


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return copy.deepcopy(rng.bit_generator.state)


def _load_rng(state: Mapping[str, Any]) -> np.random.Generator:
    rng = np.random.default_rng()
    rng.bit_generator.state = copy.deepcopy(dict(state))
    return rng


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max())
    return z / z.sum()


# ---------------------------------------------------------------------------------------------------
# Random search
# ---------------------------------------------------------------------------------------------------
class RandomSearch(SearchAlgorithm):
    """Uniform random joint actions: every decision of every agent drawn independently and uniformly.

    The reference every learned searcher must beat at equal evaluations (DESIGN.md section 6).
    """

    name = "random"

    def setup(self, action_spaces: Mapping[str, gymnasium.Space], seed: int) -> None:
        super().setup(action_spaces, seed)
        self.layout = _Layout(action_spaces)
        self.rng = np.random.default_rng(seed)

    def propose(self, n: int) -> list[JointAction]:
        return [self.layout.to_joint(x) for x in self.layout.sample(self.rng, n)]

    def observe(self, actions: Sequence[JointAction], scores: Sequence[float]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {"rng": _rng_state(self.rng)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rng = _load_rng(state["rng"])


# ---------------------------------------------------------------------------------------------------
# Regularised evolution
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvolutionConfig:
    """Hyper-parameters of :class:`RegularizedEvolution` (defaults: the NAS-Bench-201 reference runs)."""

    population_size: int = 10
    """Joint actions kept alive; the first ``population_size`` proposals are uniform random."""

    tournament_size: int = 3
    """Members drawn (without replacement) per tournament; the best of them is the parent."""

    mutations: int = 1
    """Decisions of the parent changed per child, each to a different value drawn uniformly."""

    def __post_init__(self) -> None:
        _positive_int("EvolutionConfig", "population_size", self.population_size)
        _positive_int("EvolutionConfig", "tournament_size", self.tournament_size)
        _positive_int("EvolutionConfig", "mutations", self.mutations)
        if self.tournament_size > self.population_size:
            raise ValueError(f"EvolutionConfig.tournament_size ({self.tournament_size}) must be <= population_size "
                             f"({self.population_size})")


class RegularizedEvolution(SearchAlgorithm):
    """Regularised ("aging") evolution (Real et al. 2019) over the joint action.

    The population holds the ``population_size`` most recently observed joint actions. A child is the
    winner of a tournament of ``tournament_size`` random members with ``mutations`` of its decisions
    changed to another value; each observed child joins the population and the oldest member leaves.
    Until the population is full, proposals are uniform random. Decisions with a single choice are never
    mutated.

    Args:
        config: an :class:`EvolutionConfig`; or its fields as keyword arguments.
    """

    name = "evolution"

    def __init__(self, config: EvolutionConfig | None = None, **overrides: Any) -> None:
        self.config = _check_config(EvolutionConfig, config, overrides)

    def setup(self, action_spaces: Mapping[str, gymnasium.Space], seed: int) -> None:
        super().setup(action_spaces, seed)
        self.layout = _Layout(action_spaces)
        self.rng = np.random.default_rng(seed)
        self.population: deque[tuple[np.ndarray, float]] = deque(maxlen=self.config.population_size)
        self.proposed = 0
        self._mutable = np.flatnonzero(self.layout.nvec > 1)

    def propose(self, n: int) -> list[JointAction]:
        lay, cfg, rng = self.layout, self.config, self.rng
        out = []
        for _ in range(n):
            if self.proposed < cfg.population_size or len(self.population) < cfg.tournament_size:
                x = lay.sample(rng, 1)[0]
            else:
                members = rng.choice(len(self.population), size=cfg.tournament_size, replace=False)
                x = max((self.population[int(i)] for i in members), key=lambda m: m[1])[0].copy()
                k = min(cfg.mutations, self._mutable.size)
                for d in rng.choice(self._mutable, size=k, replace=False):
                    shift = 1 + int(rng.integers(lay.nvec[d] - 1))  # a different value, uniformly
                    x[d] = (x[d] + shift) % lay.nvec[d]
            self.proposed += 1
            out.append(lay.to_joint(x))
        return out

    def observe(self, actions: Sequence[JointAction], scores: Sequence[float]) -> None:
        for a, sc in zip(actions, scores):
            self.population.append((self.layout.to_index(a), float(sc) if math.isfinite(sc) else -math.inf))

    def state_dict(self) -> dict[str, Any]:
        return {"population": [(x.tolist(), s) for x, s in self.population], "proposed": self.proposed,
                "rng": _rng_state(self.rng)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.population = deque(((np.array(x, dtype=np.int64), float(s)) for x, s in state["population"]),
                                maxlen=self.config.population_size)
        self.proposed = int(state["proposed"])
        self.rng = _load_rng(state["rng"])


# ---------------------------------------------------------------------------------------------------
# Optuna TPE
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TPEConfig:
    """Hyper-parameters of :class:`OptunaTPE` (passed to ``optuna.samplers.TPESampler``)."""

    n_startup_trials: int = 10
    """Random trials before TPE starts modelling."""

    multivariate: bool = True
    """Model the joint density of all decisions (Optuna's multivariate TPE) rather than one per decision."""

    constant_liar: bool = True
    """Treat proposed-but-unobserved trials of the same batch as bad, so a batch is diverse."""

    n_ei_candidates: int = 24
    """Candidates drawn from the "good" density; the one with the best expected improvement is proposed."""

    def __post_init__(self) -> None:
        _positive_int("TPEConfig", "n_startup_trials", self.n_startup_trials)
        _positive_int("TPEConfig", "n_ei_candidates", self.n_ei_candidates)


class _OptunaAskTell(SearchAlgorithm):
    """An Optuna sampler over the joint space, through Optuna's ask-and-tell interface (the part
    :class:`OptunaTPE` and :class:`agents.gp.GPBO` share; a subclass builds the sampler in
    :meth:`_sampler`).

    Every decision ``j`` of agent ``i`` is one categorical parameter named ``"{agent}.{j}"`` (choices
    ``0..n_ij-1``: choice tables are not all ordered, so categorical is the safe reading). ``propose(n)``
    asks ``n`` trials (they stay RUNNING, so a sampler that looks at running trials spreads the batch);
    ``observe`` tells them in the same order. A joint action that was not proposed (e.g. a warm start) is
    added as a finished trial instead.
    """

    def _sampler(self, optuna: Any, seed: int) -> Any:
        """The ``optuna.samplers`` sampler, seeded with ``seed``."""
        raise NotImplementedError

    def setup(self, action_spaces: Mapping[str, gymnasium.Space], seed: int) -> None:
        super().setup(action_spaces, seed)
        optuna = require("optuna", "optuna")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.layout = _Layout(action_spaces)
        self.param_names = [
            f"{a}.{j}" for a, s in self.layout.slices.items() for j in range(s.stop - s.start)
        ]
        self.study = optuna.create_study(direction="maximize", sampler=self._sampler(optuna, int(seed)))
        self._distributions = {
            name: optuna.distributions.CategoricalDistribution(list(range(int(n))))
            for name, n in zip(self.param_names, self.layout.nvec)
        }
        self._pending: deque[tuple[int, tuple[int, ...]]] = deque()  # (trial number, decision indices)

    def propose(self, n: int) -> list[JointAction]:
        out = []
        for _ in range(n):
            trial = self.study.ask(self._distributions)
            idx = np.array([trial.params[p] for p in self.param_names], dtype=np.int64)
            self._pending.append((trial.number, tuple(idx.tolist())))
            out.append(self.layout.to_joint(idx))
        return out

    def observe(self, actions: Sequence[JointAction], scores: Sequence[float]) -> None:
        import optuna

        for action, score in zip(actions, scores):
            idx = tuple(self.layout.to_index(action).tolist())
            match = next((k for k, (_, key) in enumerate(self._pending) if key == idx), None)
            value = float(score) if math.isfinite(score) else None
            if match is not None:
                number, _ = self._pending[match]
                del self._pending[match]
                if value is None:
                    self.study.tell(number, state=optuna.trial.TrialState.FAIL)
                else:
                    self.study.tell(number, value)
            elif value is not None:
                self.study.add_trial(optuna.trial.create_trial(
                    params=dict(zip(self.param_names, idx)), distributions=self._distributions, value=value,
                ))

    def state_dict(self) -> dict[str, Any]:
        # The in-memory study (finished and still-running trials, the sampler's RNG) pickles whole; proposed
        # trials not yet observed stay RUNNING in it and are told by number after loading.
        return {"study": pickle.dumps(self.study), "pending": list(self._pending)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.study = pickle.loads(state["study"])
        self._pending = deque((int(n), tuple(k)) for n, k in state.get("pending", ()))


class OptunaTPE(_OptunaAskTell):
    """Optuna's TPE sampler over the joint space, through Optuna's ask-and-tell interface.

    One categorical parameter per decision of every agent (see :class:`_OptunaAskTell`); with
    ``constant_liar`` the pending trials of a batch repel each other. A joint action that was not
    proposed (e.g. a warm start) is added as a finished trial.

    Args:
        config: a :class:`TPEConfig`; or its fields as keyword arguments.
    """

    name = "tpe"

    def __init__(self, config: TPEConfig | None = None, **overrides: Any) -> None:
        self.config = _check_config(TPEConfig, config, overrides)

    def _sampler(self, optuna: Any, seed: int) -> Any:
        cfg = self.config
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=cfg.n_startup_trials, multivariate=cfg.multivariate,
            constant_liar=cfg.constant_liar, n_ei_candidates=cfg.n_ei_candidates,
        )


# ---------------------------------------------------------------------------------------------------
# stable-baselines3 PPO / A2C
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SB3Config:
    """Hyper-parameters of :class:`SB3Agent`. Fields other than ``algo`` and ``n_steps`` go to the SB3
    constructor; ``model_kwargs`` passes any other constructor argument (e.g. ``{"max_grad_norm": 1}``)."""

    algo: Literal["ppo", "a2c"] = "ppo"
    """Which stable-baselines3 algorithm."""

    n_steps: int = 16
    """Evaluations per policy update (SB3's rollout length): after every ``n_steps`` observed rewards the
    rollout buffer is filled with them and SB3's own ``train()`` runs once."""

    learning_rate: float = 1e-2
    """Optimizer step size (SB3's defaults, 3e-4 / 7e-4, are tuned for long RL runs, not a few hundred
    evaluations)."""

    batch_size: int = 16
    """PPO mini-batch size (PPO only)."""

    n_epochs: int = 10
    """PPO passes over each rollout (PPO only)."""

    clip_range: float = 0.2
    """PPO's clipping of the probability ratio (PPO only)."""

    ent_coef: float = 0.0
    """Entropy bonus coefficient."""

    normalize_advantage: bool = True
    """Standardise advantages within each mini-batch (PPO) / rollout (A2C)."""

    net_arch: tuple[int, ...] = (64,)
    """Hidden layer sizes of the policy and value networks."""

    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """More keyword arguments of ``PPO(...)`` / ``A2C(...)``."""

    torch_threads: int | None = 1
    """torch threads while SB3's small networks run (``propose`` and the update); the process-wide setting
    is restored afterwards. Thread start-up dominates such tiny networks (one thread was 10x faster than
    two on a busy 2-core machine). ``None``: leave torch's setting."""

    def __post_init__(self) -> None:
        _choice("SB3Config", "algo", self.algo, ("ppo", "a2c"))
        _positive_int("SB3Config", "n_steps", self.n_steps)
        _positive_int("SB3Config", "batch_size", self.batch_size)
        _positive_int("SB3Config", "n_epochs", self.n_epochs)
        _in_range("SB3Config", "learning_rate", self.learning_rate, 0.0, math.inf, lo_open=True, hi_open=True)
        _in_range("SB3Config", "clip_range", self.clip_range, 0.0, 1.0, lo_open=True)
        _in_range("SB3Config", "ent_coef", self.ent_coef, 0.0, math.inf, hi_open=True)
        if self.torch_threads is not None:
            _positive_int("SB3Config", "torch_threads", self.torch_threads)
        object.__setattr__(self, "net_arch", tuple(self.net_arch))
        if not self.net_arch or not all(isinstance(h, int) and h > 0 for h in self.net_arch):
            raise ValueError(f"SB3Config.net_arch must be a non-empty sequence of positive ints, got {self.net_arch!r}")
        if not isinstance(self.model_kwargs, Mapping):
            raise TypeError(f"SB3Config.model_kwargs must be a mapping, got {type(self.model_kwargs).__name__}")
        clash = sorted(set(self.model_kwargs) & {"policy", "env", "seed", "device", "n_steps", "verbose"})
        if clash:
            raise ValueError(f"SB3Config.model_kwargs may not set {clash}: they are fixed by SB3Agent")


class _BanditEnv(gymnasium.Env):
    """The env SB3 is built on: one step per episode, a constant observation, the joint ``MultiDiscrete``.
    Its ``step`` is never called: rewards come from :meth:`SearchAlgorithm.observe`."""

    def __init__(self, nvec: np.ndarray) -> None:
        self.observation_space = gymnasium.spaces.Box(0.0, 1.0, (1,), np.float32)
        self.action_space = gymnasium.spaces.MultiDiscrete(nvec)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return np.ones(1, np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:  # pragma: no cover
        raise RuntimeError("SB3Agent drives SB3 by propose/observe; the env is never stepped")


class SB3Agent(SearchAlgorithm):
    """stable-baselines3's PPO or A2C as one agent choosing the whole joint action.

    SB3 drives its own environment loop in ``learn()``, but here the loop belongs to the search
    (``propose`` -> batch evaluation -> ``observe``). Rather than run ``learn()`` in a background thread
    fed through queues (a second thread of control, hard to make deterministic or to checkpoint), this
    class uses SB3's pieces directly, which is what ``learn()`` does inside:

    * ``propose(n)``: the SB3 policy's action distribution for the (constant) observation, sampled with
      this algorithm's own ``torch.Generator``; the policy's value estimate and log-probabilities are
      kept with each action;
    * ``observe``: the rewards are queued; every ``n_steps`` of them fill SB3's ``RolloutBuffer`` (each
      evaluation is a one-step episode: ``done=True``, so the advantage is ``r - V``), and SB3's own
      ``model.train()`` runs: PPO's clipped surrogate epochs or A2C's single step, unchanged.

    The observation is constant: a pipeline is a one-step episode and the problem is state-less (DESIGN.md
    section 1). ``model.train()`` draws mini-batch permutations from NumPy's global RNG; it runs under a
    global seed drawn from this algorithm's RNG (and the previous global state is restored), so runs are
    reproducible whatever else uses the global RNGs.

    Args:
        config: an :class:`SB3Config`; or its fields as keyword arguments (e.g. ``SB3Agent(algo="a2c")``).
    """

    def __init__(self, config: SB3Config | None = None, **overrides: Any) -> None:
        self.config = _check_config(SB3Config, config, overrides)
        self.name = self.config.algo

    def setup(self, action_spaces: Mapping[str, gymnasium.Space], seed: int) -> None:
        super().setup(action_spaces, seed)
        sb3 = require("stable_baselines3", "sb3")
        import torch
        from stable_baselines3.common.logger import configure

        cfg = self.config
        self.layout = _Layout(action_spaces)
        self.rng = np.random.default_rng(seed)
        self.torch_gen = torch.Generator().manual_seed(int(seed))
        env = _BanditEnv(self.layout.nvec)
        kwargs: dict[str, Any] = {
            "learning_rate": cfg.learning_rate, "n_steps": cfg.n_steps, "ent_coef": cfg.ent_coef, "gamma": 1.0,
            "gae_lambda": 1.0, "normalize_advantage": cfg.normalize_advantage,
            "policy_kwargs": {"net_arch": list(cfg.net_arch)},
        }
        if cfg.algo == "ppo":
            kwargs.update(batch_size=cfg.batch_size, n_epochs=cfg.n_epochs, clip_range=cfg.clip_range)
        kwargs.update(cfg.model_kwargs)
        cls = {"ppo": sb3.PPO, "a2c": sb3.A2C}[cfg.algo]
        with self._global_seed():  # network initialisation uses torch's global RNG
            self.model = cls("MlpPolicy", env, seed=None, device="cpu", verbose=0, **kwargs)
        self.model.set_logger(configure(None, []))
        self._obs = torch.ones((1, 1), dtype=torch.float32)
        self._proposed: deque[tuple[tuple[int, ...], float, float]] = deque()  # (idx, value, log_prob)
        self._ready: list[tuple[np.ndarray, float, float, float]] = []  # (idx, reward, value, log_prob)
        self.updates = 0

    def _threads(self) -> contextlib.AbstractContextManager[None]:
        return torch_threads(self.config.torch_threads)

    @contextlib.contextmanager
    def _global_seed(self) -> Iterator[None]:
        """Run SB3 code that uses the global NumPy/torch RNGs under a seed from this algorithm's RNG."""
        import torch

        s = int(self.rng.integers(2**31 - 1))
        np_state = np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            np.random.seed(s)
            try:
                yield
            finally:
                np.random.set_state(np_state)

    def propose(self, n: int) -> list[JointAction]:
        import torch

        policy = self.model.policy
        with torch.no_grad(), self._threads():
            obs = self._obs.expand(n, -1)
            dist = policy.get_distribution(obs)
            probs = torch.cat([d.probs for d in dist.distribution], dim=1)  # [n, sum nvec]
            sections = self.layout.nvec.tolist()
            cols = [torch.multinomial(p, 1, generator=self.torch_gen) for p in torch.split(probs, sections, dim=1)]
            actions = torch.cat(cols, dim=1)
            log_probs = dist.log_prob(actions)
            values = policy.predict_values(obs).flatten()
        idx = actions.numpy().astype(np.int64)
        for x, v, lp in zip(idx, values.tolist(), log_probs.tolist()):
            self._proposed.append((tuple(x.tolist()), v, lp))
        return [self.layout.to_joint(x) for x in idx]

    def observe(self, actions: Sequence[JointAction], scores: Sequence[float]) -> None:
        import torch

        for action, score in zip(actions, scores):
            idx = self.layout.to_index(action)
            key = tuple(idx.tolist())
            k = next((k for k, p in enumerate(self._proposed) if p[0] == key), None)
            if k is not None:
                _, value, log_prob = self._proposed[k]
                del self._proposed[k]
            else:  # not proposed by this policy (e.g. a warm start): evaluate it under the current policy
                with torch.no_grad():
                    a = torch.as_tensor(idx[None])
                    v, lp, _ = self.model.policy.evaluate_actions(self._obs, a)
                value, log_prob = float(v.flatten()[0]), float(lp.flatten()[0])
            self._ready.append((idx, float(score), value, log_prob))
        while len(self._ready) >= self.config.n_steps:
            batch, self._ready = self._ready[: self.config.n_steps], self._ready[self.config.n_steps:]
            self._train(batch)

    def _train(self, batch: list[tuple[np.ndarray, float, float, float]]) -> None:
        """Fill SB3's rollout buffer with one-step episodes and run SB3's own ``train()``."""
        import torch

        buf = self.model.rollout_buffer
        buf.reset()
        obs = np.ones((1, 1), np.float32)
        for idx, reward, value, log_prob in batch:
            buf.add(obs, idx[None].copy(), np.array([reward], np.float32), np.ones(1, np.float32),
                    torch.tensor([value]), torch.tensor([log_prob]))
        # every step ends its episode: advantage = r - V(s), return = r
        buf.compute_returns_and_advantage(last_values=torch.zeros(1), dones=np.ones(1, np.float32))
        with self._global_seed(), self._threads():
            self.model.train()
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "policy": copy.deepcopy(self.model.policy.state_dict()),
            "optimizer": copy.deepcopy(self.model.policy.optimizer.state_dict()),
            "n_updates": self.model._n_updates,
            "ready": copy.deepcopy(self._ready),
            "proposed": list(self._proposed),
            "rng": _rng_state(self.rng),
            "torch_rng": self.torch_gen.get_state(),
            "updates": self.updates,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.policy.load_state_dict(state["policy"])
        self.model.policy.optimizer.load_state_dict(state["optimizer"])
        self.model._n_updates = state["n_updates"]
        self._ready = copy.deepcopy(list(state["ready"]))
        self._proposed = deque(state.get("proposed", ()))
        self.rng = _load_rng(state["rng"])
        self.torch_gen.set_state(state["torch_rng"])
        self.updates = state["updates"]


# ---------------------------------------------------------------------------------------------------
# Independent learners
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IndependentConfig:
    """Hyper-parameters of :class:`IndependentLearners`."""

    learner: Literal["reinforce", "q"] = "reinforce"
    """``"reinforce"``: each agent runs REINFORCE with its own moving-average baseline; ``"q"``: each agent
    keeps action-value estimates of its own choices (per decision) and explores by Boltzmann sampling
    (Claus & Boutilier's independent learners)."""

    lr: float = 1.0
    """REINFORCE step size on the logits (of the standardised advantage)."""

    baseline_decay: float = 0.9
    """REINFORCE: each agent's baseline ``b <- decay * b + (1 - decay) * mean reward of the round``."""

    temperature: float = 0.05
    """Q learner: initial Boltzmann temperature (in reward units)."""

    temperature_decay: float = 0.99
    """Q learner: the temperature is multiplied by this after every round."""

    min_temperature: float = 0.002
    """Q learner: the temperature's floor."""

    q_step: float = 0.0
    """Q learner: step size of the value update; 0 = sample averages (``1 / count``)."""

    exploration: float = 0.02
    """Probability, per decision, of a uniform choice instead of the learner's own."""

    def __post_init__(self) -> None:
        _choice("IndependentConfig", "learner", self.learner, ("reinforce", "q"))
        _in_range("IndependentConfig", "lr", self.lr, 0.0, math.inf, lo_open=True, hi_open=True)
        _in_range("IndependentConfig", "baseline_decay", self.baseline_decay, 0.0, 1.0, hi_open=True)
        _in_range("IndependentConfig", "temperature", self.temperature, 0.0, math.inf, lo_open=True, hi_open=True)
        _in_range("IndependentConfig", "temperature_decay", self.temperature_decay, 0.0, 1.0, lo_open=True)
        _in_range("IndependentConfig", "min_temperature", self.min_temperature, 0.0, math.inf, lo_open=True,
                  hi_open=True)
        _in_range("IndependentConfig", "q_step", self.q_step, 0.0, 1.0)
        _in_range("IndependentConfig", "exploration", self.exploration, 0.0, 1.0)


class IndependentLearners(SearchAlgorithm):
    """One learner per agent on the shared reward: no critic, no credit assignment, no communication.

    Each agent ``i`` sees only its own actions and the shared reward ``r``, and treats the other agents
    as part of the environment. Its policy factorises over its decisions ``j``:
    ``pi_i(a_i) = prod_j pi_ij(a_ij)``.

    * ``learner="reinforce"`` (default): ``theta_ij += lr * mean_b[(r - b_i) / sigma_i * (onehot(a_ij) - pi_ij)]``
      with ``b_i`` agent ``i``'s own moving-average baseline and ``sigma_i`` the round's reward spread
      (REINFORCE, Williams 1992, per agent).
    * ``learner="q"``: ``Q_ij(k) <- Q_ij(k) + alpha (r - Q_ij(k))`` for the chosen ``k`` (sample
      averages by default), ``pi_ij = softmax(Q_ij / T)`` with the temperature ``T`` annealed
      (independent learners, Claus & Boutilier 1998).

    Both mix ``exploration`` uniform probability into every decision.

    Args:
        config: an :class:`IndependentConfig`; or its fields as keyword arguments.
    """

    name = "independent"

    def __init__(self, config: IndependentConfig | None = None, **overrides: Any) -> None:
        self.config = _check_config(IndependentConfig, config, overrides)

    def setup(self, action_spaces: Mapping[str, gymnasium.Space], seed: int) -> None:
        super().setup(action_spaces, seed)
        lay = self.layout = _Layout(action_spaces)
        self.rng = np.random.default_rng(seed)
        self.params = [np.zeros(int(n)) for n in lay.nvec]  # logits (reinforce) or values (q), per decision
        self.counts = [np.zeros(int(n)) for n in lay.nvec]
        self.baselines = np.full(len(lay.agents), np.nan)
        self.temperature = self.config.temperature

    def _probs(self, d: int) -> np.ndarray:
        cfg = self.config
        x = self.params[d]
        if cfg.learner == "q":
            x = np.where(self.counts[d] > 0, x, x.max() if self.counts[d].any() else 0.0) / self.temperature
        p = _softmax(x)
        return (1 - cfg.exploration) * p + cfg.exploration / x.size

    def propose(self, n: int) -> list[JointAction]:
        lay = self.layout
        idx = np.empty((n, lay.size), dtype=np.int64)
        for d in range(lay.size):
            idx[:, d] = self.rng.choice(int(lay.nvec[d]), size=n, p=self._probs(d))
        return [lay.to_joint(x) for x in idx]

    def observe(self, actions: Sequence[JointAction], scores: Sequence[float]) -> None:
        if not actions:
            return
        cfg, lay = self.config, self.layout
        idx = np.stack([lay.to_index(a) for a in actions])
        r = np.asarray(scores, dtype=float)
        if cfg.learner == "q":
            for d in range(lay.size):
                for k, ri in zip(idx[:, d], r):
                    self.counts[d][k] += 1
                    step = cfg.q_step or 1.0 / self.counts[d][k]
                    self.params[d][k] += step * (ri - self.params[d][k])
            self.temperature = max(cfg.min_temperature, self.temperature * cfg.temperature_decay)
            return
        sigma = max(float(r.std()), 1e-3) if r.size > 1 else 1.0
        for i in range(len(lay.agents)):
            # each agent's own baseline; first round: the round's mean
            b = self.baselines[i] if np.isfinite(self.baselines[i]) else float(r.mean())
            adv = (r - b) / sigma
            for d in np.flatnonzero(lay.agent_of == i):
                p = _softmax(self.params[d])
                grad = -np.outer(adv, p).sum(axis=0)
                np.add.at(grad, idx[:, d], adv)
                self.params[d] += cfg.lr * grad / r.size
            self.baselines[i] = cfg.baseline_decay * b + (1 - cfg.baseline_decay) * float(r.mean())

    def state_dict(self) -> dict[str, Any]:
        return {"params": [p.copy() for p in self.params], "counts": [c.copy() for c in self.counts],
                "baselines": self.baselines.copy(), "temperature": self.temperature, "rng": _rng_state(self.rng)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.params = [np.array(p, dtype=float) for p in state["params"]]
        self.counts = [np.array(c, dtype=float) for c in state["counts"]]
        self.baselines = np.array(state["baselines"], dtype=float)
        self.temperature = float(state["temperature"])
        self.rng = _load_rng(state["rng"])


# ---------------------------------------------------------------------------------------------------
# Module by module ("separate")
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModuleByModuleConfig:
    """Hyper-parameters of :class:`ModuleByModule`."""

    evals_per_stage: int = 20
    """Evaluations spent on one module before moving to the next."""

    inner: Literal["mutation", "random"] = "mutation"
    """How the current module's action is searched: ``"mutation"``: the incumbent's action with
    ``mutation_rate`` of its decisions (at least one) redrawn uniformly (local search, the stronger
    baseline); ``"random"``: uniform over the module's whole space (random search, module by module)."""

    mutation_rate: float = 0.2
    """Fraction of the module's decisions redrawn per proposal (``inner="mutation"``)."""

    order: tuple[str, ...] | None = None
    """Order in which modules are optimised (agent names; default: the env's agent order)."""

    def __post_init__(self) -> None:
        _positive_int("ModuleByModuleConfig", "evals_per_stage", self.evals_per_stage)
        _choice("ModuleByModuleConfig", "inner", self.inner, ("mutation", "random"))
        _in_range("ModuleByModuleConfig", "mutation_rate", self.mutation_rate, 0.0, 1.0, lo_open=True)
        if self.order is not None:
            object.__setattr__(self, "order", tuple(self.order))
            if not self.order or len(set(self.order)) != len(self.order):
                raise ValueError(f"ModuleByModuleConfig.order must list distinct agent names, got {self.order!r}")


class ModuleByModule(SearchAlgorithm):
    """The paper's "separate" baseline: optimise one module (agent) at a time, the others fixed.

    The first proposal is a uniform random joint action; it becomes the incumbent. Then stage ``k``
    searches agent ``order[k mod n]``'s action with every other agent's action fixed to the incumbent
    (the best joint action observed so far), for ``evals_per_stage`` evaluations, then moves to the next
    module, cycling. The inner optimiser is mutation of the incumbent's action (default: local search
    over the module) or random search over the module's whole space (``inner="random"``). This is
    coordinate ascent over modules: it cannot make a joint move that only pays off when two modules
    change together, which is what the paper's ablation shows (and the surrogate reward is built to
    expose). The first batch is uniform random (there is no incumbent before anything is observed).

    Args:
        config: a :class:`ModuleByModuleConfig`; or its fields as keyword arguments.
    """

    name = "separate"

    def __init__(self, config: ModuleByModuleConfig | None = None, **overrides: Any) -> None:
        self.config = _check_config(ModuleByModuleConfig, config, overrides)

    def setup(self, action_spaces: Mapping[str, gymnasium.Space], seed: int) -> None:
        super().setup(action_spaces, seed)
        lay = self.layout = _Layout(action_spaces)
        order = self.config.order if self.config.order is not None else lay.agents
        bad = sorted(set(order) - set(lay.agents))
        if bad:
            raise ValueError(f"ModuleByModuleConfig.order names unknown agents {bad}; agents are {list(lay.agents)}")
        self.order = tuple(order)
        self.rng = np.random.default_rng(seed)
        self.incumbent: np.ndarray | None = None
        self.best_score = -math.inf
        self.proposed = 0  # proposals made after the first (stage counter)

    @property
    def stage_agent(self) -> str:
        """The agent optimised by the next proposal."""
        return self.order[(self.proposed // self.config.evals_per_stage) % len(self.order)]

    def propose(self, n: int) -> list[JointAction]:
        lay, cfg = self.layout, self.config
        out = []
        for _ in range(n):
            if self.incumbent is None:  # nothing observed yet: a random joint action seeds the incumbent
                out.append(lay.to_joint(lay.sample(self.rng, 1)[0]))
                continue
            x = self.incumbent.copy()
            s = lay.slices[self.stage_agent]
            nv = lay.nvec[s]
            if cfg.inner == "random":
                x[s] = (self.rng.random(nv.size) * nv).astype(np.int64)
            else:
                k = max(1, round(cfg.mutation_rate * nv.size))
                pos = self.rng.choice(nv.size, size=k, replace=False)
                x[s.start + pos] = (self.rng.random(k) * nv[pos]).astype(np.int64)
            self.proposed += 1
            out.append(lay.to_joint(x))
        return out

    def observe(self, actions: Sequence[JointAction], scores: Sequence[float]) -> None:
        for a, sc in zip(actions, scores):
            if math.isfinite(sc) and sc > self.best_score:
                self.best_score = float(sc)
                self.incumbent = self.layout.to_index(a)

    def state_dict(self) -> dict[str, Any]:
        return {"incumbent": None if self.incumbent is None else self.incumbent.copy(),
                "best_score": self.best_score, "proposed": self.proposed, "rng": _rng_state(self.rng)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        inc = state["incumbent"]
        self.incumbent = None if inc is None else np.array(inc, dtype=np.int64)
        self.best_score = float(state["best_score"])
        self.proposed = int(state["proposed"])
        self.rng = _load_rng(state["rng"])
