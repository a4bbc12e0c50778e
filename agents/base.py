"""The one interface every search algorithm implements, and the one loop that runs any of them.

A search algorithm proposes a batch of joint actions, is told the shared reward of each, and repeats. A
batch is one ``int64 [n, D]`` array in the codec's layout: the one currency from ``propose`` through the
loop (which validates it once), the store and ``env.evaluate`` back to ``observe``.

    algo = RandomSearch()
    result = run(algo, ma2ml_env.parallel_env(reward="surrogate"), budget=200, seed=0, batch_size=8)
    print(result.best_score, result.best_pipeline)

:func:`run` is the only search loop. Where its trials go is a *recorder*: by default an in-memory one; a
:class:`agents.store.TrialStore` makes the search durable (every evaluation committed as it completes, the
algorithm's state after every ``propose`` and ``observe``), resumable after a kill at any moment with the
same trials as an uninterrupted run. Logging and output files are callbacks of the loop.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import gymnasium
import numpy as np

from agents.jsonio import json_dumps
from agents.threads import torch_threads
from ma2ml_env.codec import JointActionCodec
from ma2ml_env.rewards.base import SUCCESS_STATUSES, EvalResult

__all__ = [
    "Recorder",
    "SearchAlgorithm",
    "SearchResult",
    "StoreMismatchError",
    "Trial",
    "action_spaces_of",
    "algorithm_config",
    "best_trial",
    "check_run_arguments",
    "evaluate_joint_actions",
    "evaluation_seed",
    "run",
    "search_config",
    "torch_threads",
]

class SearchAlgorithm:
    """Base class of search algorithms over a multi-agent joint action space.

    Life cycle: ``setup(action_spaces, seed)`` once, then rounds of ``propose(n)`` and
    ``observe(actions, scores)``. ``state_dict()``/``load_state_dict()`` capture everything needed to
    resume a search exactly (including RNG state).

    A batch is an ``int64 [n, D]`` array in the layout of ``self.codec`` (every decision of every agent in
    agent order, 0-based indices). :func:`run` validates what ``propose`` returns, once, and hands
    ``observe`` the same rows: an algorithm needs no per-agent dicts (``self.codec.decode(row)`` at a
    library boundary) and never validates again.

    Attributes:
        name: the name the CLI and benchmark use.
        codec, agents, seed: the :class:`~ma2ml_env.codec.JointActionCodec`, the agent names and the seed
            (set by :meth:`setup`).
    """

    name: str = "algorithm"

    def setup(self, action_spaces: Mapping[str, gymnasium.Space], seed: int) -> None:
        """Prepare for a search over ``action_spaces`` (``Discrete`` or ``MultiDiscrete`` per agent): sets
        ``action_spaces``, ``agents``, ``seed`` and ``codec``."""
        for agent, space in action_spaces.items():
            if not isinstance(space, (gymnasium.spaces.Discrete, gymnasium.spaces.MultiDiscrete)):
                raise TypeError(
                    f"{type(self).__name__} supports Discrete and MultiDiscrete actions; agent {agent!r} has "
                    f"{type(space).__name__}"
                )
        self.action_spaces = dict(action_spaces)
        self.agents = tuple(action_spaces)
        self.seed = seed
        self.codec = JointActionCodec(action_spaces)

    def propose(self, n: int) -> np.ndarray:
        """Return the next ``n`` joint actions to evaluate: ``int64 [n, D]`` in ``self.codec``'s layout."""
        raise NotImplementedError

    def observe(self, actions: np.ndarray, scores: np.ndarray) -> None:
        """Learn from the shared rewards of proposed joint actions: ``actions`` ``int64 [n, D]`` exactly as
        proposed (already validated), ``scores`` ``float64 [n]`` (a failed evaluation has the backend's
        failure score; NaN never comes from :func:`run`, but a direct caller may pass it)."""
        raise NotImplementedError

    def observed_batch(self, actions: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(actions, scores)`` of an ``observe`` call as ``int64 [n, D]`` and ``float64 [n]`` arrays, or
        ``ValueError`` when their shapes do not fit (a 1-d row, the wrong width, counts that differ).
        Shapes only: the values were validated by :func:`run` when they were proposed."""
        a = np.asarray(actions)
        r = np.asarray(scores, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != self.codec.size:
            raise ValueError(f"observe() takes a batch of joint actions [n, {self.codec.size}] as proposed, "
                             f"got shape {a.shape}")
        if a.dtype.kind not in "iu" and a.size:
            raise ValueError(f"observe() takes integer joint actions as proposed, got dtype {a.dtype}")
        if r.shape != (a.shape[0],):
            raise ValueError(f"observe() got {a.shape[0]} joint actions and scores of shape {r.shape}; pass "
                             "one score per joint action")
        return a.astype(np.int64, copy=False), r

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (picklable)."""
        raise NotImplementedError(f"{type(self).__name__} does not support checkpointing")

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not support checkpointing")


@dataclass(frozen=True)
class Trial:
    """One evaluated joint action: where it sits in the search and the evaluator's result, unchanged.

    Attributes:
        index: position in the search (0-based; evaluation ``index`` of the budget).
        round: the round (``propose`` call) it was proposed in.
        action: the joint action, a flat row in the codec's layout (a tuple of ints, 0-based;
            ``np.asarray(trial.action)`` is the int64 row, ``codec.decode(trial.action)`` the per-agent
            dict, ``env.unwrapped.decode(trial.action)`` the :class:`~ma2ml_env.Pipeline`).
        result: the :class:`~ma2ml_env.EvalResult` the reward backend returned.
        seed: the evaluation seed (:func:`evaluation_seed`).
        key: the joint action's canonical string (:meth:`~ma2ml_env.JointActionCodec.key`).
        level, start, full, clock: multi-fidelity searches only (:mod:`agents.multifidelity`): the fidelity
            level evaluated at, the level the child continued from (``-1``: fresh), whether ``level`` is the
            full training, and the simulated time at which the result arrived. ``level`` is ``None`` in a
            full-fidelity search.
    """

    index: int
    round: int
    action: tuple[int, ...]
    result: EvalResult
    seed: int = 0
    key: str = ""
    level: int | None = None
    start: int = -1
    full: bool = True
    clock: float = math.nan

    @property
    def score(self) -> float:
        return self.result.score

    @property
    def status(self) -> str:
        return self.result.status

    @property
    def seconds(self) -> float:
        return self.result.seconds

    @property
    def info(self) -> Mapping[str, Any]:
        """The backend's details (``result.info``)."""
        return self.result.info

    def to_dict(self) -> dict[str, Any]:
        """``index, round, seed, action`` (the flat row as a list) and the result's fields (``score, status,
        accuracy, ...``)."""
        out = {"index": self.index, "round": self.round, "seed": self.seed, "action": list(self.action),
               **self.result.to_dict()}
        if self.level is not None:
            out.update(self.fidelity_dict())
        return out

    def fidelity_dict(self) -> dict[str, Any]:
        """``level, start, full, clock`` (what a multi-fidelity trial records beside its result)."""
        return {"level": self.level, "start": self.start, "full": self.full, "clock": self.clock}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Trial:
        if "action" not in d:
            raise ValueError("a trial record without a flat 'action' row" + (
                " (per-agent 'actions': written by an older ma2ml, which this version does not read)"
                if "actions" in d else ""))
        fields = ("score", "status", "accuracy", "flops", "params", "seconds", "info")
        res = EvalResult(**{k: (math.nan if d[k] is None else d[k]) if k in ("accuracy", "flops", "params")
                            else d[k] for k in fields if k in d})
        fid = {} if d.get("level") is None else {"level": int(d["level"]), "start": int(d["start"]),
                                                   "full": bool(d["full"]), "clock": float(d["clock"])}
        return cls(int(d["index"]), int(d["round"]), tuple(int(v) for v in d["action"]), res,
                   int(d.get("seed", 0)), str(d.get("key", "")), **fid)


def best_trial(trials: Sequence[Trial]) -> Trial:
    """The best trial: highest score, the earliest on ties (the one rule every report uses); in a
    multi-fidelity search, among the full trainings when there are any."""
    if not trials:
        raise ValueError("the search evaluated no pipeline")
    full = [t for t in trials if t.full]
    return max(full or trials, key=lambda t: (t.score, -t.index))


@dataclass
class SearchResult:
    """What :func:`run` returns: the full history and the best trial."""

    algorithm: str
    seed: int
    trials: list[Trial]
    wall_seconds: float
    best_pipeline: Any = None

    @property
    def scores(self) -> np.ndarray:
        return np.array([t.score for t in self.trials], dtype=float)

    @property
    def best_so_far(self) -> np.ndarray:
        return np.maximum.accumulate(self.scores) if self.trials else np.zeros(0)

    @property
    def best(self) -> Trial:
        return best_trial(self.trials)

    @property
    def best_score(self) -> float:
        return self.best.score


def action_spaces_of(env: Any) -> dict[str, gymnasium.Space]:
    """The per-agent action spaces of a PettingZoo ParallelEnv."""
    agents = list(getattr(env, "possible_agents", None) or env.agents)
    return {a: env.action_space(a) for a in agents}


def evaluation_seed(seed: int, index: int) -> int:
    """The seed of evaluation ``index`` of a search seeded ``seed`` (the same with or without a store)."""
    return seed * 1_000_003 + index


def evaluate_joint_actions(
    env: Any, actions: np.ndarray, seeds: Sequence[int] | np.ndarray,
    on_result: Callable[[int, EvalResult], None] | None = None,
) -> Sequence[EvalResult]:
    """Evaluate a validated batch (``int64 [K, D]``) on ``env``, calling ``on_result(i, result)`` the moment
    result ``i`` is final. Our envs: their ``evaluate`` (``validate=False``); any other PettingZoo
    ParallelEnv: one episode per row (decoded to per-agent dicts there, the PettingZoo boundary), the shared
    reward summed (a non-finite one is an ``"error"`` result)."""
    rows = np.asarray(actions, dtype=np.int64)
    base = getattr(env, "unwrapped", env)
    if callable(getattr(base, "evaluate", None)):
        return base.evaluate(rows, np.asarray(seeds, dtype=np.int64), on_result=on_result, validate=False)
    codec = JointActionCodec(action_spaces_of(env))
    out = []
    for i, (row, s) in enumerate(zip(rows, seeds)):
        a = codec.decode(row)
        t0 = time.perf_counter()
        env.reset(seed=int(s))
        total, done = 0.0, False
        while not done and env.agents:
            live = {k: v for k, v in a.items() if k in env.agents}
            _, rewards, terms, truncs, _ = env.step(live)
            total += float(np.mean(list(rewards.values()))) if rewards else 0.0
            done = all(terms.get(k, False) or truncs.get(k, False) for k in live)
        seconds = time.perf_counter() - t0
        r = (EvalResult(total, seconds=seconds) if math.isfinite(total) else
             EvalResult(0.0, "error", seconds=seconds, info={"error": f"the episode's reward was {total}"}))
        if on_result is not None:
            on_result(i, r)
        out.append(r)
    return out


# ======================================================================================================
# Where trials go: recorders
# ======================================================================================================
class StoreMismatchError(ValueError):
    """A resumed search differs from the stored one (algorithm, its config, seed, batch size, env or reward)."""


@dataclass(frozen=True)
class Round:
    """One ``propose`` call: its first trial index, its size and its proposals (validated, ``int64 [n, D]``)."""

    round: int
    start: int
    n: int
    proposals: np.ndarray
    observed: bool


class Recorder(Protocol):
    """Where :func:`run` keeps a search: trials, rounds and the algorithm's checkpoints.

    :class:`MemoryRecorder` (the default) keeps trials only; :class:`agents.store.TrialStore` commits
    everything to SQLite (``durable = True``: the loop then also saves the algorithm's state). :func:`run`
    calls ``begin`` first and ``end`` when it returns or raises (a store releases there the lock that
    ``begin`` took)."""

    durable: bool

    def begin(self, config: Mapping[str, Any], resume: bool, budget: int, dedupe: bool) -> None: ...
    def end(self) -> None: ...
    def trials(self) -> list[Trial]: ...
    def rounds(self) -> list[Round]: ...
    def checkpoint(self) -> tuple[int, str, bytes | None] | None: ...
    def add_trial(self, trial: Trial) -> None: ...
    def find(self, key: str) -> Trial | None: ...
    def save_proposals(self, rnd: int, start: int, proposals: np.ndarray, state: bytes | None) -> None: ...
    def save_observed(self, rnd: int, state: bytes | None) -> None: ...


class MemoryRecorder:
    """The in-memory recorder of a plain :func:`run` (nothing to resume; dedupe within the search: a result
    with a status in :data:`ma2ml_env.SUCCESS_STATUSES` is served again, a failure is retried)."""

    durable = False

    def __init__(self) -> None:
        self._trials: list[Trial] = []
        self._by_key: dict[str, Trial] = {}

    def begin(self, config: Mapping[str, Any], resume: bool, budget: int, dedupe: bool) -> None:
        self._dedupe = dedupe

    def end(self) -> None: ...
    def trials(self) -> list[Trial]: return list(self._trials)
    def rounds(self) -> list[Round]: return []
    def checkpoint(self) -> None: return None

    def add_trial(self, trial: Trial) -> None:
        self._trials.append(trial)
        if self._dedupe and trial.status in SUCCESS_STATUSES:
            self._by_key.setdefault(trial.key, trial)

    def find(self, key: str) -> Trial | None:
        return self._by_key.get(key)

    def save_proposals(self, rnd: int, start: int, proposals: np.ndarray, state: bytes | None) -> None:
        pass

    def save_observed(self, rnd: int, state: bytes | None) -> None:
        pass


def _plain(x: Any) -> Any:
    """JSON-normal form (tuples -> lists, numpy -> Python), so stored and new configs compare equal."""
    return json.loads(json_dumps(x))


def algorithm_config(algorithm: SearchAlgorithm) -> dict[str, Any] | None:
    """The algorithm's config dataclass as a dict (``None`` when it has none)."""
    cfg = getattr(algorithm, "config", None)
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type) else None


