"""The cost model of a child architecture: multiply-accumulates and parameters, vectorised over rows.

Convolutions and the classifier are counted (biases, BN and activations are not), as
``torch.utils.flop_counter`` counts them; :meth:`ma2ml_env.Architecture.flops` and the surrogate's batched
costs both use these functions.
"""

from __future__ import annotations

import numpy as np

__all__ = ["arch_costs", "head_costs", "stage_costs", "stem_costs"]


def stage_costs(
    size: np.ndarray, c_in: np.ndarray, kernel: np.ndarray, expansion: np.ndarray, width: np.ndarray,
    depth: np.ndarray, stride: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Multiply-accumulates, parameters and output size of one inverted-residual stage (vectorised)."""
    size = np.asarray(size, dtype=np.float64)
    c_in = np.asarray(c_in, dtype=np.float64)
    k, e = np.asarray(kernel, dtype=np.float64), np.asarray(expansion, dtype=np.float64)
    w, d = np.asarray(width, dtype=np.float64), np.asarray(depth)
    macs = np.zeros(np.broadcast(size, c_in, k, e, w, d).shape)
    params = np.zeros_like(macs)
    for b in range(int(np.max(d))):
        live = d > b
        s = stride if b == 0 else 1
        hidden = c_in * e
        expand = np.where(e != 1, c_in * hidden, 0.0)
        out_size = np.ceil(size / s)
        macs = macs + np.where(live, size * size * expand + out_size * out_size * hidden * (k * k + w), 0.0)
        params = params + np.where(live, expand + hidden * (k * k + w), 0.0)
        size = np.where(live, out_size, size)
        c_in = np.where(live, w, c_in)
    return macs, params, np.ceil(np.asarray(size, dtype=np.float64))


def arch_costs(
    resolution: np.ndarray,
    stem_width: int,
    kernel: np.ndarray,
    expansion: np.ndarray,
    width: np.ndarray,
    depth: np.ndarray,
    strides: np.ndarray,
    head_width: int,
    in_channels: int,
    num_classes: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Multiply-accumulates and parameters of a batch of architectures (vectorised over rows).

    ``resolution`` has shape ``[N]``; ``kernel``, ``expansion``, ``width``, ``depth`` ``[N, S]`` (one
    column per stage); ``strides`` ``[S]``. Convolutions and the classifier are counted (biases and BN
    are not), as ``torch.utils.flop_counter`` counts them.
    """
    size = np.asarray(resolution, dtype=np.float64)
    macs, params = stem_costs(size, stem_width, in_channels)
    c_in = np.full_like(size, float(stem_width))
    for s in range(kernel.shape[1]):
        m, p, size = stage_costs(size, c_in, kernel[:, s], expansion[:, s], width[:, s], depth[:, s], strides[s])
        macs, params = macs + m, params + p
        c_in = width[:, s].astype(np.float64)
    m, p = head_costs(size, c_in, head_width, num_classes)
    return macs + m, params + p


def stem_costs(size: np.ndarray, stem_width: int, in_channels: int) -> tuple[np.ndarray, np.ndarray]:
    """MACs and parameters of the 3x3 stride-1 stem convolution."""
    size = np.asarray(size, dtype=np.float64)
    return size * size * 9 * in_channels * stem_width, np.full_like(size, 9.0 * in_channels * stem_width)


def head_costs(size: np.ndarray, c_in: np.ndarray, head_width: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """MACs and parameters of the 1x1 head convolution and the linear classifier."""
    size, c_in = np.asarray(size, dtype=np.float64), np.asarray(c_in, dtype=np.float64)
    macs = size * size * c_in * head_width + head_width * num_classes
    return macs, c_in * head_width + head_width * num_classes + num_classes
