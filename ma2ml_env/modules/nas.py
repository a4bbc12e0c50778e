"""The architecture agent: a MobileNetV2/FBNet-style space of inverted-residual stages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ma2ml_env.modules.base import AutoMLModule, Decision, register_module
from ma2ml_env.pipeline import Pipeline, Stage

__all__ = ["ArchitectureModule"]


def _round8(x: float) -> int:
    return max(8, round(float(x) / 8.0) * 8)


@register_module
class ArchitectureModule(AutoMLModule):
    """Architecture agent: per stage kernel size, expansion ratio, width multiplier and depth; plus the
    input resolution.

    Decisions: ``stage{s}_kernel``, ``stage{s}_expansion``, ``stage{s}_width`` (multiplier of the stage's
    base width, rounded to a multiple of 8), ``stage{s}_depth`` for each stage ``s``, then ``resolution``.

    Args:
        base_widths: base output channels of each stage (its length is the number of stages).
        strides: stride of the first block of each stage.
        kernels, expansions, width_mults, depths, resolutions: the choices.
    """

    name = "nas"

    def __init__(
        self,
        base_widths: tuple[int, ...] = (16, 32, 64),
        strides: tuple[int, ...] = (1, 2, 2),
        kernels: tuple[int, ...] = (3, 5, 7),
        expansions: tuple[int, ...] = (1, 3, 6),
        width_mults: tuple[float, ...] = (0.5, 0.75, 1.0, 1.5),
        depths: tuple[int, ...] = (1, 2, 3),
        resolutions: tuple[int, ...] = (16, 24, 32),
    ) -> None:
        if len(base_widths) != len(strides) or not base_widths:
            raise ValueError(
                f"base_widths and strides must be non-empty and of equal length, got {base_widths}, {strides}"
            )
        for label, vals in (("kernels", kernels), ("expansions", expansions), ("depths", depths),
                            ("resolutions", resolutions), ("strides", strides), ("base_widths", base_widths)):
            if any(int(v) != v or v < 1 for v in vals):
                raise ValueError(f"{label} must be positive integers, got {vals}")
        if any(k % 2 == 0 for k in kernels):
            raise ValueError(f"kernel sizes must be odd, got {kernels}")
        if any(w <= 0 for w in width_mults):
            raise ValueError(f"width multipliers must be > 0, got {width_mults}")
        self.base_widths, self.strides = tuple(base_widths), tuple(strides)
        decisions = []
        for s in range(len(base_widths)):
            decisions += [
                Decision(f"stage{s}_kernel", tuple(kernels), f"depthwise kernel size of stage {s}"),
                Decision(f"stage{s}_expansion", tuple(expansions), f"expansion ratio of stage {s}"),
                Decision(f"stage{s}_width", tuple(width_mults),
                         f"width multiplier of stage {s} (base {base_widths[s]})"),
                Decision(f"stage{s}_depth", tuple(depths), f"number of blocks of stage {s}"),
            ]
        decisions.append(Decision("resolution", tuple(resolutions), "input resolution in pixels"))
        self.decisions = tuple(decisions)

    def apply(self, choice: Mapping[str, Any], pipeline: Pipeline) -> Pipeline:
        stages = tuple(
            Stage(
                kernel=int(choice[f"stage{s}_kernel"]),
                expansion=int(choice[f"stage{s}_expansion"]),
                width=_round8(self.base_widths[s] * choice[f"stage{s}_width"]),
                depth=int(choice[f"stage{s}_depth"]),
                stride=self.strides[s],
            )
            for s in range(len(self.base_widths))
        )
        return pipeline.with_arch(stages=stages, resolution=int(choice["resolution"]))
