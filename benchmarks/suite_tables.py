"""The benchmark suite's tables: which algorithm variants and which tasks are benchmarked, the presets, and
how a task's env and an algorithm variant are built (read by ``suite.py``, ``suite_report.py`` and
``rerun_cells.py``).

Every algorithm variant is a registry name plus keyword arguments. The MA2ML variants: ``ma2ml*`` are our
extension (``agents/ma2ml_plus.py``, registry ``"ma2ml"``) with pieces taken away, pinned to the defaults
their cells were recorded with (``_RECORDED``); ``ma2ml-v2`` is today's defaults; ``ma2ml-paper*`` are the
paper's MA2ML (``agents/ma2ml.py``, registry ``"ma2ml-paper"``) and its ablations; ``ma2ml-rank`` and
``ma2ml-screen`` are the paper's method with one of our pieces added (``MA2MLPlusConfig.paper(...)``);
``ma2ml-lite`` is the paper's MA2ML-Lite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write a result file whole or not at all (a cell killed half-way leaves no file, so a rerun redoes it):
    the parent folder is made, the data goes to ``<path>.tmp``, then replaces ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data)
    os.replace(tmp, path)
    return path

# -- what is benchmarked -------------------------------------------------------------------------------
@dataclass(frozen=True)
class AlgoSpec:
    """A named algorithm variant: a registry name plus keyword arguments."""

    registry_name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    doc: str = ""
    in_presets: bool = True


def _paper_plus(**overrides: Any) -> dict[str, Any]:
    """Keyword arguments of our MA2ML (registry "ma2ml") set to the paper's method plus ``overrides``."""
    from agents.ma2ml_plus import MA2MLPlusConfig

    return {"config": MA2MLPlusConfig.paper(**overrides)}


#: the defaults of our MA2ML that its recorded cells ran with, before the full-fidelity stall fix (DESIGN 9)
_RECORDED = {"mirror_step": 0.5, "exploration": 0.05, "screen_neighbours": 0, "restart_after": 0}


def _recorded(**overrides: Any) -> dict[str, Any]:
    """Keyword arguments of our MA2ML as recorded (``_RECORDED``) plus ``overrides``."""
    return {**_RECORDED, **overrides}


ALGORITHMS: dict[str, AlgoSpec] = {
    "ma2ml": AlgoSpec("ma2ml", _recorded(), "MA2ML, our extension, as recorded: MLP critics on rank targets, "
                      "mirror-descent step 0.5, critic screening, exploration 0.05"),
    "ma2ml-v2": AlgoSpec("ma2ml", {}, "MA2ML, our extension with today's defaults: ma2ml plus the one-decision "
                         "neighbours of the 3 best rows screened, mirror step 0.25, exploration 0.2, policies "
                         "restarted after 32 evaluations without improvement"),
    "ma2ml-neighbours": AlgoSpec("ma2ml", {"restart_after": 0}, "ma2ml-v2 without restarts (DESIGN 9's lead)",
                                 in_presets=False),
    "ma2ml-no-credit": AlgoSpec("ma2ml", _recorded(credit_assignment=False), "MA2ML without credit assignment"),
    "ma2ml-on-policy": AlgoSpec("ma2ml", _recorded(off_policy=False),
                                "MA2ML whose policy step uses the latest round only (no replay)"),
    "ma2ml-no-screen": AlgoSpec("ma2ml", _recorded(screening=0), "MA2ML proposing plain policy samples",
                                in_presets=False),
    "ma2ml-fm": AlgoSpec("ma2ml", _recorded(critic="fm"), "MA2ML with the factorisation-machine critic",
                         in_presets=False),
    "ma2ml-fm-no-credit": AlgoSpec("ma2ml", _recorded(critic="fm", credit_assignment=False),
                                   "MA2ML, FM critic, without credit assignment", in_presets=False),
    "ma2ml-fm-on-policy": AlgoSpec("ma2ml", _recorded(critic="fm", off_policy=False),
                                   "MA2ML, FM critic, on-policy", in_presets=False),
    "ma2ml-fm-no-screen": AlgoSpec("ma2ml", _recorded(critic="fm", screening=0), "MA2ML, FM critic, no screening",
                                   in_presets=False),
    "ma2ml-fm-gradient": AlgoSpec("ma2ml", _recorded(critic="fm", policy_update="gradient", target_tau=0.1),
                                  "MA2ML, FM critic, Adam trust-region policy steps instead of the mirror step",
                                  in_presets=False),
    "ma2ml-paper": AlgoSpec("ma2ml-paper", {}, "the paper's MA2ML: MLP critic, Adam clipped steps, no screening"),
    "ma2ml-paper-no-credit": AlgoSpec("ma2ml-paper", {"credit_assignment": False},
                                      "the paper's MA2ML without credit assignment", in_presets=False),
    "ma2ml-paper-on-policy": AlgoSpec("ma2ml-paper", {"off_policy": False}, "the paper's MA2ML on-policy",
                                      in_presets=False),
    "ma2ml-rank": AlgoSpec("ma2ml", _paper_plus(critic_targets="rank"),
                           "the paper's MA2ML with the critic on rank (normal-score) targets", in_presets=False),
    "ma2ml-screen": AlgoSpec("ma2ml", _paper_plus(screening=16, critic_ensemble=4),
                             "the paper's MA2ML proposing the best of 16 candidates per evaluation by critic "
                             "mean + std", in_presets=False),
    "ma2ml-lite": AlgoSpec("ma2ml-lite", {}, "MA2ML-Lite: REINFORCE on the shared reward"),
    "separate": AlgoSpec("separate", {}, "one module at a time, others fixed (paper's baseline)"),
    "independent": AlgoSpec("independent", {}, "independent learners, no critic, no credit"),
    "ppo": AlgoSpec("ppo", {}, "stable-baselines3 PPO on the joint action"),
    "tpe": AlgoSpec("tpe", {}, "Optuna TPE over the joint space"),
    "evolution": AlgoSpec("evolution", {}, "regularised evolution (population 10, tournament 3)"),
    "local-search": AlgoSpec("local-search", {}, "local search over one-decision neighbours, first improvement, "
                                                 "random restarts (White et al. 2021)"),
    "tpe-univariate": AlgoSpec("tpe", {"multivariate": False, "constant_liar": False},
                               "TPE with one density per decision (hyperopt's classic form)", in_presets=False),
    # not in the presets: ~25 s per 200-evaluation cell on 2 CPU cores (TPE: 0.2 s)
    "gp": AlgoSpec("gp", {}, "Optuna's Gaussian-process BO (GPSampler) over the joint space", in_presets=False),
    "random": AlgoSpec("random", {}, "uniform random search"),
    # MARL-library algorithms on the decision-per-step view (issue 22, part 2): in the "marl" preset only; a
    # checkout whose registry lacks them runs everything else (``unregistered`` names them)
    "mappo": AlgoSpec("mappo", {}, "MAPPO (TorchRL's multi-agent components) on the decision-per-step view",
                      in_presets=False),
    "ippo": AlgoSpec("ippo", {}, "IPPO (TorchRL's multi-agent components) on the decision-per-step view",
                     in_presets=False),
    "iql": AlgoSpec("iql", {}, "independent Q-learning on the decision-per-step view", in_presets=False),
    "vdn": AlgoSpec("vdn", {}, "VDN (value decomposition) on the decision-per-step view", in_presets=False),
    "qmix": AlgoSpec("qmix", {}, "QMIX (monotonic mixing on the global state) on the decision-per-step view",
                     in_presets=False),
}
#: the "marl" preset's (qmix is registered and benchmarked on request: the CPU budget of the recorded run
#: left it out)
MARL_ALGOS = ["mappo", "ippo", "iql", "vdn"]


