r"""The surrogate reward: a cheap, numpy-only model of how AUG, NAS and HPO choices interact.

For tests, CI and benchmarking search algorithms at thousands of evaluations per second. It models
the interactions the paper's argument rests on, so that optimising one module at a time with the
others fixed can get stuck below the joint optimum, as in real pipelines.

**Features** (each in [0, 1], from the decoded values; ``clip`` to [0, 1]):

* capacity ``c = (log F - log F_min) / (log F_max - log F_min)``, ``F`` the child's analytical FLOPs,
  ``F_min``/``F_max`` those of the smallest/largest child of the default ``ArchitectureModule``;
* augmentation strength ``s = mean_slots p * strength(op, m)`` with ``strength = m / 9`` for ops with a
  magnitude, 0.5 for AutoContrast/Equalize/Invert, 0 for Identity; a policy of K sub-policies of J ops
  has K*J slots;
* augmentation quality ``q = mean_slots p * u[op]``, ``u`` the task's per-op utility in [-1, 1];
* training length in steps ``e = (log2(epochs / batch_size) + 8) / 6`` (the optimiser steps per training
  image: 1 epoch of batches of 256 is 0, 8 epochs of batches of 32 is 1); weight decay
  ``w = log10(1 + wd / 1e-5) / log10(201)``;
  label smoothing ``l = ls / 0.2``.

``c`` is rounded to multiples of 1/40: with it the exact global optimum is a product over 41 capacity
levels (see :meth:`SurrogateEvaluator.optimum`). ``s`` is not rounded: every ``p * strength`` is a
multiple of 1/90, so the strength of a policy takes at most ``90 * K * J + 1`` exact values, which the
optimum enumerates; every change of a probability or magnitude of an applied op changes the score.

**Score.** With the task's coefficients (defaults in brackets)

.. code-block:: text

    z = a_c c - b_c c^2                         capacity helps, then hurts                      [1.258, 2.53]
                                                (optimum c* = a_c / 2 b_c)
      + a_e e + a_q q                           more optimiser steps, useful ops               [2.458, 3.243]
      + g_sc (2s - 1)(2c - 1)                   strong augmentation needs capacity                 [0]
      + g_se (2s - 1)(2e - 1)                   strong augmentation needs long training            [0.019]
      - kappa (s + omega w + lam l - rho c)^2   augmentation, weight decay and label smoothing
                                                substitute for one another; the regularisation
                                                needed grows with capacity            [2.154, 0.5, 0.6, 1.5]
      - a_lr log10(lr / lr*)^2,  lr* = lr0[opt] sqrt(batch / 128)
                                                learning rate vs batch size and optimizer  [0.496; lr0 0.3,
                                                                                           0.003, 0.003]
      + b_opt[opt] + b_sched[schedule] + z0     [0, 0.056, -0.16], [0, 0.129, 0.133], -1.859
    accuracy = floor + (ceil - floor) * sigmoid(z)   (+ N(0, noise_std^2) seeded noise, clipped to [0, 1])

**Calibration (v1).** The default coefficients are fitted to 200 uniformly random pipelines of the default
env trained for real on digits (``benchmarks/calibrate_surrogate.py`` on the recordings of
``benchmarks/surrogate_realism.py``): least squares on the logit of the real accuracy, under constraints that
keep the surrogate useful for benchmarks (every module explains >= 5% of the variance alone, cross-module
interactions >= 10%, an interior capacity optimum, a top that is not saturated). Measured (Sobol indices,
20,000 base samples; Spearman over the 200 real trainings):

    ====================== =========== ======================================================
                           v1 (now)    v0
    ====================== =========== ======================================================
    AUG / NAS / HPO alone  5% / 5% /   0.1% / 0.4% / 96%
                           80%
    cross-module           10%         4%
    optimizer x lr pair    40%         85%
    Spearman vs real       0.80 (0.76  0.62
    digits training        5-fold CV)
    ====================== =========== ======================================================

Real training on digits is led by the number of optimiser steps (epochs / batch size) and the learning
rate, so the HPO module dominates there too; the constraints hold AUG and NAS at the least share asked of
them. The exact optimum (0.964) is a small net (capacity 0.25 of the range) with Cutout at magnitude 4 in
every slot, neither the largest net nor the strongest augmentation; in HPO it takes the most optimiser
steps (8 epochs, batches of 32), as real training does.

**Costs.** FLOPs and parameters are the analytical counts of the child; ``seconds`` is a simulated
training time ``epochs * dataset_size * 3 * FLOPs / throughput + overhead``.

**Budget.** An optional :class:`~ma2ml_env.rewards.base.CostBudget` (or a dict of its fields, e.g. from
JSON: ``reward_kwargs={"budget": {"max_flops": 5e6}}``; checked by :meth:`CostBudget.coerce`, the same
``ValueError`` as the training backend's): hard (over budget -> status ``"over_budget"``,
``penalty_score``) or soft (MnasNet ``accuracy * (FLOPs / target) ** w``).

**One formula, every path.** The score of one flat joint action is written once,
:func:`ma2ml_env.rewards._jit.score`, over the tables :meth:`SurrogateEvaluator.tables` packs at ``bind``;
the batch path (``evaluate_actions``), the scalar path (``evaluate_one_tuple``, ``env.step``) and the
compiled env step (numba) all run it (see :mod:`ma2ml_env.rewards._jit`). The budget is
:meth:`CostBudget.apply` / :meth:`CostBudget.apply_arrays`.

**Other modules.** The score models the built-in modules: the first :class:`AugmentModule`,
:class:`ArchitectureModule` and :class:`HyperParameterModule` of the env (absent ones are read off the
base pipeline). Any other module (a user's, a second copy of a built-in) whose choices change the pipeline
must declare its effect on the score, or ``bind`` (building the env) raises ``ValueError`` naming it and
the pipeline fields it changes: its choices would otherwise all get the same reward. (A module none of
whose choices changes the pipeline, checked at ``bind`` with the other modules at their first choices,
cannot change any reward and is accepted as it is.) The declaration is a class (or instance) attribute
``surrogate_effects``, mapping each of the module's decisions to one logit offset per choice (numbers in
[-10, 10]; all zeros declares "no effect"); the offsets of the chosen values are added to ``z``::

    class Regularise(AutoMLModule):
        name = "reg"
        decisions = (Decision("dropout", (0.0, 0.1, 0.3)), Decision("mixup", (0.0, 0.2)))
        surrogate_effects = {"dropout": (0.0, 0.08, -0.05), "mixup": (0.0, 0.1)}

The offsets are the user's model, not a prediction of ours (``reward="train"`` measures the real effect).
They are additive and independent of the other modules, so :meth:`SurrogateEvaluator.optimum` stays exact
(each such decision takes its largest offset), and they are part of :meth:`SurrogateEvaluator.config`.
With such modules ``env.step`` runs the Python path (no compiled step).

**Tasks.** ``task="default"`` or ``task=<int>``: a randomly generated task (coefficients, op utilities,
optimal learning rates) drawn from that seed, so algorithms are not tuned to one function.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ma2ml_env.modules.aug import AUG_OPS, AugmentModule
from ma2ml_env.modules.hpo import OPTIMIZERS, SCHEDULES, HyperParameterModule
from ma2ml_env.modules.nas import ArchitectureModule
from ma2ml_env.pipeline import MAGNITUDE_BINS, Pipeline, SearchSpace, head_costs, stage_costs, stem_costs
from ma2ml_env.rewards import _jit
from ma2ml_env.rewards._jit import LEVELS, SurrogateTables
from ma2ml_env.rewards.base import EMPTY_INFO, STATUS_CODES, BatchResult, CostBudget, EvalResult, Evaluator

__all__ = ["LEVELS", "SurrogateEvaluator", "SurrogateTask"]

_CHUNK = 16384
_OK, _OVER_BUDGET = STATUS_CODES["ok"], STATUS_CODES["over_budget"]


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


# the status and info of one-row results, shared (read-only)
_OK_1, _OVER_BUDGET_1 = _frozen(np.array([_OK])), _frozen(np.array([_OVER_BUDGET]))
_INFO_1 = (EMPTY_INFO,)
_MAX_EFFECT = 10.0  # bound of a declared logit offset (exp stays finite for any sum of them)
_score_py, _add_noise_py = _jit.PY.score, _jit.PY.add_noise
_OP_NAMES = tuple(AUG_OPS)
_NO_MAGNITUDE = {"AutoContrast": 0.5, "Equalize": 0.5, "Invert": 0.5, "Identity": 0.0}
#: default per-op utility: geometric and mild photometric ops help, Invert and Solarize hurt.
_DEFAULT_UTILITY = {
    "Identity": 0.0, "ShearX": 0.5, "ShearY": 0.4, "TranslateX": 0.6, "TranslateY": 0.6, "Rotate": 0.7,
    "Brightness": 0.2, "Color": 0.1, "Contrast": 0.3, "Sharpness": 0.2, "Posterize": -0.2,
    "Solarize": -0.5, "AutoContrast": 0.3, "Equalize": 0.1, "Invert": -0.9, "Cutout": 0.8,
}


@dataclass(frozen=True)
class SurrogateTask:
    """Coefficients of the surrogate score (see the module docstring for the formula)."""

    a_c: float = 1.258
    b_c: float = 2.53
    a_e: float = 2.458
    a_q: float = 3.243
    g_sc: float = 0.0
    g_se: float = 0.019
    kappa: float = 2.154
    omega: float = 0.5
    lam: float = 0.6
    rho: float = 1.5
    a_lr: float = 0.496
    z0: float = -1.859
    floor: float = 0.1
    ceil: float = 0.99
    lr0: tuple[float, ...] = (0.3, 0.003, 0.003)  # per OPTIMIZERS
    b_opt: tuple[float, ...] = (0.0, 0.056, -0.16)
    b_sched: tuple[float, ...] = (0.0, 0.129, 0.133)  # per SCHEDULES
    op_utility: tuple[float, ...] = field(
        default_factory=lambda: tuple(_DEFAULT_UTILITY[o] for o in _OP_NAMES)
    )

    @classmethod
    def random(cls, seed: int) -> SurrogateTask:
        """A randomly generated task from ``seed``: every coefficient of the default (calibrated) task scaled
        by a factor in [0.6, 1.4], the optimal learning rates moved by up to half a decade, the optimizer
        and schedule biases and ``z0`` shifted, and new per-op utilities."""
        rng = np.random.default_rng(np.random.SeedSequence([20230601, int(seed)]))
        d = cls()

        def scale(v: float) -> float:
            return float(v * rng.uniform(0.6, 1.4))

        def shift(v: float, w: float) -> float:
            return float(v + rng.uniform(-w, w))

        return cls(
            **{
                k: scale(getattr(d, k))
                for k in ("a_c", "b_c", "a_e", "a_q", "g_sc", "g_se", "kappa", "omega", "lam", "rho", "a_lr")
            },
            z0=shift(d.z0, 0.5),
            floor=d.floor,
            ceil=d.ceil,
            lr0=tuple(float(v) * 10 ** rng.uniform(-0.5, 0.5) for v in d.lr0),
            b_opt=tuple(shift(v, 0.2) for v in d.b_opt),
            b_sched=tuple(shift(v, 0.2) for v in d.b_sched),
            op_utility=tuple(0.0 if o == "Identity" else float(rng.uniform(-1.0, 1.0)) for o in _OP_NAMES),
        )


def _changed_fields(space: SearchSpace, mod: Any, off: int, max_joint: int = 256) -> list[str]:
    """The :class:`Pipeline` fields that some choice of ``mod`` changes, with the other modules at their first
    choices: every choice of each decision, and every combination when there are at most ``max_joint``."""
    nvec = [int(v) for v in space.nvecs[mod.name]]
    flat = np.zeros(space.joint_nvec.size, dtype=np.int64)
    ref = space.decode(flat)
    if math.prod(nvec) <= max_joint:
        rows = itertools.product(*(range(n) for n in nvec))
    else:
        rows = (tuple(c if k == j else 0 for k in range(len(nvec)))
                for j, n in enumerate(nvec) for c in range(n))
    changed: set[str] = set()
    for row in rows:
        flat[off: off + len(nvec)] = row
        p = space.decode(flat)
        changed.update(f.name for f in dataclasses.fields(p)
                       if f.name != "choices" and getattr(p, f.name) != getattr(ref, f.name))
    return sorted(changed)


# -- feature maps of single decision values (vectorised through per-choice tables) -------------------
def _op_strength(op: str, mag: int) -> float:
    return _NO_MAGNITUDE.get(op, mag / (MAGNITUDE_BINS - 1))


def _steps_level(epochs: float, batch_size: float) -> float:
    """Training length in optimiser steps per image: ``log2(epochs / batch_size)`` mapped from
    ``[log2(1/256), log2(8/32)]`` to ``[0, 1]`` (on real training, fewer steps is what a large batch
    costs)."""
    return min(max((math.log2(max(epochs, 1e-9) / max(batch_size, 1e-9)) + 8.0) / 6.0, 0.0), 1.0)


def _wd_level(v: float) -> float:
    return min(math.log10(1.0 + v / 1e-5) / math.log10(201.0), 1.0)


def _ls_level(v: float) -> float:
    return min(v / 0.2, 1.0)


def _noise(seed: int) -> float:
    return float(np.random.default_rng(int(seed) & 0xFFFFFFFFFFFF).normal())


def _place(table: np.ndarray, axes: list[int | None], nd: int) -> np.ndarray:
    """View ``table`` as an ``nd``-dim array whose dim ``i`` lies on axis ``axes[i]`` (``None``: a
    size-1 dim that is dropped), for broadcasting."""
    keep = [i for i, ax in enumerate(axes) if ax is not None]
    t = table.reshape([table.shape[i] for i in keep])
    target = [axes[i] for i in keep]
    order = sorted(range(len(target)), key=target.__getitem__)
    t = np.transpose(t, order)
    shape = [1] * nd
    for j, i in enumerate(order):
        shape[target[i]] = t.shape[j]
    return t.reshape(shape)


class SurrogateEvaluator(Evaluator):
    """Numpy-only surrogate reward backend (``reward="surrogate"``).

    Args:
        task: ``"default"``, an int (a random task from that seed) or a :class:`SurrogateTask`.
        noise_std: standard deviation of the Gaussian evaluation noise (seeded by the evaluation seed).
        budget: optional FLOPs/params budget: a :class:`~ma2ml_env.CostBudget` or a dict of its fields
            (``{"max_flops": 5e6}``; JSON works).
        in_channels, num_classes: the child's input channels and classes (for the FLOPs count).
        dataset_size, throughput, overhead: the simulated training time model.
    """

    name = "surrogate"

    def __init__(
        self,
        task: str | int | SurrogateTask = "default",
        noise_std: float = 0.0,
        budget: CostBudget | Mapping[str, Any] | None = None,
        in_channels: int = 3,
        num_classes: int = 10,
        dataset_size: int = 50_000,
        throughput: float = 1e12,
        overhead: float = 1.0,
    ) -> None:
        if isinstance(task, SurrogateTask):
            self.task = task
        elif task == "default":
            self.task = SurrogateTask()
        elif isinstance(task, (int, np.integer)) and not isinstance(task, bool):
            self.task = SurrogateTask.random(int(task))
        else:
            raise ValueError(f"task must be 'default', an int seed or a SurrogateTask, got {task!r}")
        if not (isinstance(noise_std, (int, float)) and noise_std >= 0):
            raise ValueError(f"noise_std must be a number >= 0, got {noise_std!r}")
        budget = CostBudget.coerce(budget)  # the one rule of every backend (a dict of fields too)
        self.noise_std = float(noise_std)
        self.budget = budget or CostBudget()
        self._budget_active = self.budget.active
        self.in_channels, self.num_classes = int(in_channels), int(num_classes)
        self.dataset_size, self.throughput, self.overhead = dataset_size, throughput, overhead
        ref = ArchitectureModule()
        lo = {d.name: d.choices[0] for d in ref.decisions}
        hi = {d.name: d.choices[-1] for d in ref.decisions}
        f_lo = ref.apply(lo, Pipeline()).arch.flops(self.in_channels, self.num_classes)
        f_hi = ref.apply(hi, Pipeline()).arch.flops(self.in_channels, self.num_classes)
        self._log_f = (math.log(f_lo), math.log(f_hi))
        self.space: SearchSpace | None = None
        self._tables: SurrogateTables | None = None
        self._jit_ok = False
        self._row_kernel: Any = ...  # the compiled single-row path: looked up on the first one-row call

    # -- binding: per-choice lookup tables -------------------------------------------------------------
    def bind(self, space: SearchSpace) -> None:
        self.space = space
        self._optimum: tuple[float, dict[str, np.ndarray]] | None = None
        t = self.task
        util = dict(zip(_OP_NAMES, t.op_utility))
        base = space.base
        self._aug = self._nas = self._hpo = None
        self._log_lr0 = np.log10(np.asarray(t.lr0, dtype=float))
        self._b_opt, self._b_sched = np.asarray(t.b_opt, dtype=float), np.asarray(t.b_sched, dtype=float)
        for mod, off in zip(space.modules, space.offsets):
            if isinstance(mod, AugmentModule) and self._aug is None:
                n = mod.num_subpolicies * mod.ops_per_subpolicy
                cols = off + 3 * np.arange(n)
                strength = np.array([[_op_strength(o, m) for m in mod.magnitudes] for o in mod.ops])
                self._aug = dict(
                    op=cols, prob=cols + 1, mag=cols + 2, n=n, mod=mod,
                    strength=strength, probs=np.array(mod.probs, dtype=float),
                    util=np.array([util[o] for o in mod.ops]), op_cols=cols.tolist(),
                )
                probs = self._aug["probs"][None, :, None]
                self._aug["s_flat"] = (probs * strength[:, None, :]).reshape(-1)
                self._aug["q_flat"] = np.broadcast_to(
                    probs * self._aug["util"][:, None, None],
                    (len(mod.ops), len(mod.probs), strength.shape[1]),
                ).reshape(-1)
                self._aug["flat_lists"] = (self._aug["s_flat"].tolist(), self._aug["q_flat"].tolist(),
                                           len(mod.probs), strength.shape[1])
            elif isinstance(mod, ArchitectureModule) and self._nas is None:
                self._nas = self._nas_tables(mod, off, space.base)
                self._nas["mod"] = mod
            elif isinstance(mod, HyperParameterModule) and self._hpo is None:
                ch = {d.name: d.choices for d in mod.decisions}
                self._hpo = dict(
                    off=off, mod=mod,
                    opt=np.array([OPTIMIZERS.index(o) for o in ch["optimizer"]]),
                    log_lr=np.log10(np.array(ch["lr"], dtype=float)),
                    w=np.array([_wd_level(v) for v in ch["weight_decay"]]),
                    bs=np.array(ch["batch_size"], dtype=float),
                    sched=np.array([SCHEDULES.index(v) for v in ch["schedule"]]),
                    ls=np.array([_ls_level(v) for v in ch["label_smoothing"]]),
                    e=np.array([[_steps_level(v, b) for b in ch["batch_size"]] for v in ch["epochs"]]),
                    epochs=np.array(ch["epochs"], dtype=float),
                )
                self._hpo["radix"] = [
                    int(v) for v in np.cumprod([1, *space.nvecs[mod.name][:0:-1].tolist()])[::-1]
                ]
        self._bind_effects(space)
        # Features of absent modules are constants read off the base pipeline.
        slots = [op for sub in base.augment for op in sub]
        self._base_s = (
            float(np.mean([op.prob * _op_strength(op.op, op.magnitude) for op in slots])) if slots else 0.0
        )
        self._base_q = float(np.mean([op.prob * util.get(op.op, 0.0) for op in slots])) if slots else 0.0
        a = base.arch
        self._base_arch = (
            a.flops(self.in_channels, self.num_classes),
            a.params(self.in_channels, self.num_classes),
        )
        tr = base.train
        self._base_train = dict(
            opt=OPTIMIZERS.index(tr.optimizer), log_lr=math.log10(tr.lr), w=_wd_level(tr.weight_decay),
            bs=float(tr.batch_size), sched=SCHEDULES.index(tr.schedule), ls=_ls_level(tr.label_smoothing),
            e=_steps_level(tr.epochs, tr.batch_size), epochs=float(tr.epochs),
        )
        h = self._base_train
        self._base_hpo = (float(self._hz(h["opt"], h["log_lr"], h["bs"], h["sched"], h["e"])), h["e"], h["w"],
                          h["ls"], h["epochs"])
        if self._hpo is not None:  # every HPO combination's hz and levels, for the scalar path
            g = self._hpo
            nvec = tuple(int(v) for v in space.joint_nvec[g["off"]: g["off"] + 7])
            Ah = np.zeros((math.prod(nvec), space.joint_nvec.size), dtype=np.int64)
            Ah[:, g["off"]: g["off"] + 7] = np.stack(np.unravel_index(np.arange(len(Ah)), nvec), axis=1)
            f = self._hpo_features(Ah)
            g["hz_list"] = self._hz(f["opt"], f["log_lr"], f["bs"], f["sched"], f["e"]).tolist()
            g["e_list"], g["w_list"], g["ls_list"], g["ep_list"] = (
                f[k].tolist() for k in ("e", "w", "ls", "epochs")
            )
        self._tables = self._pack_tables(space)
        self._py_tables = (self._tables.f, self._tables.i, self._tables.c)  # the scalar path's arguments
        t = self._tables
        self._kernel_tables = (t.F, t.I, t.C)  # the compiled path's
        self._jit_ok = self.noise_std == 0 and not self._budget_active and not self._effects

    def _bind_effects(self, space: SearchSpace) -> None:
        """The declared effects of the modules the score does not model (module docstring, "Other modules");
        a module that declares none is refused: its choices would not change the score."""
        modelled = {id(g["mod"]) for g in (self._aug, self._nas, self._hpo) if g is not None}
        cols: list[int] = []
        tables: list[list[float]] = []
        self._effects: dict[str, dict[str, list[float]]] = {}
        for mod, off in zip(space.modules, space.offsets):
            if id(mod) in modelled:
                continue
            names = [d.name for d in mod.decisions]
            declared = mod.surrogate_effects
            if declared is None:
                changed = _changed_fields(space, mod, off)
                if not changed:  # no choice of it changes the pipeline: no reward can depend on it
                    continue
                raise ValueError(
                    f"the surrogate reward does not model module {mod.name!r} ({type(mod).__name__}), whose "
                    f"choices change the pipeline's {', '.join(changed)}: it scores the built-in "
                    "AugmentModule, ArchitectureModule and HyperParameterModule (one of each), so every "
                    f"choice of {mod.name!r} would get the same reward. Use reward='train' (real training) "
                    "or an Evaluator of your own, or declare the module's effect on the surrogate's logit: "
                    "a class attribute surrogate_effects = {decision: (offset per choice, ...)} for each of "
                    f"its decisions {names} (see ma2ml_env.rewards.surrogate, 'Other modules')")
            if not isinstance(declared, Mapping) or sorted(declared) != sorted(names):
                got = sorted(declared) if isinstance(declared, Mapping) else type(declared).__name__
                raise ValueError(f"surrogate_effects of module {mod.name!r} must map each of its decisions "
                                 f"{names} to one logit offset per choice, got {got}")
            self._effects[mod.name] = {}
            for j, d in enumerate(mod.decisions):
                try:
                    row = [float(v) for v in declared[d.name]]
                except (TypeError, ValueError):
                    row = []
                if len(row) != len(d.choices) or not all(abs(v) <= _MAX_EFFECT for v in row):
                    raise ValueError(
                        f"surrogate_effects[{d.name!r}] of module {mod.name!r} must hold {len(d.choices)} "
                        f"numbers in [-{_MAX_EFFECT:g}, {_MAX_EFFECT:g}] (one logit offset per choice of "
                        f"{list(d.choices)}), got {declared[d.name]!r}")
                self._effects[mod.name][d.name] = row
                if any(row):  # all zeros: declared to have no effect
                    cols.append(off + j)
                    tables.append(row)
        if not cols:
            self._effects = {}  # nothing changes a score: the built-ins' paths (and config) as they are
        self._eff_cols = np.array(cols, dtype=np.int64)
        self._eff_tables = [np.array(r) for r in tables]
        self._eff_pairs = list(zip(cols, tables))  # the scalar path's

    def _apply_effects(self, acc: Any, delta: Any) -> Any:
        """``floor + span * sigmoid(z + delta)`` from ``acc = floor + span * sigmoid(z)`` (arrays or floats):
        ``sigmoid(z + d) = u e^d / (1 - u + u e^d)`` with ``u = sigmoid(z)``."""
        t = self.task
        span = t.ceil - t.floor
        u = (acc - t.floor) / span
        if isinstance(delta, np.ndarray):
            k = np.exp(np.clip(delta, -700.0, 700.0))
        else:
            k = math.exp(min(max(delta, -700.0), 700.0))
        return t.floor + span * (u * k / (1.0 - u + u * k))

    def tables(self) -> SurrogateTables:
        """The bound space's lookup tables and coefficients in the layout of the one score function
        (:func:`ma2ml_env.rewards._jit.score`, which every evaluation path runs)."""
        self._require_bound()
        return self._tables

    def _pack_tables(self, space: SearchSpace) -> SurrogateTables:
        J = _jit
        t = self.task
        table: list[float] = []

        def add(xs) -> int:  # append a lookup table to F, return its offset
            start = len(table)
            table.extend(xs)
            return start

        head = [0] * J.STAGES
        cols: list[int] = []
        stage_rows: list[int] = []
        g = self._aug
        if g is not None:
            S, Q, pp, mm = g["flat_lists"]
            head[J.HAS_AUG], head[J.N_SLOTS], head[J.P], head[J.M] = 1, g["n"], pp, mm
            head[J.O_S], head[J.O_Q] = add(S), add(Q)
            cols = list(g["op_cols"])
        g = self._nas
        if g is not None:
            stem_m, stem_p, st_m, st_p, head_m, head_p, strides, hw = g["flat_lists"]
            head[J.HAS_NAS], head[J.NS], head[J.RES_COL], head[J.NAS_OFF], head[J.HW] = \
                1, g["ns"], g["off"] + 4 * g["ns"], g["off"], hw
            head[J.O_STEM_M], head[J.O_STEM_P], head[J.O_HEAD_M], head[J.O_HEAD_P] = \
                add(stem_m), add(stem_p), add(head_m), add(head_p)
            for i in range(g["ns"]):
                stage_rows += [add(st_m[i]), add(st_p[i]), *strides[i], g["off"] + 4 * i]
        h = self._hpo
        if h is not None:
            if len(h["radix"]) != 7:  # pragma: no cover - the HPO module has 7 decisions
                raise RuntimeError("the surrogate's tables expect 7 hyper-parameter decisions")
            head[J.HAS_HPO], head[J.HPO_OFF] = 1, h["off"]
            rows = zip(*(h[k] for k in ("hz_list", "e_list", "w_list", "ls_list", "ep_list")))
            head[J.O_HPO] = add([v for row in rows for v in row])
            head[J.R0:J.R6 + 1] = h["radix"]
        head[J.N_AGENTS] = len(space.names)
        head[J.SIZES] = J.STAGES + len(stage_rows)
        head[J.OP_COLS] = head[J.SIZES] + len(space.names)
        ints = head + stage_rows + [int(v) for v in space.sizes] + cols
        bh = self._base_hpo
        consts = [
            t.a_c,
            t.b_c,
            t.a_q,
            t.g_sc,
            t.g_se,
            t.kappa,
            t.omega,
            t.lam,
            t.rho,
            t.floor,
            t.ceil - t.floor,
            *self._log_f,
            float(self.dataset_size),
            float(self.throughput),
            float(self.overhead),
            self._base_s,
            self._base_q,
            float(self._base_arch[0]),
            float(self._base_arch[1]),
            *(float(v) for v in bh),
        ]
        consts = [float(v) for v in consts]
        if not table:
            table = [0.0]
        return SurrogateTables(np.ascontiguousarray(space.joint_nvec, dtype=np.int64),
                               np.array(table, dtype=np.float64), np.array(ints, dtype=np.int64),
                               np.array(consts, dtype=np.float64), table, ints, consts)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_row_kernel"] = ...  # a numba dispatcher: looked up again after unpickling
        return state

    def _lookup_row_kernel(self) -> Any:
        # the compiled single-row path (numba; only without noise, budget and declared effects, where the
        # score is the accuracy); None means the Python scalar path (same numbers). Looked up on the first
        # one-row evaluation: importing numba and loading the kernel costs ~1 s, which batch-only searches
        # never pay.
        self._row_kernel = _jit.row_kernel() if self._jit_ok else None
        return self._row_kernel

    def _require_bound(self) -> SearchSpace:
        if self.space is None:
            raise RuntimeError("SurrogateEvaluator is not bound to a search space; the env calls bind(space)")
        return self.space

    # -- features ---------------------------------------------------------------------------------------
    def _aug_features(self, A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean augmentation strength and quality of flat actions ``[K, D]`` (what the batch path uses)."""
        g = self._aug
        if g is None:
            k = A.shape[0]
            return np.full(k, self._base_s), np.full(k, self._base_q)
        t = self._tables
        ssum, qsum = _jit.NP.slot_sums(np.asarray(A, dtype=np.int64).T, t.F, t.i)
        return ssum / g["n"], qsum / g["n"]

    def _nas_tables(self, mod: ArchitectureModule, off: int, base: Pipeline) -> dict[str, Any]:
        """Per-stage cost tables: stage ``s`` costs depend on (resolution, previous width, kernel,
        expansion, width, depth) only, so any architecture's cost is a sum of a few table entries."""
        ns = len(mod.base_widths)
        ch = {d.name: np.array(d.choices) for d in mod.decisions}
        first = {d.name: d.choices[0] for d in mod.decisions}
        widths = np.array(
            [
                [
                    mod.apply({**first, f"stage{s}_width": w}, Pipeline()).arch.stages[s].width
                    for w in ch[f"stage{s}_width"]
                ]
                for s in range(ns)
            ],
            dtype=np.float64,
        )
        res = ch["resolution"].astype(np.float64)
        stem_m, stem_p = stem_costs(res, base.arch.stem_width, self.in_channels)
        size, c_prev = res, np.array([float(base.arch.stem_width)])
        macs, params = [], []
        for s in range(ns):
            m, p, _out = stage_costs(
                size.reshape(-1, 1, 1, 1, 1, 1),
                c_prev.reshape(1, -1, 1, 1, 1, 1),
                ch[f"stage{s}_kernel"].reshape(1, 1, -1, 1, 1, 1),
                ch[f"stage{s}_expansion"].reshape(1, 1, 1, -1, 1, 1),
                widths[s].reshape(1, 1, 1, 1, -1, 1),
                ch[f"stage{s}_depth"].reshape(1, 1, 1, 1, 1, -1),
                mod.strides[s],
            )
            macs.append(m)
            params.append(p)
            size = np.ceil(size / mod.strides[s])
            c_prev = widths[s]
        head_m, head_p = head_costs(
            size[:, None], widths[-1][None, :], base.arch.head_width, self.num_classes
        )
        head_m, head_p = (np.broadcast_to(x, (len(res), widths.shape[1])).copy() for x in (head_m, head_p))
        return dict(
            off=off,
            ns=ns,
            stem=(stem_m, stem_p),
            stages=(macs, params),
            head=(head_m, head_p),
            flat_lists=(
                stem_m.tolist(),
                stem_p.tolist(),
                [m.reshape(-1).tolist() for m in macs],
                [p.reshape(-1).tolist() for p in params],
                head_m.reshape(-1).tolist(),
                head_p.reshape(-1).tolist(),
                [tuple(int(v) for v in np.cumprod(m.shape[:0:-1])[::-1]) for m in macs],
                head_m.shape[1],
            ),
        )

    def _nas_costs(self, A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """FLOPs and params of flat actions ``[K, D]``."""
        out = self._arrays(A, noise=False)
        return out["flops"], out["params"]

    def _hpo_features(self, A: np.ndarray) -> dict[str, np.ndarray]:
        g = self._hpo
        if g is None:
            return {k: np.full(A.shape[0], v) for k, v in self._base_train.items()}
        o = g["off"]
        return dict(
            opt=g["opt"][A[:, o]], log_lr=g["log_lr"][A[:, o + 1]], w=g["w"][A[:, o + 2]],
            bs=g["bs"][A[:, o + 3]], sched=g["sched"][A[:, o + 4]], ls=g["ls"][A[:, o + 5]],
            e=g["e"][A[:, o + 6], A[:, o + 3]], epochs=g["epochs"][A[:, o + 6]],
        )

    def capacity(self, flops: np.ndarray) -> np.ndarray:
        """Capacity level ``c`` of children with these FLOPs (rounded to 1/LEVELS)."""
        return _jit.NP.capacity(np.asarray(flops, dtype=np.float64), self._consts())

    def _consts(self) -> np.ndarray:
        lo, hi = self._log_f
        t = self.task
        c = np.zeros(_jit.BASE_EP + 1)
        c[[_jit.A_C, _jit.B_C, _jit.A_Q, _jit.G_SC, _jit.G_SE, _jit.KAPPA, _jit.OMEGA, _jit.LAM, _jit.RHO,
           _jit.FLOOR, _jit.SPAN, _jit.LO, _jit.HI]] = (t.a_c, t.b_c, t.a_q, t.g_sc, t.g_se, t.kappa, t.omega,
                                                       t.lam, t.rho, t.floor, t.ceil - t.floor, lo, hi)
        return c

    def _hz(self, opt, log_lr, bs, sched, e):
        """The part of z that depends on hyper-parameters alone (works on arrays and on floats)."""
        t = self.task
        lr_star = self._log_lr0[opt] + 0.5 * np.log10(bs / 128.0)
        return t.a_e * e - t.a_lr * (log_lr - lr_star) ** 2 + self._b_opt[opt] + self._b_sched[sched] + t.z0

    def _cz(self, c, s, q, e, w, ls):
        """The coupled part of z (:func:`ma2ml_env.rewards._jit.coupled_z`; arrays or floats)."""
        return _jit.NP.coupled_z(c, s, q, e, w, ls, self._consts())

    def _accuracy(self, z: np.ndarray) -> np.ndarray:
        return _jit.NP.accuracy(z, self._consts())

    # -- evaluation -------------------------------------------------------------------------------------
    def evaluate(self, actions: np.ndarray, seeds: np.ndarray,
                 on_result: Callable[[int, EvalResult], None] | None = None) -> BatchResult:
        """The surrogate of every row of ``actions`` (int64 ``[K, D]``, validated), noise seeded by ``seeds``.

        Private fast paths, all running the one formula of :mod:`ma2ml_env.rewards._jit`: one row (what
        ``env.step`` asks) goes through the compiled kernel (numba, no noise or budget) or the Python scalar
        path; more rows through the numpy batch path (:meth:`_arrays`)."""
        self._require_bound()
        if len(actions) == 1:
            out = self._one_row(actions[0], seeds)
        else:
            a = self._arrays(actions, seeds)
            status = np.where(a["over_budget"], _OVER_BUDGET, _OK)
            out = BatchResult._trusted(a["score"], status, a["accuracy"], a["flops"], a["params"],
                                       a["seconds"], (EMPTY_INFO,) * len(status))
        if on_result is not None:
            for i, r in enumerate(out):
                on_result(i, r)
        return out

    def _one_row(self, x: np.ndarray, seeds: np.ndarray) -> BatchResult:
        kern = self._row_kernel
        if kern is ...:
            kern = self._lookup_row_kernel()
        if kern is not None:
            try:
                v = kern(x, *self._kernel_tables)  # float64 [5, 1]: score, accuracy, flops, params, seconds
            except TypeError:  # not a C-contiguous int64 row (a caller's own array): the Python path
                pass
            else:
                return BatchResult._trusted(v[0], _OK_1, v[1], v[2], v[3], v[4], _INFO_1)
        xs = x.tolist()
        acc, flops, params, seconds = _score_py(xs, *self._py_tables)
        if self._effects:
            acc = float(self._apply_effects(acc, math.fsum(tab[xs[c]] for c, tab in self._eff_pairs)))
        if self.noise_std > 0:
            acc = _add_noise_py(acc, self.noise_std * _noise(int(seeds[0])))
        score, status, _ = self.budget.apply(acc, flops, params)
        v = np.array([[score], [acc], [flops], [params], [seconds]], dtype=np.float64)
        return BatchResult._trusted(v[0], _OK_1 if status == "ok" else _OVER_BUDGET_1, v[1], v[2], v[3], v[4],
                                    _INFO_1)

    def _arrays(self, flat_actions: np.ndarray, seeds: Sequence[int] | None = None, *,
                noise: bool = True) -> dict[str, np.ndarray]:
        """The batch path on flat joint actions ``[K, D]``: the score function of
        :mod:`ma2ml_env.rewards._jit` on numpy arrays, noise, then the budget's
        :meth:`~ma2ml_env.rewards.base.CostBudget.apply_arrays`.

        Returns arrays ``score, accuracy, flops, params, seconds`` and ``over_budget`` (bool), each ``[K]``.
        ``noise=False`` leaves the evaluation noise out (see :meth:`true_score_of`).
        """
        self._require_bound()
        A = np.asarray(flat_actions, dtype=np.int64)
        if A.ndim == 1:
            A = A[None]
        if len(A) > _CHUNK:  # chunks that stay in cache are ~2x faster than one big pass
            parts = [self._arrays(A[i:i + _CHUNK], None if seeds is None else seeds[i:i + _CHUNK], noise=noise)
                     for i in range(0, len(A), _CHUNK)]
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        t = self._tables
        C = t.c
        if (
            self._aug is None or self._nas is None or self._hpo is None
        ):  # the base pipeline's constants, per row
            C = [np.full(len(A), v) if _jit.BASE_S <= j <= _jit.BASE_EP else v for j, v in enumerate(C)]
        acc, flops, params, seconds = _jit.NP.score(np.ascontiguousarray(A).T, t.F, t.i, C)
        if self._effects:
            delta = np.zeros(len(A))
            for c, tab in zip(self._eff_cols, self._eff_tables):
                delta += tab[A[:, c]]
            acc = self._apply_effects(acc, delta)
        if self.noise_std > 0 and noise:
            if seeds is None:
                raise ValueError("noise_std > 0 needs one seed per evaluation")
            acc = _jit.NP.add_noise(acc, self.noise_std * np.array([_noise(sd) for sd in np.asarray(seeds).tolist()]))
        score, over = self.budget.apply_arrays(acc, flops, params)
        return dict(score=score, accuracy=acc, flops=flops, params=params, seconds=seconds, over_budget=over)

    def true_score_of(self, flat_actions: np.ndarray) -> np.ndarray:
        """The noise-free score of flat joint actions: what a search's incumbent is really worth."""
        return self._arrays(flat_actions, noise=False)["score"]

    def config(self) -> dict[str, Any]:
        """The task's coefficients, the noise, the budget and the cost model (everything the rewards depend
        on), JSON-serialisable."""
        task = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self.task).items()}
        return {**super().config(), "task": task, "noise_std": self.noise_std, "budget": self.budget.config(),
                "in_channels": self.in_channels, "num_classes": self.num_classes,
                "dataset_size": self.dataset_size, "throughput": self.throughput, "overhead": self.overhead,
                "failure_score": self.failure_score,
                **({"module_effects": self._effects} if getattr(self, "_effects", None) else {})}

    # -- the exact global optimum ------------------------------------------------------------------------
    def optimum(self, max_architectures: int = 20_000_000) -> tuple[float, dict[str, np.ndarray]]:
        """The exact noise-free global optimum ``(score, joint_action)`` of the bound search space.

        Exact by construction of the score: it depends on the architecture only through (capacity
        level, budget factor), on the augmentation policy only through (strength level, quality) with
        quality a sum over slots, and on the hyper-parameters through ``hz`` plus the (e, w, l) levels.
        We enumerate every architecture (from the per-stage cost tables) and every hyper-parameter
        combination, find the best quality per strength level by dynamic programming over the slots,
        and maximise over the product of the levels; the declared effects of other modules are additive
        and independent of the rest, so each of their decisions takes its largest offset. The result is
        cached.
        """
        space = self._require_bound()
        if self._optimum is None:
            self._optimum = self._compute_optimum(space, max_architectures)
        return self._optimum[0], space.unflatten(self._optimum[1])

    def _compute_optimum(self, space: SearchSpace, max_architectures: int) -> tuple[float, np.ndarray]:
        D = space.joint_nvec.size
        flat = np.zeros(D, dtype=np.int64)
        # architectures -> per capacity level, the best budget factor (hard: feasible) and its action
        if self._nas is not None:
            g = self._nas
            cols = g["off"] + np.arange(4 * g["ns"] + 1)
            sizes = tuple(int(v) for v in space.joint_nvec[cols])
            if math.prod(sizes) > max_architectures:
                raise ValueError(
                    f"the architecture space has {math.prod(sizes)} members (> max_architectures="
                    f"{max_architectures}); the exact optimum is only computed for smaller spaces"
                )
            flops, params = self._all_arch_costs(sizes)
        else:
            cols, sizes = np.zeros(0, dtype=np.int64), (1,)
            flops, params = np.array([self._base_arch[0]], float), np.array([self._base_arch[1]], float)
        c = self.capacity(flops)
        factor, feasible = self.budget.factors(flops, params)
        order = np.lexsort((-factor, c))  # by level, best factor first
        order = order[feasible[order]]
        if order.size == 0:
            raise ValueError("no architecture satisfies the hard cost budget")
        _, first = np.unique(c[order], return_index=True)
        arch_rows = order[first]
        arch_c, arch_f = c[arch_rows], factor[arch_rows]
        # augmentation -> per strength level, the best mean quality (exact DP over slots)
        aug_levels = self._aug_levels()
        s_lv = np.array(list(aug_levels))
        q_lv = np.array([aug_levels[k][0] for k in aug_levels])
        # hyper-parameters -> per (e, w, l) group, the best hz
        if self._hpo is not None:
            hcols = self._hpo["off"] + np.arange(7)
            hsizes = tuple(int(v) for v in space.joint_nvec[hcols])
            hidx = np.stack(np.unravel_index(np.arange(math.prod(hsizes)), hsizes), axis=1)
            Ah = np.zeros((len(hidx), D), dtype=np.int64)
            Ah[:, hcols] = hidx
        else:
            Ah = np.zeros((1, D), dtype=np.int64)
        h = self._hpo_features(Ah)
        hz = self._hz(h["opt"], h["log_lr"], h["bs"], h["sched"], h["e"])
        groups = np.stack([h["e"], h["w"], h["ls"]], axis=1)
        _, gid = np.unique(groups, axis=0, return_inverse=True)
        gid = gid.reshape(-1)
        best_in_group = np.full(gid.max() + 1, -1)
        for j in np.argsort(hz, kind="stable"):  # ascending: the last write per group is its max
            best_in_group[gid[j]] = j
        hj = best_in_group
        # product of levels: [arch level, strength level, hpo group]
        z = self._hz(h["opt"][hj], h["log_lr"][hj], h["bs"][hj], h["sched"][hj], h["e"][hj])[
            None, None, :
        ] + self._cz(
            arch_c[:, None, None],
            s_lv[None, :, None],
            q_lv[None, :, None],
            h["e"][hj][None, None, :],
            h["w"][hj][None, None, :],
            h["ls"][hj][None, None, :],
        )
        best_delta = sum(float(tab.max()) for tab in self._eff_tables)  # additive and separate from the rest
        val = self._accuracy(z + best_delta) * arch_f[:, None, None]
        ia, isv, ih = np.unravel_index(int(np.argmax(val)), val.shape)
        if self._nas is not None:
            flat[cols] = np.unravel_index(int(arch_rows[ia]), sizes)
        if self._aug is not None:
            flat[self._aug_cols()] = aug_levels[float(s_lv[isv])][1]
        if self._hpo is not None:
            flat[hcols] = hidx[hj[ih]]
        for c, tab in zip(self._eff_cols, self._eff_tables):
            flat[c] = int(np.argmax(tab))
        # the score of that action as every path computes it (the enumeration sums strengths in another
        # order, which can differ in the last bits)
        return float(self._arrays(flat[None], noise=False)["score"][0]), flat

    def _all_arch_costs(self, sizes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """FLOPs and params of every architecture, flattened in the order of the module's action
        columns (stage0 kernel, expansion, width, depth, stage1 ..., resolution): one broadcast sum
        of the per-stage tables."""
        g = self._nas
        ns, nd = g["ns"], len(sizes)
        res = nd - 1
        out = []
        for which in (0, 1):
            total = _place(g["stem"][which], [res], nd)
            for s in range(ns):
                prev = 4 * s - 2 if s > 0 else None
                total = total + _place(
                    g["stages"][which][s], [res, prev, 4 * s, 4 * s + 1, 4 * s + 2, 4 * s + 3], nd
                )
            total = total + _place(g["head"][which], [res, 4 * ns - 2], nd)
            out.append(np.broadcast_to(total, sizes).reshape(-1))
        return 2.0 * out[0], out[1]

    def _aug_cols(self) -> np.ndarray:
        g = self._aug
        return np.stack([g["op"], g["prob"], g["mag"]], axis=1).reshape(-1)

    def _aug_levels(self) -> dict[float, tuple[float, np.ndarray]]:
        """Strength level -> (best mean quality, one aug action achieving it), exact by DP."""
        g = self._aug
        if g is None:
            return {float(self._base_s): (self._base_q, np.zeros(0, dtype=np.int64))}
        # per slot option (op, prob, mag): strength and quality; keep the best quality per strength value
        options: dict[float, tuple[float, tuple[int, int, int]]] = {}
        for o, pi, mi in itertools.product(
            range(len(g["util"])), range(len(g["probs"])), range(g["strength"].shape[1])
        ):
            p = g["probs"][pi]
            st, qu = round(float(p * g["strength"][o, mi]), 12), float(p * g["util"][o])
            if st not in options or qu > options[st][0]:
                options[st] = (qu, (o, pi, mi))
        # DP over slots on the exact strength sum
        layers: list[dict[float, tuple[float, float]]] = [{0.0: (0.0, math.nan)}]
        for _ in range(g["n"]):
            nxt: dict[float, tuple[float, float]] = {}
            for total, (qsum, _) in layers[-1].items():
                for st, (qu, _) in options.items():
                    key = round(total + st, 9)
                    if key not in nxt or qsum + qu > nxt[key][0]:
                        nxt[key] = (qsum + qu, st)
            layers.append(nxt)
        levels: dict[float, tuple[float, float]] = {}
        for total, (qsum, _) in layers[-1].items():
            lvl = total / g["n"]  # exact: every p * strength is a multiple of 1/90
            if lvl not in levels or qsum > levels[lvl][0]:
                levels[lvl] = (qsum, total)
        out = {}
        for lvl, (qsum, total) in levels.items():
            action = []
            for layer in range(g["n"], 0, -1):  # backtrack
                st = layers[layer][total][1]
                action.append(options[st][1])
                total = round(total - st, 9)
            out[lvl] = (qsum / g["n"], np.array(action[::-1], dtype=np.int64).reshape(-1))
        return out