def search_config(algorithm: SearchAlgorithm, env: Any, seed: int, batch_size: int) -> dict[str, Any]:
    """Everything that determines a search's trials: the algorithm and its config, the seed, the batch
    size, the action spaces and the env's own ``config()`` (modules, reward backend and its settings).
    A durable search stores it and refuses to resume under a different one."""
    spaces = action_spaces_of(env)
    base = getattr(env, "unwrapped", env)
    env_config = base.config() if callable(getattr(base, "config", None)) else \
        {"class": f"{type(base).__module__}.{type(base).__qualname__}"}
    return _plain({
        "algorithm": getattr(algorithm, "name", type(algorithm).__name__),
        "algorithm_class": f"{type(algorithm).__module__}.{type(algorithm).__qualname__}",
        "algorithm_config": algorithm_config(algorithm),
        "seed": int(seed),
        "batch_size": int(batch_size),
        "action_spaces": {a: np.atleast_1d(getattr(s, "nvec", getattr(s, "n", 0))).astype(int).tolist()
                          for a, s in spaces.items()},
        "env": env_config,
    })


def config_differences(stored: Any, now: Any, path: str = "") -> list[str]:
    """Human-readable differences between two JSON-normal configs (``"env.reward.noise: stored 0.0, now
    0.01"``), empty when equal."""
    if isinstance(stored, dict) and isinstance(now, dict):
        out = []
        for k in list(stored) + [k for k in now if k not in stored]:
            out += config_differences(stored.get(k), now.get(k), f"{path}.{k}" if path else str(k))
        return out
    return [] if stored == now else [f"{path or 'config'}: stored {stored!r}, now {now!r}"]


