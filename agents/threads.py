"""Torch's intra-op thread count for a block: what makes tiny torch computations fast and the same on any machine."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["torch_threads"]


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the process-wide setting (``None``:
    leave it). Thread start-up and contention dominate tiny torch computations on a few cores, and a
    fixed thread count makes their floating-point reductions, hence a search, the same on any machine."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != before:
            torch.set_num_threads(before)
