"""The surrogate's task (its coefficients, :class:`SurrogateTask`) and the feature maps of single decision
values that :class:`~ma2ml_env.rewards.surrogate.SurrogateEvaluator` tabulates at ``bind`` (the model is
documented in :mod:`ma2ml_env.rewards.surrogate`)."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ma2ml_env.costs import head_costs, stage_costs, stem_costs
from ma2ml_env.modules.aug import AUG_OPS
from ma2ml_env.modules.nas import ArchitectureModule
from ma2ml_env.pipeline import MAGNITUDE_BINS, Pipeline
from ma2ml_env.space import SearchSpace

__all__ = [
    "OP_NAMES",
    "SurrogateTask",
    "changed_fields",
    "declared_effects",
    "ls_level",
    "nas_tables",
    "op_strength",
    "seed_noise",
    "steps_level",
    "wd_level",
]

OP_NAMES = tuple(AUG_OPS)
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
        default_factory=lambda: tuple(_DEFAULT_UTILITY[o] for o in OP_NAMES)
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
            op_utility=tuple(0.0 if o == "Identity" else float(rng.uniform(-1.0, 1.0)) for o in OP_NAMES),
        )


def changed_fields(space: SearchSpace, mod: Any, off: int, max_joint: int = 256) -> list[str]:
    """The :class:`Pipeline` fields that some choice of ``mod`` changes, with the other modules at their first
    choices: every choice of each decision, and every combination when there are at most ``max_joint``."""
    nvec = [int(v) for v in space.nvecs[mod.name]]
    flat = np.zeros(space.joint_nvec.size, dtype=np.int64)
    ref = space.build(flat)
    if math.prod(nvec) <= max_joint:
        rows = itertools.product(*(range(n) for n in nvec))
    else:
        rows = (tuple(c if k == j else 0 for k in range(len(nvec)))
                for j, n in enumerate(nvec) for c in range(n))
    changed: set[str] = set()
    for row in rows:
        flat[off: off + len(nvec)] = row
        p = space.build(flat)
        changed.update(f.name for f in dataclasses.fields(p)
                       if f.name != "choices" and getattr(p, f.name) != getattr(ref, f.name))
    return sorted(changed)


def declared_effects(space: SearchSpace, modelled: set[int], max_effect: float
                     ) -> tuple[dict[str, dict[str, list[float]]], list[int], list[list[float]]]:
    """The declared ``surrogate_effects`` of the space's modules whose ids are not in ``modelled`` (the
    surrogate's "Other modules"): ``(effects, cols, tables)``, the offsets per module and decision (empty when
    no offset is nonzero), and the action column and per-choice offsets of every decision that has an effect.
    A module that declares none is refused (``ValueError``) when some choice of it changes the pipeline: its
    choices would not change the score."""
    cols: list[int] = []
    tables: list[list[float]] = []
    effects: dict[str, dict[str, list[float]]] = {}
    for mod, off in zip(space.modules, space.offsets):
        if id(mod) in modelled:
            continue
        names = [d.name for d in mod.decisions]
        declared = mod.surrogate_effects
        if declared is None:
            changed = changed_fields(space, mod, off)
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
        effects[mod.name] = {}
        for j, d in enumerate(mod.decisions):
            try:
                row = [float(v) for v in declared[d.name]]
            except (TypeError, ValueError):
                row = []
            if len(row) != len(d.choices) or not all(abs(v) <= max_effect for v in row):
                raise ValueError(
                    f"surrogate_effects[{d.name!r}] of module {mod.name!r} must hold {len(d.choices)} "
                    f"numbers in [-{max_effect:g}, {max_effect:g}] (one logit offset per choice of "
                    f"{list(d.choices)}), got {declared[d.name]!r}")
            effects[mod.name][d.name] = row
            if any(row):  # all zeros: declared to have no effect
                cols.append(off + j)
                tables.append(row)
    if not cols:
        effects = {}  # nothing changes a score: the built-ins' paths (and config) as they are
    return effects, cols, tables


# -- feature maps of single decision values (vectorised through per-choice tables) -------------------
def op_strength(op: str, mag: int) -> float:
    return _NO_MAGNITUDE.get(op, mag / (MAGNITUDE_BINS - 1))


def steps_level(epochs: float, batch_size: float) -> float:
    """Training length in optimiser steps per image: ``log2(epochs / batch_size)`` mapped from
    ``[log2(1/256), log2(8/32)]`` to ``[0, 1]`` (on real training, fewer steps is what a large batch
    costs)."""
    return min(max((math.log2(max(epochs, 1e-9) / max(batch_size, 1e-9)) + 8.0) / 6.0, 0.0), 1.0)


def wd_level(v: float) -> float:
    return min(math.log10(1.0 + v / 1e-5) / math.log10(201.0), 1.0)


def ls_level(v: float) -> float:
    return min(v / 0.2, 1.0)


def seed_noise(seed: int) -> float:
    return float(np.random.default_rng(int(seed) & 0xFFFFFFFFFFFF).normal())


def nas_tables(mod: ArchitectureModule, off: int, base: Pipeline, in_channels: int, num_classes: int
               ) -> dict[str, Any]:
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
    stem_m, stem_p = stem_costs(res, base.arch.stem_width, in_channels)
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
        size[:, None], widths[-1][None, :], base.arch.head_width, num_classes
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
