"""Optional numba kernel for the surrogate env's step: validation, evaluation and observation in one call.

``env.step`` with the surrogate reward is dominated by interpreter and numpy per-call overhead (about
20 us a step in pure Python on a 2-core machine). With numba installed (``pip install "ma2ml[fast]"``)
the default three-module space runs one compiled call per step instead (about 1 us), which takes the
env to several times its pure-Python throughput. Without numba, or with ``MA2ML_JIT=0`` in the
environment, nothing changes but speed: the kernel computes the same numbers, in the same order, as
:meth:`SurrogateEvaluator._compile_scalar_path` (tests compare the two paths exactly).

The kernel only ever accepts 1-d C-contiguous int64 arrays (one per agent): it is compiled for exactly
that signature and further compilation is disabled, so anything else (lists, other dtypes, views)
raises ``TypeError`` at dispatch and the env takes its Python path, which says what is wrong.
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np

__all__ = ["available", "pack_tables", "step_kernel"]

_KERNELS: dict[int, object] = {}
_DISABLED = False  # set after a failed compile (numba present but broken): never retried

# Layout of the int64 table I (the float64 table F holds the lookup tables at the offsets stored here).
N_SLOTS, P, M, NS, RES_COL, NAS_OFF, HPO_OFF, HW = range(8)
RADIX = 8  # 7 entries
O_S, O_Q, O_STEM_M, O_STEM_P, O_HEAD_M, O_HEAD_P, O_HZ, O_E, O_W, O_LS, O_EP = range(15, 26)
N_AGENTS = 26
STAGES = 27  # 7 entries per stage: offset of its MACs table, of its params table, 5 strides
# then: one size per agent, then the op column of every augmentation slot.
# Layout of the float64 constants C.
A_C, B_C, A_Q, G_SC, G_SE, KAPPA, OMEGA, LAM, RHO, FLOOR, SPAN, LO, HI, COST, OVERHEAD, LEVELS_F = range(16)


def _enabled() -> bool:
    return not _DISABLED and os.environ.get("MA2ML_JIT", "1").strip().lower() not in ("0", "false", "no", "off")


def available() -> bool:
    """Whether the compiled step can be used (numba importable and not disabled by ``MA2ML_JIT=0``)."""
    if not _enabled():
        return False
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _step(arrs, nvec, F, I, C, flat, obs, scale):  # compiled by numba; plain Python otherwise
    """Validate the agents' arrays, write the flat joint action into ``flat`` and ``flat * scale`` into
    ``obs[3:]``, evaluate the surrogate. Returns ``(accuracy, flops, params, seconds)``; accuracy -1.0 when
    an array has the wrong length or a value out of range (nothing is written then)."""
    k = 0
    na = 0
    for a in arrs:  # pass 1: shapes and bounds, before anything is written
        n = a.shape[0]
        if n != I[STAGES + 7 * I[NS] + na]:
            return -1.0, 0.0, 0.0, 0.0
        for j in range(n):
            v = a[j]
            if v < 0 or v >= nvec[k + j]:
                return -1.0, 0.0, 0.0, 0.0
        k += n
        na += 1  # noqa: SIM113 - numba: no enumerate over a tuple of arrays needed
    k = 0
    for a in arrs:  # pass 2: the flat action and the observation's action part
        for j in range(a.shape[0]):
            v = a[j]
            flat[k] = v
            obs[3 + k] = np.float32(v) * scale[k]
            k += 1
    # augmentation: strength and quality summed over the slots
    ns_slots = I[N_SLOTS]
    pp, mm, o_s, o_q = I[P], I[M], I[O_S], I[O_Q]
    cols = STAGES + 7 * I[NS] + I[N_AGENTS]
    ssum = 0.0
    qsum = 0.0
    for t in range(ns_slots):
        j = I[cols + t]
        i = (flat[j] * pp + flat[j + 1]) * mm + flat[j + 2]
        ssum += F[o_s + i]
        qsum += F[o_q + i]
    q = qsum / ns_slots
    # architecture: stem + one table entry per stage + head
    r = flat[I[RES_COL]]
    macs = F[I[O_STEM_M] + r]
    params = F[I[O_STEM_P] + r]
    wp = 0
    off = I[NAS_OFF]
    for st in range(I[NS]):
        b = STAGES + 7 * st
        j = off + 4 * st
        w = flat[j + 2]
        li = r * I[b + 2] + wp * I[b + 3] + flat[j] * I[b + 4] + flat[j + 1] * I[b + 5] + w * I[b + 6] + flat[j + 3]
        macs += F[I[b] + li]
        params += F[I[b + 1] + li]
        wp = w
    hi_ = r * I[HW] + wp
    flops = 2.0 * (macs + F[I[O_HEAD_M] + hi_])
    params = params + F[I[O_HEAD_P] + hi_]
    # hyper-parameters: one index into the per-combination tables
    o = I[HPO_OFF]
    kk = 0
    for t in range(7):
        kk += flat[o + t] * I[RADIX + t]
    e, w, ls = F[I[O_E] + kk], F[I[O_W] + kk], F[I[O_LS] + kk]
    levels = C[LEVELS_F]
    lo, hi = C[LO], C[HI]
    c = math.floor(min(max((math.log(flops) - lo) / (hi - lo), 0.0), 1.0) * levels + 0.5 + 1e-9) / levels
    s = ssum / ns_slots
    d = s + C[OMEGA] * w + C[LAM] * ls - C[RHO] * c
    z = F[I[O_HZ] + kk] + (
        C[A_C] * c - C[B_C] * c * c + C[A_Q] * q
        + C[G_SC] * (2 * s - 1) * (2 * c - 1) + C[G_SE] * (2 * s - 1) * (2 * e - 1)
        - C[KAPPA] * (d * d)
    )
    acc = C[FLOOR] + C[SPAN] / (1.0 + math.exp(-z))
    return acc, flops, params, F[I[O_EP] + kk] * C[COST] * flops + C[OVERHEAD]


def step_kernel(n_agents: int):
    """The compiled kernel for ``n_agents`` agents, or ``None`` (numba missing, disabled or failing)."""
    global _DISABLED
    if not available():
        return None
    kern = _KERNELS.get(n_agents)
    if kern is None:
        try:
            import numba
            from numba import types

            i64, f64, f32 = types.Array(types.int64, 1, "C"), types.Array(types.float64, 1, "C"), \
                types.Array(types.float32, 1, "C")
            sig = types.UniTuple(types.float64, 4)(types.UniTuple(i64, n_agents), i64, f64, i64, f64, i64, f32, f32)
            try:
                kern = numba.njit(cache=True, nogil=True)(_step)
                kern.compile(sig.args)
            except RuntimeError:  # no writable cache location (read-only install): compile without one
                kern = numba.njit(cache=False, nogil=True)(_step)
                kern.compile(sig.args)
            kern.disable_compile()
        except Exception as exc:  # noqa: BLE001 - a broken numba install must not break the env: fall back, say so once
            _DISABLED = True
            warnings.warn(f"ma2ml: numba kernel unavailable ({type(exc).__name__}: {exc}); using the Python "
                          "step path", RuntimeWarning, stacklevel=2)
            return None
        _KERNELS[n_agents] = kern
    return kern


def pack_tables(ev, space) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(nvec, F, I, C)``: a bound :class:`SurrogateEvaluator`'s tables in the kernel's layout."""
    from ma2ml_env.rewards.surrogate import LEVELS

    t = ev.task
    S, Q, pp, mm = ev._aug["flat_lists"]
    g = ev._nas
    stem_m, stem_p, st_m, st_p, head_m, head_p, strides, hw = g["flat_lists"]
    h = ev._hpo
    table: list[float] = []

    def add(xs) -> int:  # append a lookup table to F, return its offset
        start = len(table)
        table.extend(xs)
        return start

    o_s, o_q, o_sm, o_sp, o_hm, o_hp = add(S), add(Q), add(stem_m), add(stem_p), add(head_m), add(head_p)
    o_hz, o_e, o_w, o_ls, o_ep = (add(h[k]) for k in ("hz_list", "e_list", "w_list", "ls_list", "ep_list"))
    stage_rows = []
    for i in range(g["ns"]):
        stage_rows += [add(st_m[i]), add(st_p[i]), *strides[i]]
    head = [ev._aug["n"], pp, mm, g["ns"], g["off"] + 4 * g["ns"], g["off"], h["off"], hw, *h["radix"],
            o_s, o_q, o_sm, o_sp, o_hm, o_hp, o_hz, o_e, o_w, o_ls, o_ep, len(space.names)]
    assert len(head) == STAGES
    ints = np.array(head + stage_rows + [int(s) for s in space.sizes] + list(ev._aug["op_cols"]), dtype=np.int64)
    floats = np.array(table, dtype=np.float64)
    consts = np.array([t.a_c, t.b_c, t.a_q, t.g_sc, t.g_se, t.kappa, t.omega, t.lam, t.rho, t.floor,
                       t.ceil - t.floor, *ev._log_f, ev.dataset_size * 3 / ev.throughput, ev.overhead,
                       float(LEVELS)], dtype=np.float64)
    return np.ascontiguousarray(space.joint_nvec, dtype=np.int64), floats, ints, consts
