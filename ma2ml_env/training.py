"""The child-training loop: what one real reward evaluation runs.

The recipe follows the fastest known CIFAR trainers (airbench, DESIGN.md section 6): the dataset lives on
the training device as ``uint8`` tensors (no DataLoader), each batch is gathered by index, augmented in
batches on the device (:mod:`ma2ml_env.augment`), normalised, and fed to a ``channels_last`` model under
bf16 autocast on CUDA.

One training step, in order:

1. gather the batch (indices from a seeded permutation per epoch; the last partial batch is dropped);
2. the pipeline's AutoAugment policy (each sample draws its own sub-policy), then the ``extras`` below;
3. convert to float and normalise with the training split's per-channel mean / std;
4. ``pipeline.batch_hooks``, in order: ``hook(x, y, generator) -> (x, y)`` (``x`` normalised float
   ``[B, C, H, W]``, ``y`` int64 ``[B]`` or soft labels ``[B, num_classes]``, ``generator`` a
   ``torch.Generator`` on the training device);
5. mixup (``TrainConfig.mixup_alpha``; Zhang et al. 2018): ``lambda ~ Beta(alpha, alpha)`` per batch,
   mixed with a permutation of the batch; labels become soft;
6. cross-entropy with ``TrainConfig.label_smoothing``, backward, optional gradient clipping, optimizer
   step with the scheduled learning rate.

Supported ``Pipeline.extras`` (others are ignored):

================  =========================================================================================
``cutout``        int: side in pixels of a square erased (set to 0) at a random centre of *every* training
                  image, after the policy (DeVries & Taylor 2017). 0 disables.
``hflip``         bool: random horizontal flip with probability 0.5 (off by default: digits are not
                  flip-invariant).
``crop_padding``  int: random crop after zero-padding by this many pixels (random translation of up to
                  ``crop_padding`` pixels per sample, as in the standard CIFAR recipe). 0 disables.
``grad_clip``     float: clip the global gradient norm to this value. 0 disables.
================  =========================================================================================

After training, :func:`recalibrate_bn` re-estimates BatchNorm statistics on clean training images and
:func:`evaluate_accuracy` measures top-1 accuracy in eval mode (short runs otherwise score near chance in
eval mode because the running averages lag the weights).

Optimizers: ``sgd`` (Nesterov, momentum 0.9, L2 weight decay), ``adamw`` (decoupled weight decay),
``rmsprop`` (alpha 0.9, momentum 0.9, eps 1e-3, as in the TF-style recipe of MnasNet/EfficientNet).
Weight decay applies to conv and linear weights only (not to BN parameters or biases).
Schedules, after ``warmup_epochs`` of linear warm-up: ``cosine`` (to 0), ``step`` (x0.1 at 50% and 75% of
training) and ``constant``.

Determinism: every random draw comes from generators seeded by the evaluation seed (a CPU generator for
permutations and augmentation plans, a device generator handed to hooks, numpy for mixup's lambda); the
global RNG, which dropout uses, is forked and seeded for the duration of training. On the CPU the same seed
gives the same accuracy.

This module imports torch: import it only where real training happens.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ma2ml_env.augment import apply_plan, cutout, plan_policy
from ma2ml_env.imports import import_module
from ma2ml_env.pipeline import Pipeline, TrainConfig

#: torchvision.transforms.v2.functional, imported without torch's inductor cache folder in $TMPDIR
TF = import_module("torchvision.transforms.v2.functional")

__all__ = [
    "DIVERGED_LOSS",
    "SUPPORTED_EXTRAS",
    "FitStats",
    "TrainingDiverged",
    "TrainingTimeout",
    "evaluate_accuracy",
    "fit",
    "lr_factor",
    "make_optimizer",
    "recalibrate_bn",
    "resize_images",
]

#: ``Pipeline.extras`` keys the training loop acts on (see the module docstring).
SUPPORTED_EXTRAS = ("cutout", "hflip", "crop_padding", "grad_clip")


#: A training loss above this counts as divergence: cross-entropy starts near log(num_classes), and a
#: loss this large means the logits have blown up (BN keeps such nets from ever reaching inf/NaN).
DIVERGED_LOSS = 1e4


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN, infinite, or larger than :data:`DIVERGED_LOSS`."""


class TrainingTimeout(TimeoutError):
    """The evaluation's time limit passed (checked between training steps)."""


@dataclass(frozen=True)
class FitStats:
    """What :func:`fit` reports.

    Attributes:
        steps: optimizer steps taken.
        epochs: passes over the training split (fractional with an epoch scale).
        images: training images processed.
        seconds: wall time of the loop.
        train_loss: mean loss over the last (up to) ``steps_per_epoch`` steps.
    """

    steps: int
    epochs: float
    images: int
    seconds: float
    train_loss: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else math.nan


