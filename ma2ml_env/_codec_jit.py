"""The codec's compiled fast path (numba, optional): validate the agents' action arrays and write the flat
joint action in one call (what :meth:`~ma2ml_env.codec.JointActionCodec.encode` runs on ``env.step``'s
common input). Anything it was not compiled for (not a tuple of 1-d C-contiguous int64 arrays) raises
``TypeError`` at dispatch, and a refused action returns ``False``: the codec's Python path then says what
is wrong. ``MA2ML_JIT=0`` or a missing numba leave only the Python path."""

from __future__ import annotations

import warnings
from typing import Any

from ma2ml_env.rewards import _jit

__all__ = ["encode_kernel"]

_KERNELS: dict[int, Any] = {}


def _concat_check(arrs, sizes, nvec, out):
    """Write the agents' arrays into ``out`` in agent order; ``False`` for a wrong length or a value out of
    ``[0, nvec)`` (``out`` is then garbage, and discarded)."""
    k = 0
    for i in range(len(arrs)):
        a = arrs[i]
        n = a.shape[0]
        if n != sizes[i]:
            return False
        for j in range(n):
            v = a[j]
            if v < 0 or v >= nvec[k + j]:
                return False
            out[k + j] = v
        k += n
    return True


def encode_kernel(n_agents: int) -> Any:
    """The compiled check for ``n_agents`` agents, or ``None`` (numba missing, disabled or failing)."""
    if not _jit.available():
        return None
    kern = _KERNELS.get(n_agents)
    if kern is None:
        try:
            import numba
            from numba import types as nt

            i64 = nt.Array(nt.int64, 1, "C")
            kern = numba.njit(nogil=True, cache=False)(_concat_check)
            kern.compile((nt.UniTuple(i64, n_agents), i64, i64, i64))
            kern.disable_compile()
        except Exception as exc:  # noqa: BLE001 - any numba failure leaves the Python path
            warnings.warn(f"ma2ml: numba codec kernel unavailable ({type(exc).__name__}: {exc}); using the "
                          "Python path", RuntimeWarning, stacklevel=2)
            _KERNELS[n_agents] = kern = False
        else:
            _KERNELS[n_agents] = kern
    return kern or None
