"""The codec's compiled fast path (numba, optional): validate the agents' action arrays and write the flat
joint action and its scaled form in one call (what :meth:`~ma2ml_env.codec.JointActionCodec.encode` runs on
``env.step``'s common input). Anything it was not compiled for (not 1-d C-contiguous int64 arrays,
a float32 scaled output) raises ``TypeError`` at dispatch, and a refused action returns ``False``: the codec's
Python path then says what is wrong. ``MA2ML_JIT=0`` or a missing numba leave only the Python path."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ma2ml_env.rewards import _jit

__all__ = ["encode_kernel"]

_KERNELS: dict[int, Any] = {}


def _concat_check(arrs, sizes_nvec, out, scale, scaled):
    """Write the agents' arrays into ``out`` in agent order and ``out * scale`` into ``scaled`` (float32:
    the value cast, then one float32 product, as ``JointActionCodec.scaled``); ``False`` for a wrong length
    or a value out of ``[0, nvec)`` (the outputs are then garbage, and discarded). ``sizes_nvec``: the
    agents' sizes, then ``nvec``."""
    k = 0
    o = len(arrs)  # nvec starts after the sizes
    for i in range(len(arrs)):
        a = arrs[i]
        n = a.shape[0]
        if n != sizes_nvec[i]:
            return False
        for j in range(n):
            v = a[j]
            if v < 0 or v >= sizes_nvec[o + k + j]:
                return False
            out[k + j] = v
            scaled[k + j] = np.float32(v) * scale[k + j]
        k += n
    return True


def encode_kernel(n_agents: int) -> Any:
    """The compiled check for ``n_agents`` agents, or ``None`` (numba missing, disabled or failing). Called as
    ``kernel(*arrays, sizes_nvec, out, scale, scaled)``: one argument per agent, since numba dispatches
    separate arrays faster than a tuple of them (the one line made for this arity passes them on as one)."""
    kern = _KERNELS.get(n_agents)
    if kern is None:
        if not _jit.available():
            return None
        try:
            import numba
            from numba import types as nt

            args = ", ".join(f"a{i}" for i in range(n_agents))
            ns = {"check": numba.njit(_concat_check)}
            exec(f"def encode_{n_agents}({args}, sizes_nvec, out, scale, scaled):\n"  # our own line
                 f"    return check(({args},), sizes_nvec, out, scale, scaled)\n", ns)
            i64, f32 = nt.Array(nt.int64, 1, "C"), nt.Array(nt.float32, 1, "C")
            kern = numba.njit(ns[f"encode_{n_agents}"])
            kern.compile((i64,) * n_agents + (i64, i64, f32, f32))
            kern.disable_compile()
        except Exception as exc:  # noqa: BLE001 - any numba failure leaves the Python path
            warnings.warn(f"ma2ml: numba codec kernel unavailable ({type(exc).__name__}: {exc}); using the "
                          "Python path", RuntimeWarning, stacklevel=2)
            kern = False
        _KERNELS[n_agents] = kern
    return kern or None