def unregistered(algos: list[str]) -> list[str]:
    """The variants among ``algos`` whose registry name this checkout's ``agents.registry`` lacks."""
    from agents.registry import registered_algorithms

    known = set(registered_algorithms())
    return [a for a in algos if ALGORITHMS[a].registry_name not in known]


@dataclass(frozen=True)
class TaskSpec:
    """A benchmark task: env keyword arguments; ``per_seed_task`` draws a random surrogate task per seed;
    ``benchmark`` names a tabular task of recorded real trainings (``ma2ml_env.benchmark_env``);
    ``final_training``: the search's final pick is trained on train + validation and tested (``train_final``)."""

    env_kwargs: dict[str, Any]
    doc: str
    per_seed_task: bool = False
    benchmark: str | None = None
    final_training: bool = False


def _budget(**kw: Any) -> Any:
    import ma2ml_env

    return ma2ml_env.CostBudget(**kw)


TASKS: dict[str, TaskSpec] = {
    "surrogate": TaskSpec({"reward": "surrogate", "reward_kwargs": {"noise_std": 0.01}},
                          "default surrogate task, N(0, 0.01^2) evaluation noise"),
    "surrogate-flops": TaskSpec(
        {"reward": "surrogate", "reward_kwargs": {"budget": ("hard", 2.0e7), "noise_std": 0.01}},
        "surrogate with a hard budget of 20 MFLOPs per image, N(0, 0.01^2) evaluation noise",
    ),
    "surrogate-noise": TaskSpec({"reward": "surrogate", "reward_kwargs": {"noise_std": 0.02}},
                                "surrogate with N(0, 0.02^2) evaluation noise"),
    "surrogate-random": TaskSpec({"reward": "surrogate", "reward_kwargs": {"noise_std": 0.01}},
                                 "a different random surrogate task per seed, N(0, 0.01^2) evaluation noise",
                                 per_seed_task=True),
    "train-digits": TaskSpec({"reward": "train", "reward_kwargs": {"budget": ("hard", 8.0e6)}},
                             "real child training on the embedded digits dataset (CPU), hard budget 8 MFLOPs"),
    "train-fashion": TaskSpec(
        {"reward": "train", "reward_kwargs": {"dataset": "fashion_mnist", "max_train": 2000, "val_fraction": 0.05,
                                              "budget": ("hard", 8.0e6)}},
        "real training on Fashion-MNIST (Debian's files; 2,000 training and 3,000 validation images, the 10,000 "
        "test images for the final pick; CPU), hard budget 8 MFLOPs", final_training=True),
    "train-cifar10": TaskSpec(
        {"reward": "train", "reward_kwargs": {"dataset": "npz", "root": "@cifar10", "max_train": 10000,
                                              "budget": ("hard", 8.0e6)}},
        "real training on CIFAR-10 (10,000 training and 2,500 validation images of a balanced 12,500-image "
        "subset, 2,000 test images for the final pick; CPU), hard budget 8 MFLOPs", final_training=True),
}