def resize_images(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resize a ``uint8`` batch ``[N, C, H, W]`` to ``resolution x resolution`` (bilinear, antialiased),
    in chunks to bound memory; returned unchanged when already that size."""
    if tuple(x.shape[-2:]) == (resolution, resolution):
        return x
    chunks = [TF.resize(c, [resolution, resolution], antialias=True) for c in torch.split(x, 8192)]
    return torch.cat(chunks).contiguous()


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer of ``cfg`` (weight decay on conv / linear weights only)."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    on_cuda = next(model.parameters()).is_cuda
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True, fused=on_cuda or None)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, fused=on_cuda or None)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=0.9, eps=1e-3, momentum=0.9)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; use 'sgd', 'adamw' or 'rmsprop'")


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak learning rate at ``step`` (0-based) of ``total`` with ``warmup`` steps."""
    if step < warmup:
        return (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    if schedule == "step":
        return 0.1 ** ((p >= 0.5) + (p >= 0.75))
    if schedule == "constant":
        return 1.0
    raise ValueError(f"unknown schedule {schedule!r}; use 'cosine', 'step' or 'constant'")


def _random_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    # per-sample random translation by up to `pad` pixels with zero fill, via two gathers
    b, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device, non_blocking=True)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device, non_blocking=True)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None].expand(b, c, h, w + 2 * pad)
    xp = xp.gather(2, rows)
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :].expand(b, c, h, w)
    return xp.gather(3, cols)


def _extras_transform(x: torch.Tensor, extras: Mapping[str, Any], gen: torch.Generator) -> torch.Tensor:
    pad = int(extras.get("crop_padding", 0) or 0)
    if pad > 0:
        x = _random_crop(x, pad, gen)
    if extras.get("hflip", False):
        flip = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device, non_blocking=True)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    side = int(extras.get("cutout", 0) or 0)
    if side > 0:
        x = cutout(x, float(side), torch.rand(x.shape[0], 2, generator=gen))
    return x