# ======================================================================================================
# The search loop
# ======================================================================================================
def run(
    algorithm: SearchAlgorithm,
    env: Any,
    budget: int,
    seed: int = 0,
    batch_size: int = 1,
    callback: Callable[[list[Trial]], None] | None = None,
    *,
    store: Recorder | None = None,
    resume: bool = True,
    dedupe: bool = False,
    scheduler: Any = None,
    workers: int = 1,
    budget_seconds: float | None = None,
) -> SearchResult:
    """Run ``algorithm`` on ``env`` for ``budget`` evaluations.

    Args:
        algorithm: any :class:`SearchAlgorithm`.
        env: a PettingZoo ParallelEnv (ours or any with Discrete/MultiDiscrete actions).
        budget: number of evaluations (may be raised when resuming a stored search).
        seed: seeds the algorithm and the evaluations (:func:`evaluation_seed`).
        batch_size: joint actions proposed and evaluated per round.
        callback: called with each round's trials when the round is done (progress bars, loggers, files).
            An object with a ``resume(trials)`` method is first told about the trials of the rounds a
            resumed search had completed; the trials of a round interrupted half-way are reported, once,
            when that round completes.
        store: where the trials go: ``None`` keeps them in memory; a :class:`agents.store.TrialStore`
            makes the search durable and resumable (see :func:`agents.store.run_durable`).
        resume: with a store holding this search, continue it; ``False`` refuses a store holding trials.
        dedupe: serve a joint action already evaluated (status ``ok``/``over_budget``) from the record
            instead of evaluating it again (its ``info`` gets ``cached_from``; ``seconds`` is 0). Only
            correct when the reward does not depend on the evaluation seed (no noise).
        scheduler, workers, budget_seconds: a multi-fidelity search (:mod:`agents.multifidelity`): an
            :mod:`agents.schedulers` scheduler stops weak children early on ``workers`` simulated workers;
            ``budget`` then counts full trainings, ``budget_seconds`` (optional) simulated seconds.

    Returns:
        The :class:`SearchResult` with every trial; ``best_pipeline`` is decoded when the env can.

    Raises:
        StoreMismatchError: the store holds a different search (the message names every difference).
        FileExistsError: ``resume=False`` and the store already holds trials.
    """
    check_run_arguments(budget, batch_size)
    config = search_config(algorithm, env, seed, batch_size)
    if scheduler is not None:
        from agents.multifidelity import check_fidelity_arguments, fidelity_config, search_fidelity

        check_fidelity_arguments(env, scheduler, workers, budget_seconds, dedupe)
        config.update(fidelity_config(scheduler, workers))
    rec: Recorder = MemoryRecorder() if store is None else store
    try:
        rec.begin(config, resume, budget, dedupe)
        if scheduler is not None:
            return search_fidelity(algorithm, env, budget, seed, batch_size, callback, rec, scheduler, workers,
                                   budget_seconds)
        return _search(algorithm, env, budget, seed, batch_size, callback, rec, dedupe)
    finally:
        rec.end()