#: where the CIFAR-10 arrays of the train-cifar10 task are decoded to (from ../shared/data/cifar10, which
#: only benchmarks read); git ignores benchmarks/data/
CIFAR10_NPZ = ROOT / "benchmarks" / "data" / "cifar10-train12500-test2000.npz"
CIFAR10_SOURCE = ROOT.parent / "shared" / "data" / "cifar10"


def cifar10_npz() -> str:
    """The CIFAR-10 subset as an arrays file (``dataset="npz"``), decoded once with the data's own script."""
    if not CIFAR10_NPZ.exists():
        script = CIFAR10_SOURCE / "to_npz.py"
        if not script.exists():
            raise SystemExit(f"task train-cifar10 needs CIFAR-10 at {CIFAR10_SOURCE} (its to_npz.py); not found")
        CIFAR10_NPZ.parent.mkdir(parents=True, exist_ok=True)
        tmp = CIFAR10_NPZ.with_name("partial-" + CIFAR10_NPZ.name)
        subprocess.run([sys.executable, str(script), str(tmp), "--train", "12500", "--test", "2000"], check=True,
                       stdout=subprocess.DEVNULL)
        os.replace(tmp, CIFAR10_NPZ)
    return str(CIFAR10_NPZ)

def _tabular_tasks() -> dict[str, TaskSpec]:
    from ma2ml_env.rewards.tabular import BENCHMARKS

    return {name.replace("/", "-"): TaskSpec({}, spec.doc, benchmark=name) for name, spec in BENCHMARKS.items()}


TABULAR_TASKS = _tabular_tasks()
TASKS.update(TABULAR_TASKS)

PRESET_ALGOS = [a for a, spec in ALGORITHMS.items() if spec.in_presets]

PRESETS: dict[str, dict[str, Any]] = {
    # recorded real trainings: every tabular task, every algorithm
    "tabular": dict(tasks=list(TABULAR_TASKS), algos=PRESET_ALGOS, seeds=10, budget=200, batch_size=8),
    # the committed report (CPU)
    "paper": dict(tasks=["surrogate", "surrogate-flops", "surrogate-noise", "surrogate-random"],
                  algos=PRESET_ALGOS, seeds=10, budget=200, batch_size=8),
    "train": dict(tasks=["train-digits"], algos=["ma2ml", "ma2ml-paper", "separate", "tpe", "random"], seeds=3,
                  budget=24, batch_size=4),
    # real images (CPU): each search's final pick is trained on train + validation and tested
    "images": dict(tasks=["train-fashion", "train-cifar10"],
                   algos=["ma2ml", "ma2ml-paper", "separate", "tpe", "random"], seeds=3, budget=32, batch_size=4),
    # MARL-library algorithms beside MA2ML and the strongest baselines (issue 22, part 4)
    "marl": dict(tasks=[*TABULAR_TASKS, "surrogate"], algos=[*MARL_ALGOS, "ma2ml", "tpe", "random", "local-search"],
                 seeds=10, budget=200, batch_size=8),
    # CI smoke run
    "smoke": dict(tasks=["surrogate", "surrogate-noise"], algos=["ma2ml", "random"], seeds=2, budget=16,
                  batch_size=4),
}


def make_env_kwargs(task: str) -> dict[str, Any]:
    """The env keyword arguments of a (non-tabular) task, with data paths resolved (budget still a tuple)."""
    kwargs = json.loads(json.dumps(TASKS[task].env_kwargs))
    rk = kwargs.setdefault("reward_kwargs", {})
    if rk.get("root") == "@cifar10":
        rk["root"] = cifar10_npz()
    return kwargs


def make_env(task: str, seed: int):
    import ma2ml_env

    spec = TASKS[task]
    if spec.benchmark is not None:
        return ma2ml_env.benchmark_env(spec.benchmark)
    kwargs = make_env_kwargs(task)
    rk = kwargs["reward_kwargs"]
    if "budget" in rk:
        mode, flops = rk.pop("budget")
        rk["budget"] = _budget(max_flops=flops, mode=mode)
    if spec.per_seed_task:
        rk["task"] = int(seed)
    return ma2ml_env.parallel_env(**kwargs)


def make_algo(name: str):
    from agents.registry import make_algorithm

    spec = ALGORITHMS[name]
    return make_algorithm(spec.registry_name, **spec.kwargs)
