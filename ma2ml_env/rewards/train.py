"""Real child training as the reward: ``reward="train"``.

:class:`TrainEvaluator` builds each pipeline's child network (:mod:`ma2ml_env.models`), trains it with the
pipeline's augmentation and recipe on the training split (:mod:`ma2ml_env.training`), and returns its
accuracy on the held-out validation split (taken from the training part; the test split is never used for
the reward). :func:`train_final` is what a user runs on the best pipeline found: train on the full training
set (train + validation) and report the test accuracy.

Every evaluation ends with a status (:data:`~ma2ml_env.rewards.base.STATUSES`); nothing a child does
raises out of :meth:`TrainEvaluator.evaluate_pipeline`:

==============  =====================================================================================
``ok``          trained; ``score`` = validation accuracy (times the soft-budget factor, if any)
``over_budget`` hard :class:`CostBudget` exceeded: not trained, ``score = budget.penalty_score``
``diverged``    the training loss became NaN/inf (or > ``training.DIVERGED_LOSS``: logits blown up)
``oom``         ``torch.cuda.OutOfMemoryError``, or a ``RuntimeError``/``MemoryError`` saying out of memory
``timeout``     ``time_limit`` seconds passed (checked between training steps)
``error``       any other exception (e.g. in a user hook); ``info`` has the message and traceback tail
==============  =====================================================================================

Failed evaluations score ``failure_score``. Device memory is freed after every child.

Multi-fidelity (:mod:`~ma2ml_env.rewards.fidelity`): the evaluator's ``fidelity`` levels are epochs of the
child's schedule (``fidelity_epochs``; by default 1, 2, 4... up to the longest schedule of the search space).
``evaluate(actions, seeds, levels=, start=)`` stops each child after that many epochs of its full schedule
(``info["curve"]``: the validation accuracy at every level it passed), keeps its training state, and a later
call with ``start`` continues it from there, to exactly the result of training straight through; a state
that is gone (another worker's memory, see ``state_dir``) means training from scratch at the full cost.

Example::

    import ma2ml_env
    from ma2ml_env.rewards.train import TrainEvaluator, train_final

    ev = TrainEvaluator(dataset="digits")              # or dataset="cifar10", root="~/data"
    ev.bind(space)
    result = ev.evaluate_pipeline(pipeline, seed=0)    # validation accuracy of one pipeline
    batch = ev.evaluate(actions, seeds)                # flat joint actions [K, D] -> BatchResult
    report = train_final(best_pipeline, dataset="digits", seed=0)   # test accuracy of the winner

torch is imported when this module is imported (the evaluator registry imports it lazily).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import math
import os
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ma2ml_env.data import ImageData, check_dataset_location, load_dataset
from ma2ml_env.models import build_model, count_flops, count_params
from ma2ml_env.rewards.base import BatchResult, CostBudget, EvalResult, PipelineEvaluator
from ma2ml_env.rewards.fidelity import Fidelity, epoch_fidelity, epoch_ladder, space_max_epochs
from ma2ml_env.rewards.train_fidelity import TrainStates, level_plan
from ma2ml_env.training import (
    Trainer,
    TrainingDiverged,
    TrainingTimeout,
    evaluate_accuracy,
    fit,
    recalibrate_bn,
    resize_images,
)

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from ma2ml_env.pipeline import Pipeline
    from ma2ml_env.space import SearchSpace

__all__ = ["TrainEvaluator", "check_dataset_location", "failure_status", "resolve_device", "train_final"]


def _plain(v: Any) -> Any:
    """``v`` with tuples as lists and anything not JSON-native as its ``repr`` (for :meth:`config`)."""
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    return repr(v)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` when available, else ``cpu``; anything else through ``torch.device``."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def failure_status(exc: BaseException) -> str:
    """Map an exception raised while building or training a child to an evaluation status."""
    if isinstance(exc, TrainingDiverged):
        return "diverged"
    if isinstance(exc, TrainingTimeout):
        return "timeout"
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return "oom"
    if isinstance(exc, RuntimeError):
        msg = str(exc).lower()
        if "out of memory" in msg or "can't allocate memory" in msg or "cannot allocate memory" in msg:
            return "oom"
    return "error"


@contextlib.contextmanager
def _num_threads(n: int | None) -> Iterator[None]:
    old = torch.get_num_threads()
    if n is not None and n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def _tail(exc: BaseException, lines: int = 12) -> str:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).strip()
    return "\n".join(tb.splitlines()[-lines:])


class TrainEvaluator(PipelineEvaluator):
    """Reward backend that really trains each child and returns its validation accuracy.

    Args:
        dataset: a name (``"digits"`` default, ``"cifar10"``, ``"cifar100"``, ``"imagefolder"``,
            ``"synthetic"``), a spec dict ``{"name": ..., **load_dataset kwargs}`` or an
            :class:`~ma2ml_env.data.ImageData`. See :func:`ma2ml_env.data.load_dataset`.
        root: data folder (CIFAR / ImageFolder).
        download: allow downloading CIFAR into ``root``.
        device: ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        budget: FLOPs / parameter budget, a :class:`CostBudget` or a dict of its fields (hard: over-budget
            children are not trained; soft: the MnasNet factor multiplies the accuracy).
        time_limit: seconds per evaluation (``None``: no limit); checked between training steps.
        val_fraction: fraction of the training part held out as the validation split.
        split_seed: seed of that split (fixed across evaluations; the evaluation seed does not move it).
        max_train: use at most this many training images (seeded subset; for quick searches/tests).
        epoch_scale: training passes = ``TrainConfig.epochs * epoch_scale``. Default 0.5: an HPO "epoch"
            is half a pass over the training split, so that the default pipeline (4 epochs, 32x32 input)
            trains on digits in a few seconds on one CPU core; use 1.0 for literal epochs (e.g. on a GPU).
        channels_last: ``channels_last`` memory format (default: on; faster on CUDA and on x86 CPUs).
        amp: bf16 autocast on CUDA (default on; ignored on the CPU).
        num_threads: torch intra-op threads during an evaluation (restored afterwards; ``None``: leave
            torch's setting). Default 1: the children are small, so extra threads gain at most ~1.5x on an
            idle machine, while on a busy one (parallel workers, other jobs) OpenMP oversubscription made
            training up to 30x slower in our measurements. Run one evaluator per core for throughput.
        bn_recalibration: before validation, BatchNorm statistics are re-estimated on this many clean
            training images (0 disables; see :func:`ma2ml_env.training.recalibrate_bn`).
        failure_score: score of failed evaluations.
        fidelity_epochs: the fidelity levels, in epochs of the child's schedule (the last is the full
            training; :mod:`~ma2ml_env.rewards.train_fidelity`); ``None``: 1, 2, 4... up to the longest
            schedule of the search space, set at ``bind``. Full trainings are the same at any ladder.
        state_dir: a folder for the saved trainings of children stopped early (shared by parallel workers
            and resumed searches); ``None``: this process's memory.
        dataset_kwargs: more :func:`~ma2ml_env.data.load_dataset` keyword arguments (e.g. ``image_size``,
            ``check_md5``, ``size`` / ``shape`` / ``num_classes`` for ``synthetic``).

    The data is loaded lazily on the first evaluation, moved to the device once (when it fits in 40% of
    the free device memory; otherwise batches are copied from host memory) and resized once per input
    resolution (cached). Pickling drops the loaded tensors; a copy reloads them when first used.
    """

    name = "train"
    wall_clock_seconds = True  # ``seconds`` is the measured time of the evaluation

    def __init__(
        self,
        dataset: str | Mapping[str, Any] | ImageData = "digits",
        root: str | os.PathLike | None = None,
        download: bool = False,
        device: str | torch.device = "auto",
        budget: CostBudget | Mapping[str, Any] | None = None,
        time_limit: float | None = None,
        val_fraction: float = 0.2,
        split_seed: int = 0,
        max_train: int | None = None,
        epoch_scale: float = 0.5,
        channels_last: bool = True,
        amp: bool = True,
        num_threads: int | None = 1,
        bn_recalibration: int = 512,
        failure_score: float = 0.0,
        fidelity_epochs: Sequence[float] | None = None,
        state_dir: str | os.PathLike | None = None,
        **dataset_kwargs: Any,
    ) -> None:
        budget = CostBudget.coerce(budget)  # the one rule of every backend (a dict of fields too)
        if time_limit is not None and not time_limit > 0:
            raise ValueError(f"time_limit must be > 0 seconds or None, got {time_limit}")
        if not epoch_scale > 0:
            raise ValueError(f"epoch_scale must be > 0, got {epoch_scale}")
        if not math.isfinite(failure_score):
            raise ValueError(f"failure_score must be finite, got {failure_score}")
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be >= 1 or None, got {num_threads}")
        self.dataset = dataset
        self.root = root
        self.download = download
        self._device_spec = str(device)  # re-resolved on unpickling: "auto" means the worker's own GPU/CPU
        self.device = resolve_device(device)
        self.budget = budget
        self.time_limit = time_limit
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.max_train = max_train
        self.epoch_scale = float(epoch_scale)
        self.channels_last = channels_last
        self.amp = amp
        self.num_threads = num_threads
        self.bn_recalibration = int(bn_recalibration)
        self.failure_score = float(failure_score)
        self.dataset_kwargs = dict(dataset_kwargs)
        self.fidelity_epochs = None if fidelity_epochs is None else list(fidelity_epochs)
        self.fidelity = epoch_fidelity(fidelity_epochs)
        self.states = TrainStates(state_dir)
        check_dataset_location(dataset, root, download)
        self._data: ImageData | None = None
        self._resized: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    # -- pickling: configuration only, never tensors ------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_data"] = None
        state["_resized"] = {}
        if isinstance(state["dataset"], ImageData):  # keep the data, on the CPU
            state["dataset"] = state["dataset"].to("cpu")
        del state["device"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.device = resolve_device(self._device_spec)

    # -- data ---------------------------------------------------------------------------------------------
    @property
    def data(self) -> ImageData:
        """The dataset (loaded on first use; on the device when it fits)."""
        if self._data is None:
            data = load_dataset(
                self.dataset, root=self.root, download=self.download, val_fraction=self.val_fraction,
                split_seed=self.split_seed, max_train=self.max_train, **self.dataset_kwargs,
            )
            if self._fits_on_device(data.nbytes):
                data = data.to(self.device)
            self._data = data
        return self._data

    def _fits_on_device(self, nbytes: int) -> bool:
        if self.device.type != "cuda":
            return True
        free, _ = torch.cuda.mem_get_info(self.device)
        return nbytes < 0.4 * free

    def _split_at(self, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Train and val images at ``resolution`` (cached), on the device."""
        if resolution not in self._resized:
            d = self.data
            self._resized[resolution] = (
                resize_images(d.train_x, resolution).to(self.device),
                resize_images(d.val_x, resolution).to(self.device),
            )
        return self._resized[resolution]

    # -- evaluation ---------------------------------------------------------------------------------------
    def bind(self, space: SearchSpace) -> None:
        super().bind(space)
        if self.fidelity_epochs is None:  # the default ladder: up to the longest schedule of this space
            self.fidelity = Fidelity(epoch_ladder(space_max_epochs(space)), "epochs")

    def evaluate(self, actions: np.ndarray, seeds: np.ndarray,
                 on_result: Callable[[int, EvalResult], None] | None = None, *,
                 levels: np.ndarray | None = None, start: np.ndarray | None = None) -> BatchResult:
        """Train and validate each row's pipeline with its seed (:class:`PipelineEvaluator`), at its fidelity
        level (``levels``, continuing from ``start``: :mod:`~ma2ml_env.rewards.train_fidelity`), loading the
        dataset once first and running under ``num_threads``.

        Raises:
            FileNotFoundError: the dataset is missing (a configuration error, not a child's failure).
            ValueError: a level or start outside the fidelity levels.
        """
        with _num_threads(self.num_threads if self.device.type == "cpu" else None):
            _ = self.data  # load the dataset once, before the first child
            return super().evaluate(actions, seeds, on_result, levels=levels, start=start)

    def _evaluate_row(self, row: np.ndarray, seed: int, level: int | None = None, start: int = -1) -> EvalResult:
        if level is None:
            return super()._evaluate_row(row, seed)
        pipeline = self._pipeline_of(row)
        with _num_threads(self.num_threads if self.device.type == "cpu" else None):
            return self._evaluate_one(pipeline, int(seed), (int(level), int(start)))

    def evaluate_pipeline(self, pipeline: Pipeline, seed: int) -> EvalResult:
        """Train and validate one pipeline with its seed; every failure of the child is a status."""
        with _num_threads(self.num_threads if self.device.type == "cpu" else None):
            return self._evaluate_one(pipeline, int(seed))

    def _state_key(self, pipeline: Pipeline, seed: int, level: int) -> str:
        # the settings that change rewards, and the kind of device: RNG states do not move between kinds
        if getattr(self, "_settings", None) is None:
            self._settings = json.dumps(self.config(), sort_keys=True)
        return self.states.key(f"{self._settings}|{self.device.type}", pipeline.key(), seed,
                               self.fidelity.levels[level])

    def _evaluate_one(self, pipeline: Pipeline, seed: int, at: tuple[int, int] | None = None) -> EvalResult:
        """One child; ``at`` = ``(level, start)`` for a fidelity level (else the full training)."""
        t0 = time.perf_counter()
        deadline = t0 + self.time_limit if self.time_limit is not None else None
        data = self.data
        flops = params = math.nan
        model = trainer = None
        info: dict[str, Any] = {"device": str(self.device), "dataset": data.name}
        try:
            model = build_model(
                pipeline.arch, data.channels, data.num_classes, generator=torch.Generator().manual_seed(seed)
            )
            for hook in pipeline.model_hooks:
                model = hook(model)
            params = float(count_params(model))
            res = pipeline.arch.resolution
            if pipeline.model_hooks:  # a hook may have changed the network: measure instead of the formula
                flops = float(count_flops(model, (data.channels, res, res)))
            else:
                flops = float(pipeline.arch.flops(data.channels, data.num_classes))
            budget = self.budget or CostBudget()
            score, status, budget_info = budget.apply(math.nan, flops, params)
            if status == "over_budget":  # hard budget: not trained
                info.update(budget_info)
                return EvalResult(
                    score=float(score), status=status, flops=flops, params=params,
                    seconds=time.perf_counter() - t0, info=info,
                )
            train_x, val_x = self._split_at(res)
            model = model.to(self.device)
            if self.channels_last:
                model = model.to(memory_format=torch.channels_last)
            trainer = Trainer(
                model, pipeline, train_x, data.train_y, num_classes=data.num_classes, mean=data.mean,
                std=data.std, seed=seed, epoch_scale=self.epoch_scale, channels_last=self.channels_last,
                amp=self.amp,
            )

            def validate() -> float:
                recalibrate_bn(trainer.model, train_x, mean=data.mean, std=data.std, channels_last=self.channels_last,
                               amp=self.amp, max_images=self.bn_recalibration)
                if deadline is not None and time.perf_counter() > deadline:
                    raise TrainingTimeout("time limit reached at the end of training")
                out = evaluate_accuracy(trainer.model, val_x, data.val_y, mean=data.mean, std=data.std,
                                        channels_last=self.channels_last, amp=self.amp)
                if deadline is not None and time.perf_counter() > deadline:
                    raise TrainingTimeout("time limit reached during validation")
                return out

            if at is None:
                trainer.run(trainer.total, deadline)
                acc = validate()
            else:
                acc = self._train_levels(trainer, validate, at, seed, deadline, info)
            stats = trainer.stats()
            score, status, budget_info = budget.apply(acc, flops, params)
            info.update(budget_info)
            info.update(
                train_loss=stats.train_loss, steps=stats.steps, epochs=stats.epochs, images=stats.images,
                images_per_s=stats.images_per_s, train_seconds=stats.seconds,
            )
            return EvalResult(
                score=float(score), status=status, accuracy=float(acc), flops=flops, params=params,
                seconds=time.perf_counter() - t0, info=info,
            )
        except Exception as exc:  # noqa: BLE001 - a child's failure is an outcome, never an exception
            status = failure_status(exc)
            info.update(error=f"{type(exc).__name__}: {exc}", traceback=_tail(exc))
            return EvalResult(
                score=self.failure_score, status=status, flops=flops, params=params,
                seconds=time.perf_counter() - t0, info=info,
            )
        finally:
            model = trainer = None
            self._free_memory()

    def _train_levels(self, trainer: Trainer, validate: Callable[[], float], at: tuple[int, int], seed: int,
                      deadline: float | None, info: dict[str, Any]) -> float:
        """Train from the saved state at level ``start`` (from scratch when it is missing) to ``level``,
        validating at every level on the way (``info["curve"]``: epochs -> accuracy); save the state at
        ``level`` unless it is the full training; the accuracy at ``level``."""
        (level, start), pipe = at, trainer.pipeline
        first = 0
        if start >= 0:
            state = self.states.get(self._state_key(pipe, seed, start))
            if state is not None:
                trainer.load_state_dict(state)
                first = start + 1
            info["continued"] = state is not None  # False: the saved state was gone, trained from scratch
        curve: dict[str, float] = {}
        acc, done = math.nan, -1
        plan = level_plan(trainer, self.fidelity, level, first)
        for epochs, step in plan:
            trainer.run(step, deadline)
            if step == plan[-1][1] and level < self.fidelity.top:  # saved before BN recalibration
                self.states.put(self._state_key(pipe, seed, level), trainer.state_dict())
            if trainer.step != done:  # a level past the child's own schedule is its full training
                acc, done = validate(), trainer.step
            curve[f"{epochs:g}"] = acc
        if first:
            self.states.discard(self._state_key(pipe, seed, start))
        info["curve"] = curve
        return acc

    @property
    def deterministic(self) -> bool:  # type: ignore[override]
        """Equal (pipeline, seed) pairs give equal results on the CPU without a time limit (CUDA kernels and
        wall-clock limits are not reproducible bit for bit)."""
        return self.time_limit is None and self.device.type == "cpu"

    def config(self) -> dict[str, Any]:
        """Every setting that changes the rewards: the dataset (name or spec; an in-memory ImageData by a
        digest of its tensors), ``root``, the split, ``max_train``, ``epoch_scale``, the budget, the time
        limit, the precision and memory-format options, BatchNorm recalibration, ``failure_score`` and the
        dataset keyword arguments. Not the device, threads or ``download`` (they do not change rewards)."""
        ds: Any = self.dataset
        if isinstance(ds, ImageData):
            h = hashlib.sha256()
            for t in (ds.train_x, ds.train_y, ds.val_x, ds.val_y, ds.test_x, ds.test_y):
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
            ds = {"image_data": ds.name, "sha256": h.hexdigest()}
        elif isinstance(ds, Mapping):
            ds = _plain(dict(ds))
        return {
            **super().config(),
            "dataset": ds, "root": None if self.root is None else str(Path(self.root).expanduser()),
            "val_fraction": self.val_fraction, "split_seed": self.split_seed, "max_train": self.max_train,
            "epoch_scale": self.epoch_scale, "budget": (self.budget or CostBudget()).config(),
            "time_limit": self.time_limit, "channels_last": self.channels_last, "amp": self.amp,
            "bn_recalibration": self.bn_recalibration, "failure_score": self.failure_score,
            "dataset_kwargs": _plain(self.dataset_kwargs),
            **({} if self.fidelity_epochs is None else {"fidelity_epochs": _plain(self.fidelity_epochs)}),
        }

    def _free_memory(self) -> None:
        if self.device.type == "cuda":
            gc.collect()
            torch.cuda.empty_cache()

    def close(self) -> None:
        """Drop the loaded data and cached resized copies and release device memory."""
        self._data = None
        self._resized = {}
        self._free_memory()

    def __repr__(self) -> str:
        ds = self.dataset if not isinstance(self.dataset, ImageData) else self.dataset.name
        return f"TrainEvaluator(dataset={ds!r}, device={str(self.device)!r}, epoch_scale={self.epoch_scale})"