class _Normalize:
    """uint8 -> normalised float, optionally channels_last."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device, channels_last: bool):
        m = torch.tensor(mean, dtype=torch.float32, device=device)[None, :, None, None]
        s = torch.tensor(std, dtype=torch.float32, device=device)[None, :, None, None]
        self.scale = 1.0 / (255.0 * s)
        self.shift = -m / s
        self.channels_last = channels_last

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.addcmul(self.shift, x.float(), self.scale)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


@contextlib.contextmanager
def _seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    # Dropout (and any op without a generator argument) draws from the global RNG: fork it so that the
    # caller's RNG state is untouched, and seed it so that training is reproducible.
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def fit(
    model: nn.Module,
    pipeline: Pipeline,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_classes: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    seed: int = 0,
    epoch_scale: float = 1.0,
    deadline: float | None = None,
    channels_last: bool = False,
    amp: bool = False,
    check_every: int | None = None,
) -> FitStats:
    """Train ``model`` in place on ``(x, y)`` with the pipeline's augmentation and recipe.

    Args:
        model: the child, already on the training device (and ``channels_last`` if asked).
        pipeline: gives ``augment``, ``train``, ``extras`` and ``batch_hooks``.
        x: ``uint8`` images ``[N, C, H, W]`` at the architecture's resolution, on the training device.
        y: ``int64`` labels ``[N]`` on the same device.
        num_classes: classes (for soft labels).
        mean, std: per-channel normalisation of ``x / 255``.
        seed: the evaluation seed.
        epoch_scale: passes over the data = ``pipeline.train.epochs * epoch_scale`` (warm-up scaled alike).
        deadline: ``time.perf_counter()`` value after which :class:`TrainingTimeout` is raised (checked
            before every step).
        channels_last: feed ``channels_last`` batches.
        amp: bf16 autocast (CUDA only; ignored elsewhere).
        check_every: check the loss for NaN/inf every this many steps (default: every step on the CPU,
            every 16 steps on CUDA, to avoid a device sync per step) and at the end.

    Raises:
        TrainingDiverged: a NaN/inf loss, or one above :data:`DIVERGED_LOSS`.
        TrainingTimeout: the deadline passed.
    """
    cfg = pipeline.train
    device = x.device
    n = int(y.shape[0])
    if n < 2:
        raise ValueError(f"need at least 2 training images, got {n}")
    bs = max(2, min(int(cfg.batch_size), n))
    steps_per_epoch = n // bs
    total = max(1, round(cfg.epochs * epoch_scale * steps_per_epoch))
    warmup = round(cfg.warmup_epochs * epoch_scale * steps_per_epoch)
    check_every = check_every or (16 if device.type == "cuda" else 1)
    extras = pipeline.extras
    grad_clip = float(extras.get("grad_clip", 0) or 0)
    smoothing = float(cfg.label_smoothing)
    alpha = float(cfg.mixup_alpha)
    hooks = tuple(pipeline.batch_hooks)
    policy = pipeline.augment

    gen = torch.Generator().manual_seed(seed)  # permutations, augmentation plans, extras
    hook_gen = torch.Generator(device).manual_seed(seed + 1)  # handed to batch hooks
    np_rng = np.random.default_rng(seed + 2)  # mixup's lambda
    normalize = _Normalize(mean, std, device, channels_last)
    opt = make_optimizer(model, cfg)
    lrs = [g["lr"] for g in opt.param_groups]
    model.train()
    recent: list[torch.Tensor] = []
    losses: list[torch.Tensor] = []
    step = 0
    t0 = time.perf_counter()
    with _seeded_global_rng(seed + 3, device):
        while step < total:
            perm = torch.randperm(n, generator=gen).to(device, non_blocking=True)
            for b in range(steps_per_epoch):
                if step >= total:
                    break
                if deadline is not None and time.perf_counter() > deadline:
                    raise TrainingTimeout(f"time limit reached after {step} of {total} steps")
                idx = perm[b * bs : (b + 1) * bs]
                xb = apply_plan(x.index_select(0, idx), plan_policy(policy, bs, gen))
                xb = _extras_transform(xb, extras, gen)
                xb, yb = normalize(xb), y.index_select(0, idx)
                for hook in hooks:
                    xb, yb = hook(xb, yb, hook_gen)
                if alpha > 0:
                    lam = float(np_rng.beta(alpha, alpha))
                    mix = torch.randperm(bs, generator=gen).to(device, non_blocking=True)
                    if yb.ndim == 1:
                        yb = F.one_hot(yb, num_classes).float()
                    xb = lam * xb + (1.0 - lam) * xb.index_select(0, mix)
                    yb = lam * yb + (1.0 - lam) * yb.index_select(0, mix)
                f = lr_factor(step, total, warmup, cfg.schedule)
                for g, lr in zip(opt.param_groups, lrs):
                    g["lr"] = lr * f
                with _autocast(device, amp):
                    logits = model(xb)
                loss = F.cross_entropy(logits.float(), yb, label_smoothing=smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if grad_clip > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                opt.step()
                step += 1
                recent.append(loss.detach())
                if len(recent) >= check_every or step == total:
                    s = torch.stack(recent)
                    worst = float(s.max()) if bool(torch.isfinite(s).all()) else math.inf
                    if not worst <= DIVERGED_LOSS:
                        raise TrainingDiverged(
                            f"training loss {worst:.3g} at step {step} of {total} "
                            f"(diverged: NaN/inf or > {DIVERGED_LOSS:g})"
                        )
                    losses.append(s)
                    recent = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    tail = torch.cat(losses)[-steps_per_epoch:] if losses else torch.zeros(1)
    return FitStats(step, step / steps_per_epoch, step * bs, seconds, float(tail.mean()))


def recalibrate_bn(
    model: nn.Module,
    x: torch.Tensor,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    channels_last: bool = False,
    amp: bool = False,
    max_images: int = 2048,
    batch_size: int = 256,
) -> None:
    """Re-estimate BatchNorm running statistics on (at most ``max_images``) clean training images.

    Why: after a short training run the exponential running averages (momentum 0.1) still lag the
    weights, and eval-mode accuracy can sit at chance while batch-statistics accuracy is high. NAS methods
    with short or shared-weight training recalibrate BN the same way (Guo et al. 2020, SPOS; Cai et al.
    2020, Once-for-All). Cost: one forward pass over ``max_images`` images.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or max_images <= 0:
        return
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the recalibration batches
    normalize = _Normalize(mean, std, x.device, channels_last)
    was_training = model.training
    model.eval()  # dropout off (and no global-RNG draws) ...
    for bn in bns:
        bn.train()  # ... while BN accumulates batch statistics
    try:
        with torch.no_grad(), _autocast(x.device, amp):
            for xb in torch.split(x[:max_images], batch_size):
                if xb.shape[0] > 1:
                    model(normalize(xb))
    finally:
        for bn, m in zip(bns, momenta):
            bn.momentum = m
        model.train(was_training)


def evaluate_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    channels_last: bool = False,
    amp: bool = False,
    batch_size: int = 1024,
) -> float:
    """Top-1 accuracy of ``model`` (in eval mode) on ``uint8`` images ``x`` with labels ``y``."""
    device = x.device
    normalize = _Normalize(mean, std, device, channels_last)
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    try:
        with torch.inference_mode(), _autocast(device, amp):
            for xb, yb in zip(torch.split(x, batch_size), torch.split(y, batch_size)):
                correct += (model(normalize(xb)).argmax(dim=1) == yb).sum()
    finally:
        model.train(was_training)
    return float(correct.item()) / max(1, int(y.shape[0]))
