"""The data-augmentation agent: AutoAugment-style sub-policies.

The op table below is data: name, what magnitude level ``m`` in ``[0, 9]`` maps to, and whether the op
has a signed magnitude (sign drawn at random per sample, as in AutoAugment). The training backend turns
each op into the matching ``torchvision.transforms.v2.functional`` call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ma2ml_env.modules.base import AutoMLModule, Decision, register_module
from ma2ml_env.pipeline import MAGNITUDE_BINS, AugOp, Pipeline

__all__ = ["AUG_OPS", "AugmentModule", "op_magnitude"]

#: op name -> (value at magnitude 0, value at magnitude MAGNITUDE_BINS-1, signed)
AUG_OPS: dict[str, tuple[float, float, bool]] = {
    "Identity": (0.0, 0.0, False),
    "ShearX": (0.0, 0.3, True),  # shear factor
    "ShearY": (0.0, 0.3, True),
    "TranslateX": (0.0, 0.45, True),  # fraction of the image size
    "TranslateY": (0.0, 0.45, True),
    "Rotate": (0.0, 30.0, True),  # degrees
    "Brightness": (0.0, 0.9, True),  # factor 1 +/- v
    "Color": (0.0, 0.9, True),  # saturation factor 1 +/- v
    "Contrast": (0.0, 0.9, True),
    "Sharpness": (0.0, 0.9, True),
    "Posterize": (8.0, 4.0, False),  # bits kept
    "Solarize": (1.0, 0.0, False),  # threshold as a fraction of the max value
    "AutoContrast": (0.0, 0.0, False),
    "Equalize": (0.0, 0.0, False),
    "Invert": (0.0, 0.0, False),
    "Cutout": (0.0, 0.5, False),  # side of the erased square, fraction of the image size
}


def op_magnitude(op: str, level: int) -> float:
    """The op's parameter value at magnitude ``level`` (linear between the table's end points)."""
    lo, hi, _ = AUG_OPS[op]
    return lo + (hi - lo) * level / (MAGNITUDE_BINS - 1)


@register_module
class AugmentModule(AutoMLModule):
    """Augmentation agent: ``num_subpolicies`` sub-policies of ``ops_per_subpolicy`` (op, prob, magnitude).

    Decisions, per sub-policy ``i`` and op slot ``j``: ``sub{i}_op{j}`` (operation), ``sub{i}_prob{j}``
    (probability) and ``sub{i}_mag{j}`` (magnitude level).

    Args:
        num_subpolicies: sub-policies in the policy (AutoAugment: 5).
        ops_per_subpolicy: ops per sub-policy (AutoAugment: 2).
        ops: the operation names to choose from (subset of ``AUG_OPS``).
        probs: the discretised probabilities.
        magnitudes: the magnitude levels (subset of ``range(MAGNITUDE_BINS)``).
    """

    name = "aug"

    def __init__(
        self,
        num_subpolicies: int = 5,
        ops_per_subpolicy: int = 2,
        ops: tuple[str, ...] = tuple(AUG_OPS),
        probs: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
        magnitudes: tuple[int, ...] = tuple(range(MAGNITUDE_BINS)),
    ) -> None:
        if num_subpolicies < 1 or ops_per_subpolicy < 1:
            raise ValueError(
                f"num_subpolicies and ops_per_subpolicy must be >= 1, got {num_subpolicies}, {ops_per_subpolicy}"
            )
        unknown = [o for o in ops if o not in AUG_OPS]
        if unknown:
            raise ValueError(f"unknown augmentation ops {unknown}; allowed: {list(AUG_OPS)}")
        if any(not 0.0 <= p <= 1.0 for p in probs):
            raise ValueError(f"probabilities must lie in [0, 1], got {probs}")
        if any(not 0 <= m < MAGNITUDE_BINS for m in magnitudes):
            raise ValueError(f"magnitude levels must lie in [0, {MAGNITUDE_BINS - 1}], got {magnitudes}")
        self.num_subpolicies = num_subpolicies
        self.ops_per_subpolicy = ops_per_subpolicy
        self.ops, self.probs, self.magnitudes = tuple(ops), tuple(probs), tuple(magnitudes)
        decisions = []
        for i in range(num_subpolicies):
            for j in range(ops_per_subpolicy):
                decisions += [
                    Decision(f"sub{i}_op{j}", self.ops, f"operation {j} of sub-policy {i}"),
                    Decision(f"sub{i}_prob{j}", self.probs, f"probability of operation {j} of sub-policy {i}"),
                    Decision(f"sub{i}_mag{j}", self.magnitudes, f"magnitude level of operation {j} of sub-policy {i}"),
                ]
        self.decisions = tuple(decisions)

    def apply(self, choice: Mapping[str, Any], pipeline: Pipeline) -> Pipeline:
        policy = tuple(
            tuple(
                AugOp(choice[f"sub{i}_op{j}"], float(choice[f"sub{i}_prob{j}"]), int(choice[f"sub{i}_mag{j}"]))
                for j in range(self.ops_per_subpolicy)
            )
            for i in range(self.num_subpolicies)
        )
        return pipeline.replace(augment=policy)