def _search(algorithm: SearchAlgorithm, env: Any, budget: int, seed: int, batch_size: int,
            callback: Callable[[list[Trial]], None] | None, rec: Recorder, dedupe: bool) -> SearchResult:
    """The loop of :func:`run`, between ``rec.begin`` and ``rec.end``."""
    spaces = action_spaces_of(env)
    codec = JointActionCodec(spaces)
    by_index = {t.index: t for t in rec.trials()}
    rounds = rec.rounds()
    pending = _restore(algorithm, spaces, seed, rounds, rec.checkpoint(), by_index, codec)
    if callable(getattr(callback, "resume", None)):
        done_rounds = [r for r in rounds if r.observed]
        callback.resume([by_index[i] for r in done_rounds for i in range(r.start, r.start + r.n)])
    next_round = (rounds[-1].round + 1) if rounds else 0
    next_index = (rounds[-1].start + rounds[-1].n) if rounds else 0
    t0 = time.perf_counter()
    while pending is not None or next_index < budget:
        if pending is None:
            n = min(batch_size, budget - next_index)
            pending = Round(next_round, next_index, n, _proposed(algorithm, codec, n), False)
            rec.save_proposals(pending.round, pending.start, pending.proposals,
                               _state_bytes(algorithm) if rec.durable else None)
        new = _evaluate_round(rec, env, pending, seed, dedupe, by_index, codec)
        algorithm.observe(pending.proposals, np.array([t.score for t in new], dtype=np.float64))
        rec.save_observed(pending.round, _state_bytes(algorithm) if rec.durable else None)
        next_round, next_index = pending.round + 1, pending.start + pending.n
        pending = None
        if callback is not None:
            callback(new)
    history = [by_index[i] for i in sorted(by_index)]
    result = SearchResult(getattr(algorithm, "name", type(algorithm).__name__), seed, history,
                          time.perf_counter() - t0)
    base = getattr(env, "unwrapped", env)
    if hasattr(base, "space") and history:  # our envs: the row was validated where it entered
        result.best_pipeline = base.space.build(np.asarray(result.best.action, dtype=np.int64))
    return result


