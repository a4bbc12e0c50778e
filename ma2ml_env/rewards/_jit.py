"""The surrogate's score, written once, and the compiled env step built on it (numba, optional).

:func:`score` is the whole surrogate formula for one flat joint action: augmentation features, the
architecture's analytical costs, the hyper-parameter terms, the capacity level, ``z``, the accuracy and
the simulated training time (:mod:`ma2ml_env.rewards.surrogate` documents the model). It reads the
evaluator's packed tables (:meth:`SurrogateEvaluator.tables`: a float table ``F``, an int table ``I`` and
the constants ``C``, laid out as below) and nothing else. Every private path of
:meth:`SurrogateEvaluator.evaluate` runs this one source:

* the **Python scalar path** (one row, without numba or with noise, budget or declared effects): the
  functions as written, with ``math`` and Python lists;
* the **compiled single-row path** (one row with numba, extra ``fast``): :func:`row_kernel` compiles the
  same code objects with numba and scores one validated flat row;
* the **batch path** (several rows): the same code objects bound to numpy (``exp`` -> ``np.exp``,
  ``min``/``max`` -> ``np.minimum``/``np.maximum``, the slot sum -> one numpy reduction) and applied to the
  transposed ``[D, K]`` action array, so every line computes a column of ``K`` values at once.

The three bindings are :data:`PY`, :data:`NP` and the numba namespace of :func:`row_kernel`; each is a
namespace with ``score``, ``capacity``, ``coupled_z``, ``accuracy`` and ``add_noise``. Each path keeps
its own elementary functions (libm ``exp``, numpy's vectorised ``exp``, LLVM's), so its numbers are
bit-identical to what that path computed before the formula was written once
(``tests/test_surrogate_golden.py``); the paths agree with each other to ~1e-15.

Without numba, or with ``MA2ML_JIT=0`` in the environment, nothing changes but the speed of one-row
evaluations (``env.step``). The kernel only ever accepts C-contiguous int64 rows: it is compiled for exactly
that signature and further compilation is disabled, so anything else raises ``TypeError`` at dispatch and
the evaluator takes its Python path. Validation is not the kernel's business: rows arrive validated (the
env's codec).
"""

from __future__ import annotations

import math
import os
import types
import warnings
from typing import NamedTuple

import numpy as np

__all__ = ["LEVELS", "NP", "PY", "SurrogateTables", "available", "row_kernel", "score_functions"]

#: ``c`` is rounded to multiples of ``1 / LEVELS`` (what keeps the surrogate's exact optimum enumerable).
LEVELS = 40

_KERNEL = None  # the compiled single-row path, once per process
_DISABLED = False  # set after a failed compile (numba present but broken): never retried

# Layout of the int table I (``SurrogateTables.I``, the formula's ``itab`` argument; the float table F holds
# the lookup tables at the offsets stored here).
(HAS_AUG, HAS_NAS, HAS_HPO, N_SLOTS, P, M, NS, RES_COL, NAS_OFF, HPO_OFF, HW, O_S, O_Q, O_STEM_M,
 O_STEM_P, O_HEAD_M, O_HEAD_P, O_HPO, N_AGENTS, SIZES, OP_COLS, R0, R1, R2, R3, R4, R5, R6) = range(28)
#: Then per stage ``STAGE_LEN`` entries: offset of its MACs table, of its params table, 5 strides, its first
#: action column; then one size per agent (from ``I[SIZES]``), then the op column of every augmentation slot
#: (from ``I[OP_COLS]``). The HPO table
#: ``F[I[O_HPO]:]`` holds ``(hz, e, w, ls, epochs)`` per combination of the 7 decisions (place values
#: ``I[R0..R6]``).
STAGES, STAGE_LEN = R6 + 1, 8
# Layout of the float constants C.
(A_C, B_C, A_Q, G_SC, G_SE, KAPPA, OMEGA, LAM, RHO, FLOOR, SPAN, LO, HI, DATASET, THROUGHPUT, OVERHEAD,
 BASE_S, BASE_Q, BASE_FLOPS, BASE_PARAMS, BASE_HZ, BASE_E, BASE_W, BASE_LS, BASE_EP) = range(25)


class SurrogateTables(NamedTuple):
    """A bound surrogate's tables in the layout :func:`score` reads (``I``/``C`` indices are this module's
    constants). ``F``, ``I``, ``C`` are numpy arrays (numba, numpy); ``f``, ``i``, ``c`` the same values as
    Python lists (the Python scalar path: list indexing is several times faster than numpy's)."""

    nvec: np.ndarray
    F: np.ndarray
    I: np.ndarray  # noqa: E741 - the int table, read as ``tables.I`` by the evaluator and the tests
    C: np.ndarray
    f: list
    i: list
    c: list


