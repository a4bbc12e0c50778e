"""The exact global optimum of the surrogate (:meth:`SurrogateEvaluator.optimum
<ma2ml_env.rewards.surrogate.SurrogateEvaluator.optimum>`): an enumeration over capacity levels, strength
levels and hyper-parameter groups, exact by construction of the score."""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ma2ml_env.rewards.surrogate import SurrogateEvaluator
    from ma2ml_env.space import SearchSpace

__all__ = ["aug_cols", "compute_optimum"]


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


def compute_optimum(ev: SurrogateEvaluator, space: SearchSpace, max_architectures: int
                    ) -> tuple[float, np.ndarray]:
    """The exact noise-free optimum ``(score, flat joint action)`` of the bound space (see
    :meth:`SurrogateEvaluator.optimum` for why the enumeration is exact)."""
    D = space.joint_nvec.size
    flat = np.zeros(D, dtype=np.int64)
    # architectures -> per capacity level, the best budget factor (hard: feasible) and its action
    if ev._nas is not None:
        g = ev._nas
        cols = g["off"] + np.arange(4 * g["ns"] + 1)
        sizes = tuple(int(v) for v in space.joint_nvec[cols])
        if math.prod(sizes) > max_architectures:
            raise ValueError(
                f"the architecture space has {math.prod(sizes)} members (> max_architectures="
                f"{max_architectures}); the exact optimum is only computed for smaller spaces"
            )
        flops, params = _all_arch_costs(ev, sizes)
    else:
        cols, sizes = np.zeros(0, dtype=np.int64), (1,)
        flops, params = np.array([ev._base_arch[0]], float), np.array([ev._base_arch[1]], float)
    c = ev.capacity(flops)
    factor, feasible = ev.budget.factors(flops, params)
    order = np.lexsort((-factor, c))  # by level, best factor first
    order = order[feasible[order]]
    if order.size == 0:
        raise ValueError("no architecture satisfies the hard cost budget")
    _, first = np.unique(c[order], return_index=True)
    arch_rows = order[first]
    arch_c, arch_f = c[arch_rows], factor[arch_rows]
    # augmentation -> per strength level, the best mean quality (exact DP over slots)
    aug_levels = _aug_levels(ev)
    s_lv = np.array(list(aug_levels))
    q_lv = np.array([aug_levels[k][0] for k in aug_levels])
    # hyper-parameters -> per (e, w, l) group, the best hz
    if ev._hpo is not None:
        hcols = ev._hpo["off"] + np.arange(7)
        hsizes = tuple(int(v) for v in space.joint_nvec[hcols])
        hidx = np.stack(np.unravel_index(np.arange(math.prod(hsizes)), hsizes), axis=1)
        Ah = np.zeros((len(hidx), D), dtype=np.int64)
        Ah[:, hcols] = hidx
    else:
        Ah = np.zeros((1, D), dtype=np.int64)
    h = ev._hpo_features(Ah)
    hz = ev._hz(h["opt"], h["log_lr"], h["bs"], h["sched"], h["e"])
    groups = np.stack([h["e"], h["w"], h["ls"]], axis=1)
    _, gid = np.unique(groups, axis=0, return_inverse=True)
    gid = gid.reshape(-1)
    best_in_group = np.full(gid.max() + 1, -1)
    for j in np.argsort(hz, kind="stable"):  # ascending: the last write per group is its max
        best_in_group[gid[j]] = j
    hj = best_in_group
    # product of levels: [arch level, strength level, hpo group]
    z = ev._hz(h["opt"][hj], h["log_lr"][hj], h["bs"][hj], h["sched"][hj], h["e"][hj])[
        None, None, :
    ] + ev._cz(
        arch_c[:, None, None],
        s_lv[None, :, None],
        q_lv[None, :, None],
        h["e"][hj][None, None, :],
        h["w"][hj][None, None, :],
        h["ls"][hj][None, None, :],
    )
    best_delta = sum(float(tab.max()) for tab in ev._eff_tables)  # additive and separate from the rest
    val = ev._accuracy(z + best_delta) * arch_f[:, None, None]
    ia, isv, ih = np.unravel_index(int(np.argmax(val)), val.shape)
    if ev._nas is not None:
        flat[cols] = np.unravel_index(int(arch_rows[ia]), sizes)
    if ev._aug is not None:
        flat[aug_cols(ev)] = aug_levels[float(s_lv[isv])][1]
    if ev._hpo is not None:
        flat[hcols] = hidx[hj[ih]]
    for c, tab in zip(ev._eff_cols, ev._eff_tables):
        flat[c] = int(np.argmax(tab))
    # the score of that action as every path computes it (the enumeration sums strengths in another
    # order, which can differ in the last bits)
    return float(ev._arrays(flat[None], noise=False)["score"][0]), flat


def _all_arch_costs(ev: SurrogateEvaluator, sizes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """FLOPs and params of every architecture, flattened in the order of the module's action
    columns (stage0 kernel, expansion, width, depth, stage1 ..., resolution): one broadcast sum
    of the per-stage tables."""
    g = ev._nas
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


def aug_cols(ev: SurrogateEvaluator) -> np.ndarray:
    g = ev._aug
    return np.stack([g["op"], g["prob"], g["mag"]], axis=1).reshape(-1)


def _aug_levels(ev: SurrogateEvaluator) -> dict[float, tuple[float, np.ndarray]]:
    """Strength level -> (best mean quality, one aug action achieving it), exact by DP."""
    g = ev._aug
    if g is None:
        return {float(ev._base_s): (ev._base_q, np.zeros(0, dtype=np.int64))}
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
