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
global RNGs (torch's, which dropout uses, Python's and NumPy's) are forked and seeded for the duration of
training. On the CPU the same seed gives the same accuracy.

Stopping and continuing (multi-fidelity): a :class:`Trainer` runs the full schedule up to any step, and its
:meth:`Trainer.state_dict` continues it later to the same weights as one uninterrupted run (the learning
rate at every step is that of the full schedule).

This module imports torch: import it only where real training happens.
"""

from __future__ import annotations

import contextlib
import math
import random
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
    "Trainer",
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
        steps: optimizer steps taken since the start of the schedule.
        epochs: passes over the training split so far (fractional with an epoch scale).
        images: training images processed by this run (a continued training: its new steps only).
        seconds: wall time of this run's loop.
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
    """Train ``model`` in place on ``(x, y)`` with the pipeline's augmentation and recipe, to the end of its
    schedule (a :class:`Trainer` run to :attr:`Trainer.total`).

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
    trainer = Trainer(model, pipeline, x, y, num_classes=num_classes, mean=mean, std=std, seed=seed,
                      epoch_scale=epoch_scale, channels_last=channels_last, amp=amp, check_every=check_every)
    trainer.run(trainer.total, deadline)
    return trainer.stats()


def _to_cpu(v: Any) -> Any:
    """``v`` with every tensor copied to the CPU (a state that outlives the device memory of its child)."""
    if isinstance(v, torch.Tensor):
        return v.detach().to("cpu", copy=True)
    if isinstance(v, dict):
        return {k: _to_cpu(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(_to_cpu(x) for x in v)
    return v


class Trainer:
    """One child's training, resumable: :func:`fit` is ``Trainer(...).run(trainer.total)``.

    The schedule (steps, warm-up, learning rate at every step) is always that of the full training, so
    running to step ``a``, saving :meth:`state_dict`, loading it into a new trainer and running on to ``b``
    gives the same weights as running straight to ``b``. The state holds everything a step depends on: the
    model's and the optimiser's state, the step (the learning-rate schedule is a function of it), the data
    order (the permutation of the current pass, the generator that draws the next), the augmentation,
    hook and mixup generators, and the global torch (CPU and CUDA), Python and NumPy RNG states of the
    child (dropout and user hooks draw from those; they are forked, so the caller's stay untouched).

    Args: as for :func:`fit` (``deadline`` goes to :meth:`run`).
    """

    def __init__(self, model: nn.Module, pipeline: Pipeline, x: torch.Tensor, y: torch.Tensor, *,
                 num_classes: int, mean: tuple[float, ...], std: tuple[float, ...], seed: int = 0,
                 epoch_scale: float = 1.0, channels_last: bool = False, amp: bool = False,
                 check_every: int | None = None) -> None:
        cfg = pipeline.train
        self.model, self.pipeline, self.x, self.y = model, pipeline, x, y
        self.device = x.device
        self.n = n = int(y.shape[0])
        if n < 2:
            raise ValueError(f"need at least 2 training images, got {n}")
        self.num_classes, self.amp, self.seed = num_classes, amp, int(seed)
        self.bs = max(2, min(int(cfg.batch_size), n))
        self.steps_per_epoch = n // self.bs
        self.epoch_scale = float(epoch_scale)
        #: optimizer steps of the full training
        self.total = max(1, round(cfg.epochs * epoch_scale * self.steps_per_epoch))
        self.warmup = round(cfg.warmup_epochs * epoch_scale * self.steps_per_epoch)
        self.check_every = check_every or (16 if self.device.type == "cuda" else 1)
        self.gen = torch.Generator().manual_seed(self.seed)  # permutations, augmentation plans, extras
        self.hook_gen = torch.Generator(self.device).manual_seed(self.seed + 1)  # handed to batch hooks
        self.np_rng = np.random.default_rng(self.seed + 2)  # mixup's lambda
        self.normalize = _Normalize(mean, std, self.device, channels_last)
        self.opt = make_optimizer(model, cfg)
        self.lrs = [g["lr"] for g in self.opt.param_groups]  # peak rates, before any state is loaded
        self.step = 0
        self.perm: torch.Tensor | None = None  # the data order of the current pass
        self.losses: list[torch.Tensor] = []
        self.global_rng: dict[str, Any] | None = None  # the child's global RNG states (None: seed them)
        self.images = 0
        self.seconds = 0.0

    def steps_at(self, epochs: float) -> int:
        """The step at which ``epochs`` epochs of the schedule end (at most :attr:`total`)."""
        return min(self.total, round(float(epochs) * self.epoch_scale * self.steps_per_epoch))

    def stats(self) -> FitStats:
        """Where the schedule is (``steps``, ``epochs``) and the work of this trainer's runs (``images``,
        ``seconds``: a resumed training counts only its new steps)."""
        tail = torch.cat(self.losses)[-self.steps_per_epoch:] if self.losses else torch.zeros(1)
        return FitStats(self.step, self.step / self.steps_per_epoch, self.images, self.seconds, float(tail.mean()))

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this training elsewhere, on the CPU (``torch.save``-able with
        ``weights_only=True``)."""
        tail = torch.cat(self.losses)[-self.steps_per_epoch:] if self.losses else torch.zeros(0)
        return _to_cpu({
            "model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "step": self.step,
            "perm": self.perm, "gen": self.gen.get_state(), "hook_gen": self.hook_gen.get_state(),
            "np_rng": self.np_rng.bit_generator.state, "global_rng": self.global_rng, "losses": tail,
        })

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a :meth:`state_dict` of a training of the same pipeline, data and seed."""
        step = int(state["step"])
        if not 0 <= step <= self.total:
            raise ValueError(f"the saved training is at step {step}, outside this schedule's 0..{self.total}")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.step = step
        perm = state["perm"]
        self.perm = None if perm is None else perm.to(self.device)
        self.gen.set_state(state["gen"])
        self.hook_gen.set_state(state["hook_gen"])
        self.np_rng.bit_generator.state = state["np_rng"]
        self.global_rng = state["global_rng"]
        self.losses = [state["losses"].to(self.device)] if len(state["losses"]) else []

    @contextlib.contextmanager
    def _child_rng(self) -> Iterator[None]:
        # Dropout (and any op without a generator argument) draws from the global torch RNG, user hooks
        # perhaps from Python's or NumPy's: fork them so that the caller's states are untouched, seed them
        # for a fresh child (torch with seed + 3, as before resuming existed) or restore the child's saved
        # ones, and keep the child's states when leaving, for the next run.
        devices = []
        if self.device.type == "cuda":
            devices = [self.device.index if self.device.index is not None else torch.cuda.current_device()]
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=devices):
                g = self.global_rng
                if g is None:
                    torch.manual_seed(self.seed + 3)
                    random.seed(self.seed + 4)
                    np.random.seed((self.seed + 5) % 2**32)
                else:
                    torch.set_rng_state(g["torch"])
                    if devices:
                        torch.cuda.set_rng_state(g["cuda"], devices[0])
                    random.setstate((g["python"][0], tuple(g["python"][1]), g["python"][2]))
                    np.random.set_state(("MT19937", g["numpy"][0].numpy().astype(np.uint32), *g["numpy"][1:]))
                try:
                    yield
                finally:
                    ns = np.random.get_state()
                    self.global_rng = {
                        "torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state(devices[0]) if devices else None,
                        "python": random.getstate(),
                        "numpy": (torch.from_numpy(ns[1].astype(np.int64)), int(ns[2]), int(ns[3]), float(ns[4])),
                    }
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)

    def run(self, until: int, deadline: float | None = None) -> None:
        """Train from the current step to step ``until`` (at most :attr:`total`).

        Raises:
            TrainingDiverged: a NaN/inf loss, or one above :data:`DIVERGED_LOSS`.
            TrainingTimeout: the deadline (a ``time.perf_counter()`` value) passed.
        """
        until = min(int(until), self.total)
        if until <= self.step:
            return
        cfg, device, x, y, bs = self.pipeline.train, self.device, self.x, self.y, self.bs
        extras = self.pipeline.extras
        grad_clip = float(extras.get("grad_clip", 0) or 0)
        smoothing, alpha = float(cfg.label_smoothing), float(cfg.mixup_alpha)
        hooks, policy, gen, opt = tuple(self.pipeline.batch_hooks), self.pipeline.augment, self.gen, self.opt
        self.model.train()
        recent: list[torch.Tensor] = []
        first = self.step
        t0 = time.perf_counter()
        with self._child_rng():
            while self.step < until:
                if deadline is not None and time.perf_counter() > deadline:
                    raise TrainingTimeout(f"time limit reached after {self.step} of {self.total} steps")
                b = self.step % self.steps_per_epoch
                if b == 0 or self.perm is None:  # a new pass over the data
                    self.perm = torch.randperm(self.n, generator=gen).to(device, non_blocking=True)
                idx = self.perm[b * bs : (b + 1) * bs]
                xb = apply_plan(x.index_select(0, idx), plan_policy(policy, bs, gen))
                xb = _extras_transform(xb, extras, gen)
                xb, yb = self.normalize(xb), y.index_select(0, idx)
                for hook in hooks:
                    xb, yb = hook(xb, yb, self.hook_gen)
                if alpha > 0:
                    lam = float(self.np_rng.beta(alpha, alpha))
                    mix = torch.randperm(bs, generator=gen).to(device, non_blocking=True)
                    if yb.ndim == 1:
                        yb = F.one_hot(yb, self.num_classes).float()
                    xb = lam * xb + (1.0 - lam) * xb.index_select(0, mix)
                    yb = lam * yb + (1.0 - lam) * yb.index_select(0, mix)
                f = lr_factor(self.step, self.total, self.warmup, cfg.schedule)
                for g, lr in zip(opt.param_groups, self.lrs):
                    g["lr"] = lr * f
                with _autocast(device, self.amp):
                    logits = self.model(xb)
                loss = F.cross_entropy(logits.float(), yb, label_smoothing=smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if grad_clip > 0:
                    nn.utils.clip_grad_norm_(self.model.parameters(), grad_clip)
                opt.step()
                self.step += 1
                recent.append(loss.detach())
                if len(recent) >= self.check_every or self.step == until:
                    s = torch.stack(recent)
                    worst = float(s.max()) if bool(torch.isfinite(s).all()) else math.inf
                    if not worst <= DIVERGED_LOSS:
                        raise TrainingDiverged(
                            f"training loss {worst:.3g} at step {self.step} of {self.total} "
                            f"(diverged: NaN/inf or > {DIVERGED_LOSS:g})"
                        )
                    self.losses.append(s)
                    recent = []
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        self.seconds += time.perf_counter() - t0
        self.images += (self.step - first) * bs


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
