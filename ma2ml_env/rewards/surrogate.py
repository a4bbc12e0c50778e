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

**Fidelity.** Levels in epochs of the child's schedule (``1, 2, 4, 8`` in the default space, as the training
backend's): below the last, the accuracy and cost after part of the training come from the learning-curve
model of :mod:`ma2ml_env.rewards.surrogate_curves` (calibrated on real digits curves); the last level is the
full training above, unchanged.

**Budget.** An optional :class:`~ma2ml_env.rewards.base.CostBudget` (or a dict of its fields, e.g. from
JSON: ``reward_kwargs={"budget": {"max_flops": 5e6}}``; checked by :meth:`CostBudget.coerce`, the same
``ValueError`` as the training backend's): hard (over budget -> status ``"over_budget"``,
``penalty_score``) or soft (MnasNet ``accuracy * (FLOPs / target) ** w``).

**One formula, every path.** The score of one flat joint action is written once,
:func:`ma2ml_env.rewards._jit.score`, over the tables :meth:`SurrogateEvaluator.tables` packs at ``bind``;
:meth:`SurrogateEvaluator.evaluate` runs it on its private paths: the numpy batch path for many rows, and for
one row (``env.step``) the compiled kernel (numba) or the Python scalar path (see :mod:`ma2ml_env.rewards._jit`).
The budget is :meth:`CostBudget.apply` / :meth:`CostBudget.apply_arrays`.

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
With such modules one-row evaluations take the Python scalar path (no compiled kernel).

**Tasks.** ``task="default"`` or ``task=<int>``: a randomly generated task (coefficients, op utilities,
optimal learning rates) drawn from that seed, so algorithms are not tuned to one function.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ma2ml_env.modules.aug import AugmentModule
from ma2ml_env.modules.hpo import OPTIMIZERS, SCHEDULES, HyperParameterModule
from ma2ml_env.modules.nas import ArchitectureModule
from ma2ml_env.pipeline import Pipeline
from ma2ml_env.rewards import _jit
from ma2ml_env.rewards._jit import LEVELS, SurrogateTables
from ma2ml_env.rewards.base import EMPTY_INFO, STATUS_CODES, BatchResult, CostBudget, EvalResult, Evaluator
from ma2ml_env.rewards.fidelity import Fidelity, epoch_fidelity, epoch_ladder, space_max_epochs
from ma2ml_env.rewards.surrogate_curves import DEFAULT_CURVES, CurveModel, evaluate_levels
from ma2ml_env.rewards.surrogate_task import (
    OP_NAMES,
    SurrogateTask,
    declared_effects,
    ls_level,
    nas_tables,
    op_strength,
    seed_noise,
    steps_level,
    wd_level,
)
from ma2ml_env.space import SearchSpace

__all__ = ["LEVELS", "SurrogateEvaluator", "SurrogateTask"]

_CHUNK = 16384
_OK, _OVER_BUDGET = STATUS_CODES["ok"], STATUS_CODES["over_budget"]