def train_final(
    pipeline: Pipeline,
    dataset: str | Mapping[str, Any] | ImageData = "digits",
    root: str | os.PathLike | None = None,
    download: bool = False,
    *,
    device: str | torch.device = "auto",
    seed: int = 0,
    epoch_scale: float = 0.5,
    channels_last: bool = True,
    amp: bool = True,
    bn_recalibration: int = 512,
    num_threads: int | None = 1,
    **dataset_kwargs: Any,
) -> dict[str, Any]:
    """Train ``pipeline`` on the full training set (train + validation) and report its TEST accuracy.

    This is the last step of a search: the reward only ever used the validation split, so the test
    accuracy of the chosen pipeline is an unbiased estimate. Exceptions propagate (unlike the evaluator).

    Args:
        pipeline: the pipeline to train (e.g. the best one found).
        dataset, root, download, dataset_kwargs: as for :class:`TrainEvaluator`.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        seed: training seed.
        epoch_scale: as for :class:`TrainEvaluator` (use the same value as the search).
        channels_last, amp, bn_recalibration: as for :class:`TrainEvaluator`.
        num_threads: torch threads for CPU training (``None``: torch's setting), restored afterwards; see
            :class:`TrainEvaluator`.

    Returns:
        ``{"test_accuracy", "train_images", "test_images", "flops", "params", "seconds", "train_loss",
        "steps", "dataset", "device"}``.
    """
    dev = resolve_device(device)
    with _num_threads(num_threads if dev.type == "cpu" else None):
        return _train_final(pipeline, dataset, root, download, dev, seed, epoch_scale, channels_last, amp,
                            bn_recalibration, dataset_kwargs)


