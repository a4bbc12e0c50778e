"""The pipeline spec: what one joint action of the agents means.

A :class:`Pipeline` is a frozen, human-readable description of one ML pipeline: the augmentation
policy, the child architecture and the training recipe, plus free-form ``extras`` and hooks that user
modules can add. Reward backends read nothing else, so anything a module wants to change about training
must be expressed here.

These are value types only: :class:`ma2ml_env.space.SearchSpace` builds them from joint actions, and
:mod:`ma2ml_env.costs` is the cost model behind :meth:`Architecture.flops`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ma2ml_env.costs import arch_costs

__all__ = [
    "MAGNITUDE_BINS",
    "Architecture",
    "AugOp",
    "Pipeline",
    "Stage",
    "TrainConfig",
]

#: Number of discrete magnitude levels of an augmentation op (AutoAugment uses 10).
MAGNITUDE_BINS = 10


@dataclass(frozen=True)
class AugOp:
    """One augmentation operation of a sub-policy (AutoAugment style).

    Attributes:
        op: operation name, one of ``ma2ml_env.modules.aug.AUG_OPS``.
        prob: probability in [0, 1] that the op is applied to a sample.
        magnitude: magnitude level in ``[0, MAGNITUDE_BINS - 1]``; its meaning per op is in the op table.
    """

    op: str
    prob: float
    magnitude: int

    def __str__(self) -> str:
        return f"{self.op}(p={self.prob:g}, m={self.magnitude})"


@dataclass(frozen=True)
class Stage:
    """One stage of inverted-residual (MobileNetV2) blocks.

    Attributes:
        kernel: depthwise kernel size.
        expansion: expansion ratio of the inverted residual.
        width: output channels.
        depth: number of blocks.
        stride: stride of the first block.
    """

    kernel: int = 3
    expansion: int = 3
    width: int = 16
    depth: int = 1
    stride: int = 1

    def __str__(self) -> str:
        return f"k{self.kernel}e{self.expansion}w{self.width}d{self.depth}s{self.stride}"


@dataclass(frozen=True)
class Architecture:
    """A MobileNetV2/FBNet-style child network.

    Attributes:
        resolution: input resolution (images are resized to ``resolution x resolution``).
        stem_width: channels of the 3x3 stem convolution.
        stages: the inverted-residual stages, in order.
        head_width: channels of the final 1x1 convolution before pooling.
        dropout: dropout before the classifier.
    """

    resolution: int = 16
    stem_width: int = 16
    stages: tuple[Stage, ...] = (Stage(3, 1, 16, 1, 1), Stage(3, 3, 24, 2, 2), Stage(3, 3, 40, 2, 2))
    head_width: int = 128
    dropout: float = 0.0

    def flops(self, in_channels: int = 3, num_classes: int = 10) -> int:
        """Analytical forward FLOPs (2 x multiply-accumulates) of one image, convs and classifier.

        Matches ``torch.utils.flop_counter`` on the child built by the training backend up to BN/activation
        costs, which FlopCounterMode does not count either.
        """
        return int(2 * self.costs(in_channels, num_classes)[0])

    def params(self, in_channels: int = 3, num_classes: int = 10) -> int:
        """Analytical parameter count of the convolution and linear weights (BN excluded)."""
        return int(self.costs(in_channels, num_classes)[1])

    def costs(self, in_channels: int = 3, num_classes: int = 10) -> tuple[float, float]:
        """(multiply-accumulates, parameters) of one image, from :func:`arch_costs`."""
        macs, params = arch_costs(
            np.array([self.resolution]),
            self.stem_width,
            *(np.array([[getattr(s, f) for s in self.stages]]) for f in ("kernel", "expansion", "width", "depth")),
            np.array([s.stride for s in self.stages]),
            self.head_width,
            in_channels,
            num_classes,
        )
        return float(macs[0]), float(params[0])

    def __str__(self) -> str:
        stages = " ".join(str(s) for s in self.stages)
        return f"res{self.resolution} stem{self.stem_width} [{stages}] head{self.head_width} drop{self.dropout:g}"


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe of the child.

    Attributes:
        optimizer: ``"sgd"`` (Nesterov momentum 0.9), ``"adamw"`` or ``"rmsprop"``.
        lr: peak learning rate.
        weight_decay: decoupled weight decay (AdamW) or L2 coefficient (SGD/RMSprop).
        batch_size: mini-batch size.
        schedule: learning-rate schedule, ``"cosine"``, ``"step"`` or ``"constant"``.
        label_smoothing: label smoothing of the cross-entropy loss.
        epochs: passes over the training split.
        mixup_alpha: Beta(alpha, alpha) mixup; 0 disables it.
        warmup_epochs: linear warm-up length in epochs.
    """

    optimizer: str = "sgd"
    lr: float = 0.1
    weight_decay: float = 5e-4
    batch_size: int = 32
    schedule: str = "cosine"
    label_smoothing: float = 0.0
    epochs: int = 4
    mixup_alpha: float = 0.0
    warmup_epochs: float = 0.0

    def __str__(self) -> str:
        parts = [f"{k}={v}" for k, v in dataclasses.asdict(self).items()]
        return " ".join(parts)