# -- the formula (one source; see the module docstring for how each path runs it) ---------------------------
def slot_sums(x, F, itab):
    """Sums over the augmentation slots of ``p * strength`` and ``p * utility``."""
    pp, mm, o_s, dq, cols = itab[P], itab[M], itab[O_S], itab[O_Q] - itab[O_S], itab[OP_COLS]
    ssum = 0.0
    qsum = 0.0
    for j in itab[cols:cols + itab[N_SLOTS]]:
        i = (x[j] * pp + x[j + 1]) * mm + x[j + 2] + o_s
        ssum += F[i]
        qsum += F[i + dq]
    return ssum, qsum


def _slot_sums_numpy(x, F, itab):
    """:func:`slot_sums` of the numpy binding: ``x`` is ``A.T``; one gather and one reduction per table
    (numpy sums the slots in its own order, as the batch path always did)."""
    A = x.T
    cols = itab[OP_COLS]
    c = np.asarray(itab[cols: cols + itab[N_SLOTS]], dtype=np.int64)
    idx = (A[:, c] * itab[P] + A[:, c + 1]) * itab[M] + A[:, c + 2]
    return F[itab[O_S]:].take(idx).sum(axis=1), F[itab[O_Q]:].take(idx).sum(axis=1)


def capacity(flops, C):
    """The capacity level ``c``: log-FLOPs scaled to [0, 1], rounded half up to ``1 / LEVELS`` (with a margin
    so that float summation order never moves a value across a level)."""
    return floor(min(max((log(flops) - C[LO]) / (C[HI] - C[LO]), 0.0), 1.0) * LEVELS + 0.5 + 1e-9) / LEVELS


def coupled_z(c, s, q, e, w, ls, C):
    """The coupled part of ``z``: capacity, augmentation and regularisation interactions."""
    d = s + C[OMEGA] * w + C[LAM] * ls - C[RHO] * c  # squared as d * d (pow may differ by 1 ulp)
    return (
        C[A_C] * c - C[B_C] * c * c + C[A_Q] * q
        + C[G_SC] * (2 * s - 1) * (2 * c - 1) + C[G_SE] * (2 * s - 1) * (2 * e - 1)
        - C[KAPPA] * (d * d)
    )


def accuracy(z, C):
    """``floor + (ceil - floor) * sigmoid(z)``."""
    return C[FLOOR] + C[SPAN] / (1.0 + exp(-z))


def add_noise(acc, eps):
    """Accuracy plus the (already scaled) evaluation noise ``eps``, clipped to [0, 1]."""
    return min(max(acc + eps, 0.0), 1.0)


def score(x, F, itab, C):
    """The noise-free surrogate of one flat joint action ``x``: ``(accuracy, flops, params, seconds)``.
    Modules absent from the space contribute the base pipeline's constants (``itab[HAS_*]`` = 0)."""
    if itab[HAS_AUG]:
        ssum, qsum = slot_sums(x, F, itab)
        s = ssum / itab[N_SLOTS]
        q = qsum / itab[N_SLOTS]
    else:
        s = C[BASE_S]
        q = C[BASE_Q]
    if itab[HAS_NAS]:  # stem + one table entry per stage (row-major over r, wp, k, e, w, d) + head
        r = x[itab[RES_COL]]
        macs = F[itab[O_STEM_M] + r]
        params = F[itab[O_STEM_P] + r]
        wp = 0 * r
        for b in range(STAGES, STAGES + STAGE_LEN * itab[NS], STAGE_LEN):
            j = itab[b + 7]
            w = x[j + 2]
            li = (
                r * itab[b + 2] + wp * itab[b + 3] + x[j] * itab[b + 4] + x[j + 1] * itab[b + 5]
                + w * itab[b + 6] + x[j + 3]
            )
            macs = macs + F[itab[b] + li]
            params = params + F[itab[b + 1] + li]
            wp = w
        hi_ = r * itab[HW] + wp
        flops = 2.0 * (macs + F[itab[O_HEAD_M] + hi_])
        params = params + F[itab[O_HEAD_P] + hi_]
    else:
        flops = C[BASE_FLOPS]
        params = C[BASE_PARAMS]
    if itab[HAS_HPO]:  # one index into the per-combination table of (hz, e, w, ls, epochs)
        o = itab[HPO_OFF]
        h = itab[O_HPO] + 5 * (x[o] * itab[R0] + x[o + 1] * itab[R1] + x[o + 2] * itab[R2] + x[o + 3] * itab[R3]
                               + x[o + 4] * itab[R4] + x[o + 5] * itab[R5] + x[o + 6] * itab[R6])
        hz, e, w, ls, ep = F[h], F[h + 1], F[h + 2], F[h + 3], F[h + 4]
    else:
        hz, e, w, ls, ep = C[BASE_HZ], C[BASE_E], C[BASE_W], C[BASE_LS], C[BASE_EP]
    c = capacity(flops, C)
    z = hz + coupled_z(c, s, q, e, w, ls, C)
    acc = accuracy(z, C)
    return acc, flops, params, ep * C[DATASET] * 3 * flops / C[THROUGHPUT] + C[OVERHEAD]