_MAX_EFFECT = 10.0  # bound of a declared logit offset (exp stays finite for any sum of them)
_score_py, _add_noise_py = _jit.PY.score, _jit.PY.add_noise
class SurrogateEvaluator(Evaluator):
    """Numpy-only surrogate reward backend (``reward="surrogate"``).

    Args:
        task: ``"default"``, an int (a random task from that seed) or a :class:`SurrogateTask`.
        noise_std: standard deviation of the Gaussian evaluation noise (seeded by the evaluation seed).
        budget: optional FLOPs/params budget: a :class:`~ma2ml_env.CostBudget` or a dict of its fields
            (``{"max_flops": 5e6}``; JSON works).
        in_channels, num_classes: the child's input channels and classes (for the FLOPs count).
        dataset_size, throughput, overhead: the simulated training time model.
        fidelity_epochs: the fidelity levels in epochs of the child's schedule (the last is the full training;
            ``None``: 1, 2, 4... up to the longest schedule of the space, set at ``bind``) and ``curves`` the
            learning-curve model (a :class:`~ma2ml_env.rewards.surrogate_curves.CurveModel` or a dict of its
            fields; ``None``: the one calibrated on digits): :mod:`ma2ml_env.rewards.surrogate_curves`.
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
        fidelity_epochs: Sequence[float] | None = None,
        curves: CurveModel | Mapping[str, Any] | None = None,
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
        self.fidelity_epochs = None if fidelity_epochs is None else list(fidelity_epochs)
        self.fidelity, self.curves = epoch_fidelity(fidelity_epochs), CurveModel.coerce(curves)
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
        if self.fidelity_epochs is None:  # the training backend's default ladder
            self.fidelity = Fidelity(epoch_ladder(space_max_epochs(space)), "epochs")
        self._optimum: tuple[float, dict[str, np.ndarray]] | None = None
        t = self.task
        util = dict(zip(OP_NAMES, t.op_utility))
        base = space.base
        self._aug = self._nas = self._hpo = None
        self._log_lr0 = np.log10(np.asarray(t.lr0, dtype=float))
        self._b_opt, self._b_sched = np.asarray(t.b_opt, dtype=float), np.asarray(t.b_sched, dtype=float)
        for mod, off in zip(space.modules, space.offsets):
            if isinstance(mod, AugmentModule) and self._aug is None:
                n = mod.num_subpolicies * mod.ops_per_subpolicy
                cols = off + 3 * np.arange(n)
                strength = np.array([[op_strength(o, m) for m in mod.magnitudes] for o in mod.ops])
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
                self._nas = nas_tables(mod, off, space.base, self.in_channels, self.num_classes)
                self._nas["mod"] = mod
            elif isinstance(mod, HyperParameterModule) and self._hpo is None:
                ch = {d.name: d.choices for d in mod.decisions}
                self._hpo = dict(
                    off=off, mod=mod,
                    opt=np.array([OPTIMIZERS.index(o) for o in ch["optimizer"]]),
                    log_lr=np.log10(np.array(ch["lr"], dtype=float)),
                    w=np.array([wd_level(v) for v in ch["weight_decay"]]),
                    bs=np.array(ch["batch_size"], dtype=float),
                    sched=np.array([SCHEDULES.index(v) for v in ch["schedule"]]),
                    ls=np.array([ls_level(v) for v in ch["label_smoothing"]]),
                    e=np.array([[steps_level(v, b) for b in ch["batch_size"]] for v in ch["epochs"]]),
                    epochs=np.array(ch["epochs"], dtype=float),
                )
                self._hpo["radix"] = [
                    int(v) for v in np.cumprod([1, *space.nvecs[mod.name][:0:-1].tolist()])[::-1]
                ]
        self._bind_effects(space)
        # Features of absent modules are constants read off the base pipeline.
        slots = [op for sub in base.augment for op in sub]
        self._base_s = (
            float(np.mean([op.prob * op_strength(op.op, op.magnitude) for op in slots])) if slots else 0.0
        )
        self._base_q = float(np.mean([op.prob * util.get(op.op, 0.0) for op in slots])) if slots else 0.0
        a = base.arch
        self._base_arch = (
            a.flops(self.in_channels, self.num_classes),
            a.params(self.in_channels, self.num_classes),
        )
        tr = base.train
        self._base_train = dict(
            opt=OPTIMIZERS.index(tr.optimizer), log_lr=math.log10(tr.lr), w=wd_level(tr.weight_decay),
            bs=float(tr.batch_size), sched=SCHEDULES.index(tr.schedule), ls=ls_level(tr.label_smoothing),
            e=steps_level(tr.epochs, tr.batch_size), epochs=float(tr.epochs),
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
        self._row_kernel = ...  # looked up again for this space (its effects decide whether it applies)

    def _bind_effects(self, space: SearchSpace) -> None:
        """The declared effects of the modules the score does not model (module docstring, "Other modules":
        :func:`~ma2ml_env.rewards.surrogate_task.declared_effects`)."""
        modelled = {id(g["mod"]) for g in (self._aug, self._nas, self._hpo) if g is not None}
        self._effects, cols, tables = declared_effects(space, modelled, _MAX_EFFECT)
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
                 on_result: Callable[[int, EvalResult], None] | None = None, *,
                 levels: np.ndarray | None = None, start: np.ndarray | None = None) -> BatchResult:
        """The surrogate of every row of ``actions`` (int64 ``[K, D]``, validated), noise seeded by ``seeds``;
        with ``levels``/``start``, after part of the training (:mod:`ma2ml_env.rewards.surrogate_curves`).

        Private fast paths, all running the one formula of :mod:`ma2ml_env.rewards._jit`: one row (what
        ``env.step`` asks) goes through the compiled kernel (numba, no noise or budget) or the Python scalar
        path; more rows through the numpy batch path (:meth:`_arrays`)."""
        if levels is not None or start is not None:
            return evaluate_levels(self, actions, seeds, on_result, levels, start)
        if len(actions) == 1:  # env.step's case, in as few calls as it takes
            kern = self._row_kernel
            if kern is ...:
                kern = self._lookup_row_kernel()
            out = None
            if kern is not None:  # no noise, budget or declared effects: the score is the accuracy
                try:
                    acc, flops, params, seconds = kern(actions, *self._kernel_tables)
                    out = BatchResult._one(acc, _OK, acc, flops, params, seconds)
                except TypeError:  # not a C-contiguous int64 [1, D] array (a caller's own)
                    pass
            if out is None:
                out = self._one_row(actions, seeds)
            if on_result is None:
                return out
        else:
            a = self._arrays(actions, seeds)
            status = np.where(a["over_budget"], _OVER_BUDGET, _OK)
            out = BatchResult._trusted(a["score"], status, a["accuracy"], a["flops"], a["params"],
                                       a["seconds"], (EMPTY_INFO,) * len(status))
        if on_result is not None:
            for i, r in enumerate(out):
                on_result(i, r)
        return out

    def _one_row(self, actions: np.ndarray, seeds: np.ndarray) -> BatchResult:
        self._require_bound()
        xs = actions[0].tolist()
        acc, flops, params, seconds = _score_py(xs, *self._py_tables)
        if self._effects:
            acc = float(self._apply_effects(acc, math.fsum(tab[xs[c]] for c, tab in self._eff_pairs)))
        if self.noise_std > 0:
            acc = _add_noise_py(acc, self.noise_std * seed_noise(int(seeds[0])))
        score, status, _ = self.budget.apply(acc, flops, params)
        return BatchResult._one(float(score), STATUS_CODES[status], acc, flops, params, seconds)

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
            eps = np.array([seed_noise(sd) for sd in np.asarray(seeds).tolist()])
            acc = _jit.NP.add_noise(acc, self.noise_std * eps)
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
                **({} if self.fidelity_epochs is None else {"fidelity_epochs": self.fidelity_epochs}),
                **({} if self.curves == DEFAULT_CURVES else {"curves": self.curves.config()}),
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
            from ma2ml_env.rewards.surrogate_optimum import compute_optimum  # it reads this class's tables

            self._optimum = compute_optimum(self, space, max_architectures)
        return self._optimum[0], space.codec.decode(self._optimum[1])