@dataclass(frozen=True)
class Pipeline:
    """One ML pipeline: the meaning of one joint action.

    Treat instances as immutable: use :meth:`replace`, :meth:`with_arch`, :meth:`with_train` and
    :meth:`with_extras` to derive new ones (modules' ``apply`` must do so).

    Attributes:
        augment: AutoAugment-style policy: a tuple of sub-policies, each a tuple of :class:`AugOp`.
            During training each sample (or group of samples) draws one sub-policy uniformly.
        arch: the child architecture.
        train: the training recipe.
        extras: free-form, JSON-serialisable settings that user modules add (e.g. ``{"cutout": 8}``).
            Reward backends ignore keys they do not know.
        batch_hooks: callables ``hook(x, y, generator) -> (x, y)`` applied, in order, to each training
            batch on the device after augmentation (``y`` may become soft labels of shape ``[B, C]``).
            Must be picklable (module-level functions or instances of module-level classes).
        model_hooks: callables ``hook(model) -> model`` applied, in order, to the freshly built child.
        choices: the decoded decisions of each module, ``{module: {decision: value}}``; what
            :meth:`SearchSpace.encode` reads to turn a pipeline back into a joint action.
    """

    augment: tuple[tuple[AugOp, ...], ...] = ()
    arch: Architecture = field(default_factory=Architecture)
    train: TrainConfig = field(default_factory=TrainConfig)
    extras: Mapping[str, Any] = field(default_factory=dict)
    batch_hooks: tuple[Callable[..., Any], ...] = ()
    model_hooks: tuple[Callable[..., Any], ...] = ()
    choices: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def replace(self, **changes: Any) -> Pipeline:
        """Return a copy with fields replaced (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def with_arch(self, **changes: Any) -> Pipeline:
        """Return a copy whose architecture has the given fields replaced."""
        return dataclasses.replace(self, arch=dataclasses.replace(self.arch, **changes))

    def with_train(self, **changes: Any) -> Pipeline:
        """Return a copy whose training recipe has the given fields replaced."""
        return dataclasses.replace(self, train=dataclasses.replace(self.train, **changes))

    def with_extras(self, **extras: Any) -> Pipeline:
        """Return a copy with ``extras`` updated."""
        return dataclasses.replace(self, extras={**self.extras, **extras})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable, human-readable dict (hooks are named by their qualified names)."""
        return {
            "augment": [[dataclasses.asdict(op) for op in sub] for sub in self.augment],
            "arch": {
                **{k: v for k, v in dataclasses.asdict(self.arch).items() if k != "stages"},
                "stages": [dataclasses.asdict(s) for s in self.arch.stages],
            },
            "train": dataclasses.asdict(self.train),
            "extras": dict(self.extras),
            "batch_hooks": [_qualname(h) for h in self.batch_hooks],
            "model_hooks": [_qualname(h) for h in self.model_hooks],
            "choices": {m: dict(c) for m, c in self.choices.items()},
        }

    def key(self) -> str:
        """A canonical string identifying the pipeline (for caching and de-duplication)."""
        return json.dumps(self.to_dict(), sort_keys=True, default=str)

    def describe(self) -> str:
        """A multi-line readable summary (for a tabular task, ``extras["benchmark"]`` set: its recorded
        choices only, since its table reads nothing else)."""
        if "benchmark" in self.extras:
            rest = {k: v for k, v in self.extras.items() if k != "benchmark"}
            return "\n".join([f"benchmark: {self.extras['benchmark']}", *(f"  {k}: {v}" for k, v in rest.items())])
        lines = ["augment:"]
        for i, sub in enumerate(self.augment):
            lines.append(f"  sub-policy {i}: " + ", ".join(str(op) for op in sub))
        lines.append(f"arch:    {self.arch}")
        lines.append(f"train:   {self.train}")
        if self.extras:
            lines.append(f"extras:  {dict(self.extras)}")
        hooks = [_qualname(h) for h in (*self.batch_hooks, *self.model_hooks)]
        if hooks:
            lines.append(f"hooks:   {', '.join(hooks)}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.describe()


def _qualname(obj: Any) -> str:
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{getattr(obj, '__module__', type(obj).__module__)}.{name}"