_FORMULA = (slot_sums, capacity, coupled_z, accuracy, add_noise, score)


def _bind(functions: dict, wrap=None) -> types.SimpleNamespace:
    """The formula's code objects bound to ``functions`` (the elementary functions and the slot sum).
    ``wrap`` (numba.njit) is applied to every function; names resolve through the shared namespace."""
    ns: dict = {**globals(), **functions}
    out = {k: v for k, v in functions.items() if k == "slot_sums"}
    for fn in _FORMULA:
        name = fn.__name__
        if name in functions:
            continue
        new = types.FunctionType(fn.__code__, ns, name, fn.__defaults__, fn.__closure__)
        new.__doc__, new.__qualname__, new.__module__ = fn.__doc__, fn.__qualname__, __name__
        ns[name] = out[name] = wrap(new) if wrap is not None else new
    return types.SimpleNamespace(**out)


#: The formula on Python numbers (lists for the tables): the scalar path.
PY = _bind({"exp": math.exp, "log": math.log, "floor": math.floor})
#: The formula on numpy arrays (``x`` = the transposed ``[D, K]`` actions): the batch path.
NP = _bind({"exp": np.exp, "log": np.log, "floor": np.floor, "min": np.minimum, "max": np.maximum,
            "slot_sums": _slot_sums_numpy})
exp, log, floor = math.exp, math.log, math.floor  # the module's own functions are the Python binding


def score_functions(kind: str) -> types.SimpleNamespace:
    """The formula's functions for ``kind`` ``"python"`` or ``"numpy"``."""
    return {"python": PY, "numpy": NP}[kind]


def _enabled() -> bool:
    return not _DISABLED and os.environ.get("MA2ML_JIT", "1").strip().lower() not in (
        "0",
        "false",
        "no",
        "off",
    )


def available() -> bool:
    """Whether the compiled single-row path can be used (numba importable and not disabled by ``MA2ML_JIT=0``)."""
    if not _enabled():
        return False
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _compile(cache: bool):
    import numba
    from numba import types as nt

    jit = numba.njit(cache=cache)  # keeps the GIL: releasing it would cost a fifth of the kernel's call
    ns = _bind({"exp": math.exp, "log": math.log, "floor": math.floor}, wrap=jit)
    score_ = ns.score

    def row(actions, F, itab, C):  # the one row of a [1, D] batch, without a view made in Python
        return score_(actions[0], F, itab, C)

    kern = jit(row)
    i64_2, i64, f64 = nt.Array(nt.int64, 2, "C"), nt.Array(nt.int64, 1, "C"), nt.Array(nt.float64, 1, "C")
    kern.compile((i64_2, f64, i64, f64))
    kern.disable_compile()
    return kern


def row_kernel():
    """The compiled single-row path (:func:`score` compiled), or ``None`` (numba missing, disabled or
    failing). Called as ``kernel(actions, F, I, C) -> (accuracy, flops, params, seconds)`` with a C-contiguous
    int64 ``[1, D]`` batch and a :class:`SurrogateTables`'s ``F, I, C``; anything else raises ``TypeError`` at
    dispatch (compilation is disabled)."""
    global _DISABLED, _KERNEL
    if not available():
        return None
    if _KERNEL is None:
        try:
            try:
                _KERNEL = _compile(cache=True)
            except RuntimeError:  # no writable cache location (read-only install): compile without one
                _KERNEL = _compile(cache=False)
        except Exception as exc:  # noqa: BLE001 - any numba failure falls back to the Python path
            _DISABLED = True
            warnings.warn(f"ma2ml: numba kernel unavailable ({type(exc).__name__}: {exc}); using the Python "
                          "scalar path", RuntimeWarning, stacklevel=2)
            return None
    return _KERNEL