def _proposed(algorithm: SearchAlgorithm, codec: JointActionCodec, n: int) -> np.ndarray:
    """``algorithm.propose(n)``, validated (the one validation of a proposed batch): ``int64 [n, D]``."""
    out = algorithm.propose(n)
    try:
        batch = codec.validate_batch(out)
    except ValueError as exc:
        raise ValueError(f"{type(algorithm).__name__}.propose({n}) returned an invalid batch: {exc}") from None
    if batch.shape[0] != n:
        raise RuntimeError(f"{type(algorithm).__name__}.propose({n}) returned {batch.shape[0]} joint actions")
    if isinstance(out, np.ndarray) and np.shares_memory(batch, out):
        batch = batch.copy()  # the algorithm's own array stays writeable
    batch.flags.writeable = False  # the record and observe get these rows exactly as proposed
    return batch


def check_run_arguments(budget: Any, batch_size: Any) -> None:
    """``ValueError`` unless ``budget`` and ``batch_size`` are positive integers (bools are not)."""
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget must be a positive integer number of evaluations, got {budget!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def _state_bytes(algorithm: SearchAlgorithm) -> bytes | None:
    try:
        state = algorithm.state_dict()
    except NotImplementedError:
        return None
    return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)


def _restore(algorithm: SearchAlgorithm, spaces: Mapping[str, gymnasium.Space], seed: int, rounds: list[Round],
             ck: tuple[int, str, bytes | None] | None, by_index: dict[int, Trial],
             codec: JointActionCodec) -> Round | None:
    """Set the algorithm up (fresh, from its checkpoint, or by replaying stored rounds); returns the round
    that was proposed but not observed, if any."""
    algorithm.setup(spaces, seed)  # load_state_dict may expect a set-up object
    if ck is None:
        return None
    if ck[2] is not None:
        algorithm.load_state_dict(pickle.loads(ck[2]))
        return next(r for r in rounds if r.round == ck[0]) if ck[1] == "proposed" else None
    pending = None  # no state_dict: replay the stored rounds
    for r in rounds:
        again = np.asarray(algorithm.propose(r.n))
        if again.shape != r.proposals.shape or not np.array_equal(again, r.proposals):
            warnings.warn(
                f"{type(algorithm).__name__} proposed other actions when replaying round {r.round}: it is not "
                "deterministic given its seed, so the resumed search differs from an uninterrupted one; "
                "implement state_dict() for exact resumption", RuntimeWarning, stacklevel=4)
        if r.observed:
            algorithm.observe(r.proposals, np.array([by_index[r.start + i].score for i in range(r.n)],
                                                    dtype=np.float64))
        else:
            pending = r
    return pending


