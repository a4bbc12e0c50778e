"""AutoMLPipeline-v1: an ML pipeline built by cooperating AutoML agents, as a PettingZoo ParallelEnv.

Each AutoML module of the pipeline (data augmentation, architecture, hyper-parameters, and any module
a user registers) is an agent. The agents' joint action is one ML pipeline; the environment evaluates
it (trains the child model, or queries a surrogate) and every agent receives the same reward: the
child's validation accuracy, optionally penalised by a FLOPs/parameter budget. This is the setting of
Wang et al., "Multi-Agent Automated Machine Learning" (CVPR 2023).

Agents
    One per module, named after it. Default ``("aug", "nas", "hpo")``.

Action space (per agent): ``MultiDiscrete`` over the module's decisions

    ===== ============================ =============================================================
    agent decisions (default)          choices
    ===== ============================ =============================================================
    aug   30 = 5 sub-policies x 2 ops  op (16 AutoAugment ops + Cutout/Identity), probability
          x (op, prob, magnitude)      (0..1 step 0.2), magnitude level (0..9)
    nas   13 = 3 stages x (kernel,     kernel {3,5,7}, expansion {1,3,6}, width x{0.5,0.75,1,1.5},
          expansion, width, depth)     depth {1,2,3}; resolution {16,24,32}
          + resolution
    hpo   7                            optimizer {sgd,adamw,rmsprop}, lr {1e-3..0.3}, weight decay
                                       {0..2e-3}, batch {32..256}, schedule {cosine,step,constant},
                                       label smoothing {0,0.1,0.2}, epochs {1,2,4,8}
    ===== ============================ =============================================================

    ``env.unwrapped.decode(actions)`` turns a joint action into a readable :class:`Pipeline`;
    ``env.unwrapped.space.encode(pipeline)`` goes back.

Observation (per agent, identical) and global ``state()``
    ``Box(0, 1, (3 + D,), float32)``: ``[t / T, last score, best score this episode, previous joint
    action / (nvec - 1)]`` with ``T = pipelines_per_episode`` and ``D`` the joint action length. All
    zeros after ``reset``. ``state_space`` is the same space.

Reward
    The shared score of the pipeline (Python ``float``), the same for every agent.

Termination and truncation
    All agents terminate after ``pipelines_per_episode`` steps (default 1: one pipeline per episode, as
    in the paper). Truncation is never set.

Infos (per agent; the keys ``INFO_KEYS`` after ``reset`` and after every ``step``)
    Numbers only, never NaN, and equal for equal seeds, so that every client can take them (TorchRL builds
    tensor specs from them, PettingZoo's seed tests compare them with ``==``):

    ============ ======= ===========================================================================
    key          type    value
    ============ ======= ===========================================================================
    ``score``    float   the reward (``0.0`` after ``reset``)
    ``status``   int     the result's status as a code: ``ma2ml_env.STATUSES[code]`` is its name,
                         ``ma2ml_env.STATUS_CODES[name]`` the code: ok 0, over_budget 1, diverged 2,
                         oom 3, timeout 4, error 5; ``-1`` after ``reset`` (nothing evaluated yet)
    ``accuracy`` float   accuracy before any cost penalty; ``INFO_MISSING`` when not measured (an
                         over-budget child is not trained, a failed one has none, a user evaluator may
                         give none)
    ``flops``    float   forward FLOPs of one image of the child; ``INFO_MISSING`` when not measured
    ``params``   float   parameters of the child; ``INFO_MISSING`` when not measured
    ``seconds``  float   the evaluation's cost when it is reproducible (the surrogate's simulated
                         training time, a tabular task's recorded one); ``INFO_MISSING`` when the backend
                         measures wall time (``reward="train"``: :attr:`Evaluator.wall_clock_seconds`)
    ``t``        int     pipelines evaluated in this episode (``env.unwrapped.evaluations`` counts
                         them over the env's life)
    ============ ======= ===========================================================================

    ``ma2ml_env.INFO_MISSING`` (-1.0) is never a measured value (they are all >= 0). The full result,
    with NaN for what was not measured, the measured wall time and the backend's details (error messages,
    losses...), is ``env.unwrapped.last_result`` (an :class:`EvalResult`).

Arguments
    modules: module names and/or :class:`AutoMLModule` instances, applied in this order (default: the
        evaluator's own ``modules`` when it has them, as a tabular task does, else aug, nas, hpo). With
        ``reward="surrogate"`` a module other than the built-in aug, nas and hpo whose choices change the
        pipeline must declare ``surrogate_effects`` (else ``ValueError``; see
        :mod:`ma2ml_env.rewards.surrogate`, "Other modules").
    reward: ``"train"`` (real child training, default), ``"surrogate"``, ``"tabular"`` (a recorded task,
        ``reward_kwargs={"task": "nb201/cifar10"}``) or an :class:`Evaluator` instance.
    reward_kwargs: keyword arguments of the named reward backend (e.g. ``dataset``, ``device``,
        ``budget`` (a :class:`CostBudget` or a dict of its fields, e.g. parsed JSON), ``task``,
        ``noise_std``).
    backend: how a batch of pipelines is evaluated: ``"serial"`` (default), ``"local"`` (worker processes,
        one per GPU on CUDA) or ``"ray"`` (Ray tasks); see :mod:`ma2ml_env.rewards.parallel`.
    workers: concurrent evaluations of the ``"local"``/``"ray"`` backend.
    backend_kwargs: more backend options (``time_limit``, ``max_retries``, ``address``,
        ``num_gpus_per_trial``, ``temp_dir`` for a Ray instance the backend starts...).
    pipelines_per_episode: pipelines evaluated per episode.
    base_pipeline: the pipeline the modules start from.
    render_mode: ``None``, ``"ansi"`` (render returns the last pipeline) or ``"human"`` (prints it).

Step
    ``step`` is a thin adapter: it validates the agents' actions once (``env.unwrapped.codec.encode``, the
    PettingZoo boundary; a ``ValueError`` says what is wrong and changes nothing), draws the evaluation seed,
    makes ONE call to the evaluator (:meth:`Evaluator.evaluate` on the one-row batch), and builds the
    observation and the infos itself. Fast paths are the evaluator's own: the surrogate evaluates one row
    with a compiled kernel (numba, extra ``fast``; ``MA2ML_JIT=0`` switches it off) or its Python scalar
    path, the same numbers either way.

AEC
    ``ma2ml_env.env()`` (:class:`~ma2ml_env.aec.AECAutoMLEnv`) checks each agent's action at that agent's own
    step (``codec.encode_agent``: an invalid action raises there and is not stored) and evaluates the
    validated joint action at the last agent's step.

Batch evaluation
    ``env.unwrapped.evaluate(actions, seeds=None, on_result=None, *, validate=True)`` evaluates many joint
    actions outside the episode loop (one call to the backend, which may run them in parallel); search
    algorithms use it. ``actions`` is one int64 array ``[K, D]`` in the layout of ``env.unwrapped.codec``
    (every decision of every agent in agent order, 0-based), validated once by ``codec.validate_batch``
    (``validate=False`` when the caller did that); seeds default to the env's stream. It returns a
    :class:`~ma2ml_env.BatchResult`; ``on_result(i, result)`` is called once per row, the moment it is
    final (a durable search commits it then).

Failures
    An evaluator that raises, returns a NaN score or the wrong results gives ``"error"`` results (score
    ``failure_score``, the message in the result's ``info["error"]``; after a ``step``:
    ``env.unwrapped.last_result.info``), in ``evaluate`` and in ``step`` alike, under every backend: a
    failing evaluation is a recorded outcome, never an aborted search. Invalid actions (out of range, wrong
    shape, non-integer, booleans) raise ``ValueError``.

Configuration
    ``env.unwrapped.config()``: a JSON-serialisable dict of everything that determines the rewards (modules,
    ``pipelines_per_episode``, base pipeline, ``"reward"``: the evaluator's ``config()``), equal for equal
    set-ups; a durable search stores it and refuses to resume under a different one.
    :func:`ma2ml_env.check_evaluator` checks a user's evaluator against the contract the env relies on.

Clients
    Tested with PettingZoo's ``parallel_api_test``, ``api_test`` (the AEC ``env()``) and
    ``parallel_seed_test``, and TorchRL's ``PettingZooWrapper`` (``check_env_specs``, rollouts), on the
    surrogate, a tabular task and real training (``tests/test_clients.py``). TorchRL casts every info
    value to ``float32``. NB201's agents need ``group_map=MarlGroupMapType.ONE_GROUP_PER_AGENT`` in TorchRL
    (see :mod:`ma2ml_env.rewards.tabular`).

Version history
    v1: the surrogate reward re-designed to be like real training (augmentation strength no longer rounded,
        coefficients calibrated on recorded real trainings; see :mod:`ma2ml_env.rewards.surrogate`).
    v0: initial release.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import gymnasium
import numpy as np
from gymnasium.utils import seeding
from pettingzoo import ParallelEnv

from ma2ml_env.aec import AECAutoMLEnv
from ma2ml_env.modules import DEFAULT_MODULES, resolve_modules
from ma2ml_env.pipeline import Pipeline
from ma2ml_env.rewards.base import BatchResult, EvalResult, Evaluator, evaluate_guarded, make_evaluator
from ma2ml_env.rewards.parallel import BackendWrapper, wrap_evaluator
from ma2ml_env.space import SearchSpace

__all__ = ["ENV_ID", "INFO_KEYS", "INFO_MISSING", "AutoMLPipelineEnv", "env", "parallel_env"]

ENV_ID = "ma2ml/AutoMLPipeline-v1"
#: The keys of every info dict (after ``reset`` and after each ``step``); see the module docstring.
INFO_KEYS = ("score", "status", "accuracy", "flops", "params", "seconds", "t")
#: The value of ``accuracy``, ``flops``, ``params`` and ``seconds`` in infos when not measured (and of
#: ``seconds`` for wall-clock backends); ``status`` is -1 after ``reset``.
INFO_MISSING = -1.0
_FLOAT32 = np.dtype(np.float32)
_empty = np.empty


class AutoMLPipelineEnv(ParallelEnv):
    """The multi-agent AutoML environment; see the module docstring for the full documentation."""

    metadata: ClassVar[dict[str, Any]] = {
        "name": "ma2ml/AutoMLPipeline-v1",
        "render_modes": ["ansi", "human"],
        "is_parallelizable": True,
    }

    def __init__(
        self,
        modules: Sequence[str | Any] | None = None,
        reward: str | Evaluator = "train",
        reward_kwargs: Mapping[str, Any] | None = None,
        pipelines_per_episode: int = 1,
        base_pipeline: Pipeline | None = None,
        render_mode: str | None = None,
        backend: str = "serial",
        workers: int | None = None,
        backend_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if (
            isinstance(pipelines_per_episode, bool)
            or not isinstance(pipelines_per_episode, (int, np.integer))
            or pipelines_per_episode < 1
        ):
            raise ValueError(
                f"pipelines_per_episode must be a positive integer, got {pipelines_per_episode!r}"
            )
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}"
            )
        if base_pipeline is not None and not isinstance(base_pipeline, Pipeline):
            raise ValueError(
                f"base_pipeline must be a ma2ml_env.Pipeline, got {type(base_pipeline).__name__}"
            )
        evaluator = make_evaluator(reward, **dict(reward_kwargs or {}))
        if modules is None:  # the evaluator's own agents (a tabular task's), else the built-in three
            modules = getattr(evaluator, "modules", None) or DEFAULT_MODULES
        self.space = SearchSpace(resolve_modules(modules), base=base_pipeline)
        self.codec = self.space.codec
        self._base_pipeline = base_pipeline
        self.evaluator = wrap_evaluator(evaluator, backend, workers, **dict(backend_kwargs or {}))
        self.evaluator.bind(self.space)
        # the one evaluator call of step and evaluate: a parallel backend guards each row itself (and its own
        # set-up errors, e.g. Ray missing, must reach the caller); any other evaluator through the guard
        self._evaluate = (self.evaluator.evaluate if isinstance(self.evaluator, BackendWrapper)
                          else functools.partial(evaluate_guarded, self.evaluator))
        self.pipelines_per_episode = int(pipelines_per_episode)
        self.render_mode = render_mode
        self.possible_agents = list(self.space.names)
        self.agents: list[str] = []
        self._agent_keys = dict.fromkeys(self.possible_agents)  # dict.fromkeys copies a dict's keys fastest
        self._action_spaces = {m.name: m.action_space for m in self.space.modules}
        d = int(self.space.joint_nvec.size)
        self.state_space = gymnasium.spaces.Box(0.0, 1.0, (3 + d,), np.float32)
        self._wall_seconds = bool(self.evaluator.wall_clock_seconds)
        self._np_random, self._np_random_seed = seeding.np_random(None)
        self._obs = np.zeros(3 + d, np.float32)
        self._obs_size = 3 + d
        self._seeds = np.zeros(0, np.int64)  # the current block of evaluation seeds, used from _seed_pos on
        self._seed_rows: list[np.ndarray] = []
        self._seed_pos = 0
        self._t = 0
        self._needs_reset = True
        self.evaluations = 0
        self._last: tuple[np.ndarray, BatchResult, int] | None = None  # (flat row, its batch, its row index)

    # -- spaces ----------------------------------------------------------------------------------------
    def observation_space(self, agent: str) -> gymnasium.spaces.Box:
        self._check_agent(agent)
        return self.state_space

    def action_space(self, agent: str) -> gymnasium.spaces.MultiDiscrete:
        self._check_agent(agent)
        return self._action_spaces[agent]

    def _check_agent(self, agent: str) -> None:
        if agent not in self._action_spaces:
            raise ValueError(f"unknown agent {agent!r}; agents are {self.possible_agents}")

    def state(self) -> np.ndarray:
        return self._obs.copy()

    @property
    def np_random(self) -> np.random.Generator:
        return self._np_random

    # -- episode loop ----------------------------------------------------------------------------------
    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        if seed is not None:
            self._np_random, self._np_random_seed = seeding.np_random(seed)
            self._seeds, self._seed_pos = np.zeros(0, np.int64), 0
        self.agents = list(self.possible_agents)
        self._t = 0
        self._best = 0.0
        self._needs_reset = False
        self._obs = np.zeros_like(self._obs)
        info = self._info(None, 0, 0)
        return {a: self._obs.copy() for a in self.agents}, {a: dict(info) for a in self.agents}

    def step(self, actions: Mapping[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        if self._needs_reset:
            raise RuntimeError("call reset() before step()")
        if not self.agents:
            raise RuntimeError(
                f"the episode is over (all agents terminated after {self.pipelines_per_episode} pipelines); "
                "call reset() to start a new one"
            )
        obs = _empty(self._obs_size, _FLOAT32)  # the new observation; encode writes its action part
        # the one validation (raises before any change)
        return self._step_flat(self.codec.encode(actions, scaled_out=obs[3:]), obs)

    def _step_flat(self, flat: np.ndarray, obs: np.ndarray | None = None) -> tuple[dict, dict, dict, dict, dict]:
        """The step of a validated flat joint action (``step`` after ``codec.encode``; the AEC env after each
        agent's own check): one evaluator call, the observation, the infos. ``obs``: the new observation
        with its action part written (``step``), else made here."""
        if obs is None:
            obs = _empty(self._obs_size, _FLOAT32)
            self.codec.scaled(flat, obs[3:])
        r = self._evaluate(flat[None], self._draw_seeds(1))
        self.evaluations += 1
        self._last = (flat, r, 0)
        self._t = t = self._t + 1
        info = self._info(r, 0, t)
        score = info["score"]
        best = self._best
        if score > best:
            self._best = best = score
        obs[0] = t / self.pipelines_per_episode  # the env's own observation (module docstring): three scalar
        obs[1] = score                           # stores, 3x faster than a slice
        obs[2] = best
        self._obs = obs
        done = t >= self.pipelines_per_episode
        agents = self._agent_keys  # every agent is live during a step (they all terminate together)
        copy = info.copy
        infos = {}
        for a in agents:  # a loop: a comprehension costs a function call more (Python 3.11)
            infos[a] = copy()
        out = (dict.fromkeys(agents, obs),  # one fresh array per step, shared by the agents (read-only use)
               dict.fromkeys(agents, score), dict.fromkeys(agents, done), dict.fromkeys(agents, False), infos)
        if done:
            self.agents = []
        if self.render_mode == "human":
            self.render()
        return out

    def _info(self, r: BatchResult | None, i: int, t: int) -> dict[str, Any]:
        """The info dict of row ``i`` of ``r`` (``None``: after ``reset``): the one place infos are made. The
        convention (module docstring): numbers only, ``INFO_MISSING`` for a value not measured (NaN in the
        result; ``x != x`` only for NaN) and for wall-clock seconds (not reproducible; ``last_result`` has
        them)."""
        if r is None:
            return {"score": 0.0, "status": -1, "accuracy": INFO_MISSING, "flops": INFO_MISSING,
                    "params": INFO_MISSING, "seconds": INFO_MISSING, "t": t}
        score, status, acc, flops, params, seconds = r.row(i)
        return {"score": score, "status": status,
                "accuracy": acc if acc == acc else INFO_MISSING, "flops": flops if flops == flops else INFO_MISSING,
                "params": params if params == params else INFO_MISSING,
                "seconds": INFO_MISSING if self._wall_seconds or seconds != seconds else seconds, "t": t}

    def _draw_seeds(self, k: int) -> np.ndarray:
        """The next ``k`` evaluation seeds of the env's RNG (int64), drawn in blocks of 256 (one
        ``Generator.integers`` call costs microseconds): ``step`` and ``evaluate`` share the stream."""
        i = self._seed_pos
        if i + k <= len(self._seeds):
            self._seed_pos = i + k
            return self._seed_rows[i] if k == 1 else self._seeds[i:i + k]
        parts, need = [self._seeds[i:]], k - (len(self._seeds) - i)
        while need > 0:
            self._seeds = self._np_random.integers(2**31 - 1, size=256)
            self._seed_rows = list(self._seeds.reshape(-1, 1))  # each seed as a one-row view: step's, ready
            self._seed_pos = take = min(need, 256)
            parts.append(self._seeds[:take])
            need -= take
        return np.concatenate(parts)

    # -- batch evaluation (search algorithms use this) ---------------------------------------------------
    def evaluate(self, actions: Any, seeds: Any = None,
                 on_result: Callable[[int, EvalResult], None] | None = None, *, validate: bool = True,
                 levels: Any = None, start: Any = None) -> BatchResult:
        """Evaluate a batch of flat joint actions with the reward backend, outside the episode loop.

        Args:
            actions: int64 ``[K, D]`` in the layout of ``env.unwrapped.codec`` (every decision of every agent
                in agent order, 0-based): validated once with ``codec.validate_batch`` (a bad row raises
                ``ValueError`` naming it, before anything is evaluated).
            seeds: one integer seed per row (default: drawn from the env's RNG, the stream ``step`` uses).
            on_result: called as ``on_result(i, result)`` exactly once per row, the moment row ``i``'s
                result is final (parallel backends: as workers finish). A durable search commits it there.
            validate: ``False`` when the caller has validated ``actions`` itself with
                ``codec.validate_batch`` (the search loop): the batch is then used as it is.
            levels, start: for an evaluator with fidelity levels, the level of each row and the one it
                continues from (:mod:`ma2ml_env.rewards.fidelity`); default: full trainings of fresh children.

        Returns:
            A :class:`~ma2ml_env.BatchResult`, one row per joint action, in order. An evaluator that raises
            or returns a bad result (a NaN score, the wrong number of rows) gives ``"error"`` rows instead.
        """
        A = self.codec.validate_batch(actions) if validate else actions
        k = len(A)
        if seeds is None:
            seeds = self._draw_seeds(k)
        else:
            seeds = np.asarray(seeds)
            if seeds.shape != (k,) or (k and seeds.dtype.kind not in "iu"):
                raise ValueError(f"seeds must be {k} integers (one per joint action), got an array of shape "
                                 f"{seeds.shape} and dtype {seeds.dtype}")
            seeds = seeds.astype(np.int64, copy=False)
        if not k:
            return BatchResult.from_results([])
        if levels is None and start is None:
            r = self._evaluate(A, seeds, on_result)
        else:
            from ma2ml_env.rewards.fidelity import fidelity_of, fidelity_request

            levels, start = fidelity_request(fidelity_of(self.evaluator), k, levels, start)
            r = self._evaluate(A, seeds, on_result, levels=levels, start=start)
        self.evaluations += k
        self._last = (A[-1], r, k - 1)
        return r

    def config(self) -> dict[str, Any]:
        """Everything about this env that determines its rewards, JSON-serialisable: the modules (a
        built-in's name, or the class path and decisions of a module object), ``pipelines_per_episode``,
        the base pipeline (``None`` when not set) and ``"reward"``: the evaluator's
        :meth:`~ma2ml_env.Evaluator.config`. A durable search stores it and refuses to resume under a
        different one; the parallel backend and its workers are left out (they do not change rewards)."""
        return {
            "env": ENV_ID,
            "modules": [_module_config(m) for m in self.space.modules],
            "pipelines_per_episode": self.pipelines_per_episode,
            "base_pipeline": None if self._base_pipeline is None else json.loads(self._base_pipeline.key()),
            "reward": self.evaluator.config(),
        }

    @property
    def last_result(self) -> EvalResult | None:
        """The result of the last evaluated joint action (``None`` before the first)."""
        return None if self._last is None else self._last[1][self._last[2]]

    @property
    def last_actions(self) -> dict[str, np.ndarray] | None:
        """The last evaluated joint action, per agent (``None`` before the first)."""
        return None if self._last is None else self.codec.decode(self._last[0])

    def decode(self, actions: Mapping[str, Any] | np.ndarray) -> Pipeline:
        """The readable :class:`Pipeline` of a joint action (dict or flat vector)."""
        return self.space.decode(actions)

    def render(self) -> str | None:
        if self.render_mode is None:
            gymnasium.logger.warn("render() called without a render_mode; pass render_mode='ansi' or 'human'")
            return None
        if self._last is None:
            text = "no pipeline evaluated yet"
        else:
            r = self.last_result
            text = f"{self.space.build(self._last[0]).describe()}\nscore: {r.score:.4f} ({r.status})"
        if self.render_mode == "human":
            print(text)
            return None
        return text

    def close(self) -> None:
        self.evaluator.close()


def _module_config(module: Any) -> Any:
    """A built-in module (unchanged from its registered default) by name; any other module object by its
    class path, name and decisions (names and choices)."""
    from ma2ml_env.modules import make_module, registered_modules

    name = module.name
    if name in registered_modules():
        try:
            ref = make_module(name)
        except Exception:  # noqa: BLE001 - a registered factory that needs arguments: describe the object
            ref = None
        if ref is not None and type(ref) is type(module) and _decisions(ref) == _decisions(module):
            return name
    return {"class": f"{type(module).__module__}.{type(module).__qualname__}", "name": name,
            "decisions": _decisions(module)}


def _decisions(module: Any) -> dict[str, list[Any]]:
    return {d.name: [c if isinstance(c, (bool, int, float, str)) or c is None else repr(c) for c in d.choices]
            for d in module.decisions}


def parallel_env(**kwargs: Any) -> AutoMLPipelineEnv:
    """The ParallelEnv (see :class:`AutoMLPipelineEnv` for the arguments)."""
    return AutoMLPipelineEnv(**kwargs)


def env(**kwargs: Any) -> AECAutoMLEnv:
    """The AEC form of the environment: each agent's action is validated at its own step
    (:class:`~ma2ml_env.aec.AECAutoMLEnv`)."""
    return AECAutoMLEnv(parallel_env(**kwargs))
