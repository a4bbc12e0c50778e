"""Where the workers of a pool compute: GPUs to pin them to, and their copy of the evaluator's ``device``.

Backends: :mod:`ma2ml_env.rewards.parallel` is the public entry; :mod:`~ma2ml_env.rewards.local_pool` pins
each worker process to one GPU with ``CUDA_VISIBLE_DEVICES`` and :mod:`~ma2ml_env.rewards.ray_pool` lets
Ray do it; both point the worker's copy of the evaluator at that GPU with :func:`pin_cuda_device`.

Only the declared :attr:`ma2ml_env.rewards.base.Evaluator.device` is read and rewritten: ``None`` (no
accelerator), a string (``"cpu"``, ``"cuda"``, ``"cuda:1"``) or a ``torch.device``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

from ma2ml_env.rewards.base import Evaluator

__all__ = ["is_cuda", "pin_cuda_device", "visible_gpus"]


def is_cuda(device: Any) -> bool:
    """Whether an :attr:`Evaluator.device` value names a CUDA device (``"cuda"``, ``"cuda:3"``...)."""
    return device is not None and str(device).split(":", 1)[0] == "cuda"


def pin_cuda_device(evaluator: Evaluator) -> None:
    """In a worker that sees one GPU (``CUDA_VISIBLE_DEVICES``), point a CUDA evaluator at it: its
    ``device`` becomes ``cuda:0`` (a string stays a string, a ``torch.device`` a ``torch.device``)."""
    device = evaluator.device
    if not is_cuda(device):
        return
    if isinstance(device, str):
        evaluator.device = "cuda:0"
        return
    torch = sys.modules.get("torch")  # a torch.device was unpickled: torch is imported
    if torch is not None and isinstance(device, torch.device):
        evaluator.device = torch.device("cuda", 0)


def visible_gpus(evaluator: Evaluator) -> list[str]:
    """GPU ids to pin workers to: every visible GPU when the evaluator computes on CUDA, else none."""
    if not is_cuda(evaluator.device):
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    if importlib.util.find_spec("torch") is None:
        return []
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]
