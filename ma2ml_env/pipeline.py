"""The pipeline spec: what one joint action of the agents means.

A :class:`Pipeline` is a frozen, human-readable description of one ML pipeline: the augmentation
policy, the child architecture and the training recipe, plus free-form ``extras`` and hooks that user
modules can add. Reward backends read nothing else, so anything a module wants to change about training
must be expressed here.

:class:`SearchSpace` turns a joint action (a dict ``agent -> MultiDiscrete vector``) into a
:class:`Pipeline` by applying each AutoML module in order to a base pipeline, and back again
(``encode(decode(a)) == a``; the decoded choices are stored in ``Pipeline.choices``). Everything about
the joint action itself (validation, flat vectors, sampling) is its :class:`~ma2ml_env.codec.JointActionCodec`
``SearchSpace.codec``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ma2ml_env.codec import JointActionCodec

if TYPE_CHECKING:  # pragma: no cover
    from ma2ml_env.modules.base import AutoMLModule

__all__ = [
    "MAGNITUDE_BINS",
    "Architecture",
    "AugOp",
    "Pipeline",
    "SearchSpace",
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


class SearchSpace:
    """The joint search space of an ordered list of AutoML modules.

    Args:
        modules: the modules, in the order their ``apply`` runs; their names are the agent names.
        base: the pipeline the modules start from (defaults to ``Pipeline()``).

    Raises:
        ValueError: on an empty list or duplicate module names.
    """

    def __init__(self, modules: Sequence[AutoMLModule], base: Pipeline | None = None) -> None:
        modules = tuple(modules)
        if not modules:
            raise ValueError("SearchSpace needs at least one AutoML module; pass e.g. modules=('aug', 'nas', 'hpo').")
        names = [m.name for m in modules]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(
                f"duplicate AutoML module names {dup}: every module becomes an agent and needs a unique name; "
                "give the second one another name."
            )
        self.modules = modules
        self.names: tuple[str, ...] = tuple(names)
        self.base = base if base is not None else Pipeline()
        self.nvecs: dict[str, np.ndarray] = {m.name: m.nvec for m in modules}
        self.sizes: tuple[int, ...] = tuple(len(m.decisions) for m in modules)
        self.offsets: tuple[int, ...] = tuple(int(x) for x in np.cumsum((0, *self.sizes))[:-1])
        self.joint_nvec: np.ndarray = np.concatenate([self.nvecs[n] for n in self.names]).astype(np.int64)
        #: the joint-action codec: validation, flat <-> per-agent, sampling (decisions named by the modules)
        self.codec = JointActionCodec.from_nvecs(
            self.nvecs, decision_names={m.name: [d.name for d in m.decisions] for m in modules}, kind="module")

    # -- actions (the joint-action codec, :class:`ma2ml_env.codec.JointActionCodec`) ------------------------
    def validate(self, actions: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Check a joint action and return it as int64 arrays; raise ``ValueError`` saying what is wrong."""
        return self.codec.validate(actions)

    def validate_flat(self, actions: Mapping[str, Any]) -> np.ndarray:
        """Validate a joint action and return it flat (int64, agent order). Same errors as :meth:`validate`."""
        return self.codec.validate_fast(actions)[0]

    def validate_fast(self, actions: Mapping[str, Any]) -> tuple[np.ndarray, list[int]]:
        """:meth:`validate_flat`, also returning the flat action as a list of ints. The common case (right
        keys, 1-d integer arrays in range) costs a few microseconds; anything else goes through
        :meth:`validate`, which says precisely what is wrong."""
        return self.codec.validate_fast(actions)

    def flatten(self, actions: Mapping[str, Any]) -> np.ndarray:
        """Concatenate a joint action into one vector in agent order (validated as :meth:`validate`)."""
        return self.codec.validate_fast(actions)[0]

    def unflatten(self, flat: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        """Split a flat joint action vector into a per-agent dict."""
        return self.codec.decode(flat)

    def sample(self, rng: np.random.Generator, n: int | None = None) -> np.ndarray:
        """Uniform random flat joint actions: shape ``[D]`` or ``[n, D]``."""
        return self.codec.sample(rng, n)

    # -- pipelines -------------------------------------------------------------------------------------
    def decode(self, actions: Mapping[str, Any] | np.ndarray) -> Pipeline:
        """Joint action (dict or flat vector) -> :class:`Pipeline`."""
        if not isinstance(actions, Mapping):
            actions = self.unflatten(actions)
        actions = self.validate(actions)
        pipe = self.base
        choices: dict[str, dict[str, Any]] = {}
        for mod in self.modules:
            choice = mod.decode(actions[mod.name])
            choices[mod.name] = choice
            pipe = mod.apply(choice, pipe)
            if not isinstance(pipe, Pipeline):
                raise TypeError(
                    f"module {mod.name!r}.apply must return a Pipeline, got {type(pipe).__name__}"
                )
        return pipe.replace(choices=choices)

    def encode(self, pipeline: Pipeline) -> dict[str, np.ndarray]:
        """:class:`Pipeline` (as produced by :meth:`decode`) -> joint action."""
        missing = [n for n in self.names if n not in pipeline.choices]
        if missing:
            raise ValueError(
                f"pipeline has no recorded choices for modules {missing}; only pipelines made by "
                "SearchSpace.decode (or with `choices` filled in) can be encoded"
            )
        return {m.name: m.encode(pipeline.choices[m.name]) for m in self.modules}

    def __repr__(self) -> str:
        return f"SearchSpace({', '.join(f'{n}:{len(v)}' for n, v in self.nvecs.items())})"