def _train_final(
    pipeline: Pipeline,
    dataset: Any,
    root: Any,
    download: bool,
    dev: torch.device,
    seed: int,
    epoch_scale: float,
    channels_last: bool,
    amp: bool,
    bn_recalibration: int,
    dataset_kwargs: dict[str, Any],
) -> dict[str, Any]:
    t0 = time.perf_counter()
    data = load_dataset(dataset, root=root, download=download, **dataset_kwargs)
    res = pipeline.arch.resolution
    x, y = data.merged_train()
    x, y = resize_images(x, res).to(dev), y.to(dev)
    test_x, test_y = resize_images(data.test_x, res).to(dev), data.test_y.to(dev)
    model = build_model(
        pipeline.arch, data.channels, data.num_classes, generator=torch.Generator().manual_seed(seed)
    )
    for hook in pipeline.model_hooks:
        model = hook(model)
    params = count_params(model)
    flops = count_flops(model, (data.channels, res, res))
    model = model.to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    # normalise with the statistics of the full training set
    xf = x.float().div_(255.0)
    mean = tuple(float(v) for v in xf.mean(dim=(0, 2, 3)))
    std = tuple(float(v) for v in xf.std(dim=(0, 2, 3)).clamp_min(1e-3))
    del xf
    stats = fit(
        model, pipeline, x, y, num_classes=data.num_classes, mean=mean, std=std, seed=seed,
        epoch_scale=epoch_scale, channels_last=channels_last, amp=amp,
    )
    recalibrate_bn(
        model, x, mean=mean, std=std, channels_last=channels_last, amp=amp, max_images=bn_recalibration
    )
    acc = evaluate_accuracy(model, test_x, test_y, mean=mean, std=std, channels_last=channels_last, amp=amp)
    return {
        "test_accuracy": acc,
        "train_images": int(y.shape[0]),
        "test_images": int(test_y.shape[0]),
        "flops": flops,
        "params": params,
        "seconds": time.perf_counter() - t0,
        "train_loss": stats.train_loss,
        "steps": stats.steps,
        "dataset": data.name,
        "device": str(dev),
    }
