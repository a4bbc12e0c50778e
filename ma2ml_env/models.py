"""NAS decision -> ``torch.nn.Module``: the MobileNetV2/FBNet-style child network.

``build_model(arch, in_channels, num_classes)`` builds::

    3x3 conv stem (stride 1) -> BN -> ReLU6
    for each Stage: depth x InvertedResidual(kernel, expansion, width, stride on the first block)
    1x1 conv to head_width -> BN -> ReLU6 -> global average pool -> dropout -> linear

An inverted residual (Sandler et al. 2018, MobileNetV2) is 1x1 expand (skipped when ``expansion == 1``)
-> depthwise ``k x k`` -> 1x1 linear projection, each conv followed by BN (ReLU6 after the first two),
with an identity shortcut when the input and output shapes agree. Convolutions have no bias (BN follows),
so the forward FLOPs counted by ``torch.utils.flop_counter.FlopCounterMode`` equal
:meth:`ma2ml_env.pipeline.Architecture.flops` exactly (BN, activations and pooling are not counted by
either).

This module imports torch: import it only where real training happens.
"""

from __future__ import annotations

import torch
from torch import nn

from ma2ml_env.pipeline import Architecture

__all__ = ["ChildNet", "InvertedResidual", "build_model", "count_flops", "count_params"]


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: [1x1 expand] -> depthwise kxk (stride) -> 1x1 project, identity shortcut if shapes match."""

    def __init__(self, c_in: int, c_out: int, kernel: int, expansion: int, stride: int) -> None:
        super().__init__()
        hidden = c_in * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(_conv_bn(c_in, hidden, 1))
        layers.append(_conv_bn(hidden, hidden, kernel, stride=stride, groups=hidden))
        layers.append(_conv_bn(hidden, c_out, 1, act=False))  # linear bottleneck: no activation
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


class ChildNet(nn.Module):
    """The child network of one :class:`~ma2ml_env.pipeline.Architecture`."""

    def __init__(self, arch: Architecture, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.arch = arch
        layers: list[nn.Module] = [_conv_bn(in_channels, arch.stem_width, 3)]
        c_in = arch.stem_width
        for st in arch.stages:
            for b in range(st.depth):
                layers.append(InvertedResidual(c_in, st.width, st.kernel, st.expansion, st.stride if b == 0 else 1))
                c_in = st.width
        layers.append(_conv_bn(c_in, arch.head_width, 1))
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(arch.dropout) if arch.dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(arch.head_width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = x.mean(dim=(2, 3))  # global average pool (not counted as FLOPs, like in Architecture.flops)
        return self.classifier(self.dropout(x))


def _init_weights(model: nn.Module, generator: torch.Generator | None) -> None:
    # Explicit initialisation through ``generator`` so that a child's weights depend on the evaluation
    # seed only (never on the global RNG). Kaiming-normal fan-out as in torchvision's MobileNetV2.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", generator=generator)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01, generator=generator)
            nn.init.zeros_(m.bias)


def build_model(
    arch: Architecture, in_channels: int = 3, num_classes: int = 10, generator: torch.Generator | None = None
) -> ChildNet:
    """Build the child network of ``arch`` (on the CPU; move it with ``.to(device)``).

    Args:
        arch: the architecture decided by the NAS agent.
        in_channels: image channels (1 for digits, 3 for CIFAR).
        num_classes: classifier outputs.
        generator: a CPU ``torch.Generator`` for the weight initialisation (``None``: the global RNG).

    Returns:
        The model, in training mode.
    """
    if in_channels < 1 or num_classes < 1:
        raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
    if generator is None:
        model = ChildNet(arch, in_channels, num_classes)
    else:
        # layer constructors draw a default init from the global RNG; keep the caller's RNG untouched
        with torch.random.fork_rng(devices=[]):
            model = ChildNet(arch, in_channels, num_classes)
    _init_weights(model, generator)
    return model


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not; BN running statistics are buffers and not counted)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Forward FLOPs of one image, measured with ``torch.utils.flop_counter.FlopCounterMode``.

    Args:
        model: the network (its mode is restored afterwards).
        input_shape: ``(C, H, W)`` of one image or ``(N, C, H, W)`` of a batch (divided by ``N``).
    """
    from torch.utils.flop_counter import FlopCounterMode

    shape = tuple(input_shape)
    batch = 1 if len(shape) == 3 else shape[0]
    x_shape = (1, *shape) if len(shape) == 3 else shape
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(x_shape, device=device))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // batch
