"""Batched, on-device AutoAugment-style augmentation of ``uint8`` image batches.

Following ``torchvision.transforms.v2``, random parameter sampling is kept apart from the deterministic
apply:

1. :func:`plan_policy` (CPU, seeded ``torch.Generator``) draws, for every sample of a batch, its
   sub-policy (uniformly), for every op of that sub-policy whether it fires (with the op's probability)
   and, for signed ops, the sign of its magnitude. Samples that share (sub-policy, op, sign) form one
   *group*; the plan is a list of ``(op, value, sample indices)``.
2. :func:`apply_plan` runs each group through the matching ``torchvision.transforms.v2.functional`` call
   on the device, on that group's samples only (gather -> op -> scatter). Ops of a sub-policy are applied
   in order; groups of different sub-policies are disjoint.

Op semantics follow ``torchvision.transforms.v2.AutoAugment`` with the value ranges of
:data:`ma2ml_env.modules.aug.AUG_OPS`; ``Cutout`` erases (fills with 0) a square of side
``value * image size`` at a random centre per sample (DeVries & Taylor 2017; clipped at the border).

The planning cost is a few small CPU tensor operations per batch and the apply needs no host-device
synchronisation (indices go to the device in one copy).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ma2ml_env.imports import import_module
from ma2ml_env.modules.aug import AUG_OPS, op_magnitude
from ma2ml_env.pipeline import AugOp

#: torchvision.transforms.v2.functional, imported without torch's inductor cache folder in $TMPDIR
TF = import_module("torchvision.transforms.v2.functional")

__all__ = ["KERNELS", "AugGroup", "apply_op", "apply_plan", "augment_batch", "cutout", "plan_policy"]


@dataclass(frozen=True)
class AugGroup:
    """One op applied with one parameter value to a group of samples.

    Attributes:
        op: op name (``AUG_OPS`` key).
        value: the op's parameter (signed).
        index: sample indices within the batch (CPU or device ``int64``).
        aux: ``[len(index), 2]`` uniform numbers in ``[0, 1)`` (the Cutout centres).
    """

    op: str
    value: float
    index: torch.Tensor
    aux: torch.Tensor


def _is_identity(op: str, value: float) -> bool:
    if op == "Identity":
        return True
    if op == "Posterize":
        return int(value) >= 8
    if op in ("AutoContrast", "Equalize", "Invert", "Solarize"):
        return False
    return value == 0.0  # geometric and colour ops at magnitude 0, Cutout of side 0


def plan_policy(
    policy: Sequence[Sequence[AugOp]], batch_size: int, generator: torch.Generator
) -> list[AugGroup]:
    """Draw the random part of the augmentation of one batch (see the module docstring).

    Args:
        policy: the sub-policies (``Pipeline.augment``); empty means no augmentation.
        batch_size: samples in the batch.
        generator: a CPU generator (the evaluation's).

    Returns:
        The groups to apply, in order.
    """
    if not policy or batch_size == 0:
        return []
    sub = torch.randint(len(policy), (batch_size,), generator=generator)
    groups: list[AugGroup] = []
    for s, ops in enumerate(policy):
        members = torch.nonzero(sub == s).flatten()
        if members.numel() == 0:
            continue
        for aug in ops:
            # draw even for no-op ops, so that the random stream does not depend on magnitudes
            fire = torch.rand(members.numel(), generator=generator) < aug.prob
            sign = torch.rand(members.numel(), generator=generator) < 0.5
            aux = torch.rand(members.numel(), 2, generator=generator)
            value = op_magnitude(aug.op, aug.magnitude)
            if _is_identity(aug.op, value):
                continue
            signed = AUG_OPS[aug.op][2]
            parts = ((fire & sign, value), (fire & ~sign, -value)) if signed else ((fire, value),)
            for mask, v in parts:
                if mask.any():
                    groups.append(AugGroup(aug.op, float(v), members[mask], aux[mask]))
    return groups


def cutout(x: torch.Tensor, side: float, centres: torch.Tensor) -> torch.Tensor:
    """Erase (fill with 0) a square of ``side`` pixels per image at ``centres`` (``[B, 2]`` in ``[0, 1)``,
    as fractions of height and width)."""
    h, w = x.shape[-2:]
    half = side / 2.0
    cy = centres[:, 0].to(x.device, torch.float32) * h
    cx = centres[:, 1].to(x.device, torch.float32) * w
    ys = torch.arange(h, device=x.device, dtype=torch.float32) + 0.5
    xs = torch.arange(w, device=x.device, dtype=torch.float32) + 0.5
    inside_y = (ys[None, :] - cy[:, None]).abs() < half  # [B, H]
    inside_x = (xs[None, :] - cx[:, None]).abs() < half  # [B, W]
    mask = (inside_y[:, :, None] & inside_x[:, None, :])[:, None]  # [B, 1, H, W]
    return x.masked_fill(mask, 0)


def _shear(x: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    # AutoAugment's shear factor v is torchvision's shear angle atan(v), about the top-left corner
    return TF.affine(x, angle=0.0, translate=[0, 0], scale=1.0,
                     shear=[math.degrees(math.atan(sx)), math.degrees(math.atan(sy))], center=[0, 0])


def _translate(x: torch.Tensor, fx: float, fy: float) -> torch.Tensor:
    h, w = x.shape[-2:]
    return TF.affine(x, angle=0.0, translate=[round(fx * w), round(fy * h)], scale=1.0, shear=[0.0, 0.0])


def _cutout(x: torch.Tensor, v: float, aux: torch.Tensor | None) -> torch.Tensor:
    aux = aux if aux is not None else torch.full((x.shape[0], 2), 0.5)
    return cutout(x, v * min(x.shape[-2:]), aux)


#: op name -> kernel(x, value, aux): the deterministic apply of each ``AUG_OPS`` entry (v2.functional).
KERNELS: dict[str, Callable[[torch.Tensor, float, torch.Tensor | None], torch.Tensor]] = {
    "Identity": lambda x, v, a: x,
    "ShearX": lambda x, v, a: _shear(x, v, 0.0),
    "ShearY": lambda x, v, a: _shear(x, 0.0, v),
    "TranslateX": lambda x, v, a: _translate(x, v, 0.0),
    "TranslateY": lambda x, v, a: _translate(x, 0.0, v),
    "Rotate": lambda x, v, a: TF.rotate(x, angle=v),
    "Brightness": lambda x, v, a: TF.adjust_brightness(x, 1.0 + v),
    "Color": lambda x, v, a: TF.adjust_saturation(x, 1.0 + v) if x.shape[-3] == 3 else x,  # grey: no-op
    "Contrast": lambda x, v, a: TF.adjust_contrast(x, 1.0 + v),
    "Sharpness": lambda x, v, a: TF.adjust_sharpness(x, 1.0 + v),
    "Posterize": lambda x, v, a: TF.posterize(x, bits=int(v)),
    "Solarize": lambda x, v, a: TF.solarize(x, threshold=v * 255.0),
    "AutoContrast": lambda x, v, a: TF.autocontrast(x),
    "Equalize": lambda x, v, a: TF.equalize(x),
    "Invert": lambda x, v, a: TF.invert(x),
    "Cutout": _cutout,
}


def apply_op(x: torch.Tensor, op: str, value: float, aux: torch.Tensor | None = None) -> torch.Tensor:
    """Apply one op with parameter ``value`` to every image of ``x`` (``uint8`` ``[B, C, H, W]``).

    ``aux`` (``[B, 2]`` in ``[0, 1)``) places the Cutout squares; it defaults to the image centre.
    """
    try:
        kernel = KERNELS[op]
    except KeyError:
        raise ValueError(f"unknown augmentation op {op!r}; allowed: {list(AUG_OPS)}") from None
    return kernel(x, value, aux)


def apply_plan(x: torch.Tensor, groups: Sequence[AugGroup]) -> torch.Tensor:
    """Apply planned groups to the batch ``x`` (``uint8`` ``[B, C, H, W]``); returns a new tensor."""
    if not groups:
        return x
    x = x.clone()
    for g in groups:
        idx = g.index.to(x.device, non_blocking=True)
        x.index_copy_(0, idx, apply_op(x.index_select(0, idx), g.op, g.value, g.aux))
    return x


def augment_batch(
    x: torch.Tensor, policy: Sequence[Sequence[AugOp]], generator: torch.Generator
) -> torch.Tensor:
    """Plan and apply ``policy`` to the batch ``x`` in one call (``generator`` is a CPU generator)."""
    return apply_plan(x, plan_policy(policy, x.shape[0], generator))