def _evaluate_round(rec: Recorder, env: Any, pending: Round, seed: int, dedupe: bool,
                    by_index: dict[int, Trial], codec: JointActionCodec) -> list[Trial]:
    """Evaluate (or reuse, or serve from the record) every trial of one round, recording each as it ends.
    The rows were validated when proposed; each is keyed once, here."""
    rnd, start, rows = pending.round, pending.start, pending.proposals
    n = len(rows)
    seeds = [evaluation_seed(seed, start + i) for i in range(n)]
    todo = [i for i in range(n) if start + i not in by_index]
    if not todo:
        return [by_index[start + i] for i in range(n)]
    keys = [codec.key(row) for row in rows]
    tuples = [tuple(row) for row in rows.tolist()]

    def commit(i: int, res: EvalResult) -> None:
        t = Trial(start + i, rnd, tuples[i], res, seeds[i], keys[i])
        rec.add_trial(t)
        by_index[t.index] = t

    first: dict[str, int] = {}
    evaluate = todo
    if dedupe:
        evaluate = []
        for i in todo:
            hit = rec.find(keys[i])
            if hit is not None:
                commit(i, _cached(hit))
            elif keys[i] not in first:
                first[keys[i]] = i
                evaluate.append(i)
            # else: a duplicate inside the round, served from its first copy below
    if evaluate:
        batch = rows if len(evaluate) == n else rows[evaluate]
        evaluate_joint_actions(env, batch, [seeds[i] for i in evaluate],
                               on_result=lambda j, res: commit(evaluate[j], res))
    for i in todo:  # in-round duplicates (dedupe), now that their first copy is recorded
        if start + i not in by_index:
            commit(i, _cached(by_index[start + first[keys[i]]]))
    return [by_index[start + i] for i in range(n)]


def _cached(t: Trial) -> EvalResult:
    return replace(t.result, seconds=0.0, info={**t.result.info, "cached_from": t.index})
