"""Real child training (reward="train"): models, augmentation, data, the loop and the evaluator.

CPU only and fast: tiny architectures at 8x8 (digits' native size), subsets and one or two epochs.
"""

from __future__ import annotations

import math
import pickle
import time

import numpy as np
import pytest
import torch

from ma2ml_env.augment import apply_op, augment_batch, plan_policy
from ma2ml_env.models import build_model, count_flops, count_params
from ma2ml_env.modules.aug import AUG_OPS
from ma2ml_env.pipeline import Architecture, AugOp, Pipeline, Stage
from ma2ml_env.rewards.base import CostBudget, make_evaluator
from ma2ml_env.rewards.train import TrainEvaluator, failure_status, train_final

TINY = Architecture(
    resolution=8, stem_width=16, stages=(Stage(3, 1, 16, 1, 1), Stage(3, 2, 24, 1, 2)), head_width=64
)
#: learns digits to ~0.89 validation accuracy in under a second on one CPU thread
GOOD = Pipeline(arch=TINY).with_train(optimizer="sgd", lr=0.1, batch_size=32, epochs=2)


def _evaluate(ev, pipelines, seeds):
    """Each pipeline with its seed through ``ev.evaluate_pipeline`` (the PipelineEvaluator method), in order."""
    if len(pipelines) != len(seeds):
        raise ValueError(f"got {len(pipelines)} pipelines but {len(seeds)} seeds; pass one seed per pipeline")
    return [ev.evaluate_pipeline(p, s) for p, s in zip(pipelines, seeds)]


@pytest.fixture(scope="module")
def ev() -> TrainEvaluator:
    return TrainEvaluator(dataset="digits", device="cpu", epoch_scale=1.0)


# -- hooks used by the fault-injection tests (module level: picklable) ---------------------------------
def nan_hook(x, y, generator):
    return x * float("nan"), y


def oom_hook(x, y, generator):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")


def cpu_oom_hook(x, y, generator):
    raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 10^12 bytes")


def bad_hook(x, y, generator):
    raise KeyError("user code exploded")


def slow_hook(x, y, generator):
    time.sleep(0.05)
    return x, y


def blank_hook(x, y, generator):
    return torch.zeros_like(x), y


def soft_label_hook(x, y, generator):
    return x, torch.nn.functional.one_hot(y, 10).float()


def widen_head(model):
    model.classifier = torch.nn.Sequential(torch.nn.Linear(model.classifier.in_features, 64), torch.nn.ReLU(),
                                           torch.nn.Linear(64, model.classifier.out_features))
    return model


# -- models --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "arch,c,k",
    [
        (Architecture(), 3, 10),
        (Architecture(), 1, 10),
        (TINY, 1, 10),
        (
            Architecture(
                resolution=15, stages=(Stage(5, 6, 24, 2, 2), Stage(7, 1, 24, 3, 1), Stage(3, 3, 40, 1, 2))
            ),
            3,
            100,
        ),
        (Architecture(resolution=24, dropout=0.2, stages=(Stage(7, 3, 8, 3, 1),)), 3, 7),
    ],
)
def test_model_flops_match_analytical(arch, c, k):
    model = build_model(arch, c, k)
    assert count_flops(model, (c, arch.resolution, arch.resolution)) == arch.flops(c, k)
    assert count_params(model) > 0
    out = model(torch.zeros(2, c, arch.resolution, arch.resolution))
    assert out.shape == (2, k)


def test_model_init_is_seeded():
    a = build_model(TINY, 1, 10, generator=torch.Generator().manual_seed(3))
    b = build_model(TINY, 1, 10, generator=torch.Generator().manual_seed(3))
    c = build_model(TINY, 1, 10, generator=torch.Generator().manual_seed(4))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[n], sb[n]) for n in sa)
    assert not all(torch.equal(sa[n], sc[n]) for n in sa)


# -- augmentation --------------------------------------------------------------------------------------
def _images(n=64, c=3, size=32, seed=0):
    # values in [60, 120): not already full-range, so that AutoContrast/Equalize change every image
    g = torch.Generator().manual_seed(seed)
    return torch.randint(60, 120, (n, c, size, size), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("op", [o for o in AUG_OPS if o != "Identity"])
def test_aug_probability_is_honoured(op):
    x = _images()
    policy0 = ((AugOp(op, 0.0, 9),),)
    policy1 = ((AugOp(op, 1.0, 9),),)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(augment_batch(x, policy0, g), x)
    y = augment_batch(x, policy1, g)
    assert y.dtype == torch.uint8 and y.shape == x.shape
    changed = (y != x).flatten(1).any(1)
    assert changed.float().mean() > 0.9, (
        f"{op} with p=1 left {int((~changed).sum())} of {len(x)} images unchanged"
    )


def test_aug_partial_probability_and_signs():
    x = _images(n=400, c=1)
    y = augment_batch(x, ((AugOp("Invert", 0.4, 0),),), torch.Generator().manual_seed(1))
    frac = (y != x).flatten(1).any(1).float().mean().item()
    assert 0.3 < frac < 0.5
    # signed op: both directions occur within a batch
    groups = plan_policy(((AugOp("Rotate", 1.0, 9),),), 64, torch.Generator().manual_seed(0))
    assert sorted(g.value for g in groups) == [-30.0, 30.0]


def test_aug_per_sample_subpolicies_differ():
    x = _images(n=200, c=1)
    policy = ((AugOp("Invert", 1.0, 0),), (AugOp("Identity", 1.0, 0),))
    y = augment_batch(x, policy, torch.Generator().manual_seed(0))
    inverted = (y == 255 - x).flatten(1).all(1)
    unchanged = (y == x).flatten(1).all(1)
    assert bool((inverted | unchanged).all())
    assert 60 < int(inverted.sum()) < 140  # each sample drew its own sub-policy
    # the same seed gives the same draws
    assert torch.equal(y, augment_batch(x, policy, torch.Generator().manual_seed(0)))


def test_aug_ops_apply_in_order_within_subpolicy():
    x = _images(n=8, c=1)
    y = augment_batch(
        x, ((AugOp("Invert", 1.0, 0), AugOp("Invert", 1.0, 0)),), torch.Generator().manual_seed(0)
    )
    assert torch.equal(y, x)


def test_cutout_erases_a_square():
    x = torch.full((4, 1, 16, 16), 200, dtype=torch.uint8)
    y = apply_op(x, "Cutout", 0.5, torch.full((4, 2), 0.5))
    assert int((y == 0).sum(dim=(1, 2, 3))[0]) == 64  # 8x8 square in the middle


# -- data ----------------------------------------------------------------------------------------------
def test_digits_splits_are_disjoint_and_test_is_fixed():
    from ma2ml_env.data import load_dataset

    a = load_dataset("digits", split_seed=0)
    b = load_dataset("digits", split_seed=1)
    assert a.channels == 1 and a.num_classes == 10 and a.train_x.dtype == torch.uint8
    assert len(a.train_y) + len(a.val_y) + len(a.test_y) == 1797
    assert torch.equal(a.test_x, b.test_x)  # the test split never moves
    assert not torch.equal(a.val_x, b.val_x)
    # no image of val (or train) is a test image, unless the very same picture occurs twice in the dataset
    counts: dict[bytes, int] = {}
    for img in torch.cat([a.train_x, a.val_x, a.test_x]):
        counts[img.numpy().tobytes()] = counts.get(img.numpy().tobytes(), 0) + 1
    test_keys = {img.numpy().tobytes() for img in a.test_x}
    for img in torch.cat([a.val_x, a.train_x]):
        key = img.numpy().tobytes()
        assert key not in test_keys or counts[key] > 1


def _write_cifar(root, n_per_batch=20, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [int(v) for v in rng.integers(0, 10, n_per_batch)]
        data = rng.integers(0, 256, (n_per_batch, 3 * 32 * 32), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "labels": labels, "data": data, "filenames": []}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": n_per_batch}, f)
    return folder


def test_cifar_format_through_torchvision_loader(tmp_path):
    from ma2ml_env.data import load_dataset

    _write_cifar(tmp_path)
    d = load_dataset("cifar10", root=tmp_path, check_md5=False)
    assert d.channels == 3 and d.image_size == (32, 32) and d.num_classes == 10
    assert len(d.train_y) + len(d.val_y) == 100 and len(d.test_y) == 20
    ev = TrainEvaluator(dataset="cifar10", root=str(tmp_path), check_md5=False, device="cpu")
    arch = TINY.__class__(**{**TINY.__dict__, "resolution": 8})
    r = _evaluate(ev, [Pipeline(arch=arch).with_train(batch_size=16, epochs=1)], [0])[0]
    assert r.status == "ok" and 0.0 <= r.score <= 1.0
    # the real checksums reject the fake files, with a message saying how to proceed
    with pytest.raises(FileNotFoundError, match="check_md5=False"):
        load_dataset("cifar10", root=tmp_path)


def test_missing_dataset_names_path_and_download(tmp_path):
    from ma2ml_env.data import load_dataset

    with pytest.raises(FileNotFoundError) as info:
        load_dataset("cifar100", root=tmp_path / "nowhere")
    msg = str(info.value)
    assert str(tmp_path / "nowhere" / "cifar-100-python") in msg and "download=True" in msg
    # the evaluator finds out at construction, without loading anything
    with pytest.raises(ValueError, match="download=True") as info:
        TrainEvaluator(dataset="cifar10", root=str(tmp_path), device="cpu")
    assert str(tmp_path / "cifar-10-batches-py") in str(info.value)


@pytest.mark.parametrize("kwargs, where", [
    ({"dataset": "cifar100"}, "root=<folder>"),
    ({"dataset": "imagefolder", "root": "{tmp}/none"}, "{tmp}/none"),
    ({"dataset": "npz", "root": "{tmp}/d.npz"}, "{tmp}/d.npz"),
    ({"dataset": "mnist", "root": "{tmp}"}, "{tmp}"),
    ({"dataset": {"name": "cifar10", "root": "{tmp}/c"}}, "{tmp}/c/cifar-10-batches-py"),
    ({"dataset": "no_such_data"}, "unknown dataset"),
])
def test_missing_data_is_a_construction_error_naming_the_path(kwargs, where, tmp_path, monkeypatch):
    import ma2ml_env
    from ma2ml_env.rewards import train

    monkeypatch.setattr(train, "load_dataset", lambda *a, **k: pytest.fail("the data must not be loaded"))

    def fill(v):
        return v.replace("{tmp}", str(tmp_path)) if isinstance(v, str) else {k: fill(x) for k, x in v.items()}

    with pytest.raises(ValueError) as info:
        TrainEvaluator(device="cpu", **{k: fill(v) for k, v in kwargs.items()})
    assert fill(where) in str(info.value)
    # and through the env: before any evaluation
    with pytest.raises(ValueError, match=r"root|unknown"):
        ma2ml_env.parallel_env(
            reward="train", reward_kwargs={"device": "cpu", **{k: fill(v) for k, v in kwargs.items()}}
        )


def test_cifar_with_download_is_not_an_error_before_the_run(tmp_path):
    ev = TrainEvaluator(dataset="cifar10", root=str(tmp_path), download=True, device="cpu")
    assert ev.config()["root"] == str(tmp_path)


def test_bad_budget_is_a_value_error():
    with pytest.raises(ValueError, match="CostBudget"):
        TrainEvaluator(device="cpu", budget={"max_flop": 1e6})


def test_imagefolder_from_pngs(tmp_path):
    from PIL import Image

    from ma2ml_env.data import load_dataset

    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 4)):
        for cls, colour in (("cat", 40), ("dog", 220)):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                arr = np.clip(colour + rng.normal(0, 10, (20, 24, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(tmp_path / split / cls / f"{i}.png")
    d = load_dataset("imagefolder", root=tmp_path, image_size=12)
    assert d.num_classes == 2 and d.channels == 3 and d.image_size == (12, 12)
    assert len(d.train_y) + len(d.val_y) == 24 and len(d.test_y) == 8
    r = _evaluate(TrainEvaluator(dataset="imagefolder", root=str(tmp_path), image_size=12, device="cpu"),
        [GOOD.with_train(batch_size=8, epochs=2)], [0]
    )[0]
    assert r.status == "ok"


def test_synthetic_is_learnable():
    ev = TrainEvaluator(
        dataset={"name": "synthetic", "size": 600, "shape": (3, 8, 8)}, device="cpu", epoch_scale=1
    )
    r = _evaluate(ev, [GOOD], [0])[0]
    assert r.status == "ok" and r.accuracy > 0.5, r


# -- reward --------------------------------------------------------------------------------------------
def test_reward_is_validation_accuracy_deterministic_and_pipeline_dependent(ev):
    other = GOOD.with_train(lr=1e-3, epochs=1)
    r1, r2, r3 = _evaluate(ev, [GOOD, GOOD, other], [0, 0, 0])
    assert r1.status == r2.status == r3.status == "ok"
    assert r1.score == r2.score == r1.accuracy  # same seed, same accuracy on the CPU
    assert r1.accuracy > 0.7, r1  # it really learns (10 classes: chance is 0.1)
    assert r3.accuracy != r1.accuracy
    assert r1.flops == TINY.flops(1, 10) and r1.params > 0
    assert r1.info["steps"] == 2 * (len(ev.data.train_y) // 32)
    # the global RNG is untouched by an evaluation
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    _evaluate(ev, [GOOD.replace(arch=TINY.__class__(**{**TINY.__dict__, "dropout": 0.3}))], [1])
    assert torch.equal(before, torch.random.get_rng_state())


def test_recipe_options_run(ev):
    pipes = [
        GOOD.with_train(optimizer="sgd", schedule="step", warmup_epochs=1.0, label_smoothing=0.1),
        GOOD.with_train(optimizer="rmsprop", lr=1e-3, schedule="constant", mixup_alpha=0.4),
        GOOD.with_extras(cutout=3, hflip=True, crop_padding=2, grad_clip=1.0),
        GOOD.replace(
            augment=((AugOp("Rotate", 0.8, 5), AugOp("Cutout", 0.5, 5)), (AugOp("Equalize", 0.6, 0),))
        ),
        GOOD.replace(batch_hooks=(soft_label_hook,)),
    ]
    results = _evaluate(ev, pipes, [0] * len(pipes))
    assert [r.status for r in results] == ["ok"] * len(pipes), [r.info.get("error") for r in results]
    assert all(r.accuracy > 0.3 for r in results), [r.accuracy for r in results]


def test_epoch_scale(ev):
    half = TrainEvaluator(dataset="digits", device="cpu", max_train=400, epoch_scale=0.5)
    r = _evaluate(half, [GOOD.with_train(epochs=3)], [0])[0]
    assert r.info["steps"] == round(1.5 * (400 // 32))


# -- failures ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "pipeline,status",
    [
        (GOOD.replace(batch_hooks=(nan_hook,)), "diverged"),
        (GOOD.with_train(optimizer="sgd", lr=1e6, weight_decay=0.0), "diverged"),
        (GOOD.replace(batch_hooks=(oom_hook,)), "oom"),
        (GOOD.replace(batch_hooks=(cpu_oom_hook,)), "oom"),
        (GOOD.replace(batch_hooks=(bad_hook,)), "error"),
    ],
    ids=["nan-hook", "huge-lr", "cuda-oom", "cpu-oom", "user-exception"],
)
def test_failures_become_statuses(ev, pipeline, status):
    r = _evaluate(ev, [pipeline], [0])[0]
    assert r.status == status, r.info.get("error")
    assert r.score == ev.failure_score and math.isnan(r.accuracy)
    assert r.flops == TINY.flops(1, 10)  # the cost is still reported
    assert r.info["error"] and "Traceback" in r.info["traceback"]
    if status == "error":
        assert "user code exploded" in r.info["error"] and "bad_hook" in r.info["traceback"]
    ok = _evaluate(ev, [GOOD], [0])[0]  # the evaluator stays usable
    assert ok.status == "ok"


def test_time_limit(ev):
    limited = TrainEvaluator(
        dataset="digits", device="cpu", max_train=400, time_limit=0.5, failure_score=-1.0
    )
    r = _evaluate(limited, [GOOD.replace(batch_hooks=(slow_hook,)), GOOD.with_train(epochs=1)], [0, 0])
    assert r[0].status == "timeout" and r[0].score == -1.0
    assert r[1].status == "ok"


def test_threads_restored():
    old = torch.get_num_threads()
    _evaluate(TrainEvaluator(device="cpu", max_train=100, num_threads=old + 1),
        [GOOD.with_train(epochs=1)], [0]
    )
    assert torch.get_num_threads() == old


def test_failure_status_mapping():
    assert failure_status(torch.cuda.OutOfMemoryError("x")) == "oom"
    assert failure_status(MemoryError()) == "oom"
    assert failure_status(RuntimeError("CUDA out of memory.")) == "oom"
    assert failure_status(RuntimeError("shape mismatch")) == "error"
    assert failure_status(ValueError("x")) == "error"


def test_bad_architecture_is_an_error_not_a_crash(ev):
    bad = GOOD.with_arch(stages=(Stage(4, 1, 8, 1, 1),))  # even kernel: output shapes do not match
    r = _evaluate(ev, [bad.with_arch(resolution=0)], [0])[0]
    assert r.status == "error"


# -- user modules and hooks change training ------------------------------------------------------------
def test_user_module_changes_training(ev):
    from ma2ml_env.modules import AutoMLModule, Decision, register_module, unregister_module
    from ma2ml_env.space import SearchSpace

    @register_module
    class BlankOut(AutoMLModule):
        name = "blankout_test"
        decisions = (Decision("on", (False, True), "replace every training image by zeros"),)

        def apply(self, choice, pipeline):
            return pipeline.replace(batch_hooks=(blank_hook,)) if choice["on"] else pipeline

    try:
        space = SearchSpace([BlankOut()], base=GOOD)
        off, on = space.decode({"blankout_test": [0]}), space.decode({"blankout_test": [1]})
        r_off, r_on = _evaluate(ev, [off, on], [0, 0])
        assert r_off.accuracy > 0.7 and r_on.accuracy < 0.3, (r_off.accuracy, r_on.accuracy)
    finally:
        unregister_module("blankout_test")


def test_model_hook_is_applied_and_measured(ev):
    r = _evaluate(ev, [GOOD.replace(model_hooks=(widen_head,))], [0])[0]
    assert r.status == "ok"
    assert r.flops == TINY.flops(1, 10) - 2 * 64 * 10 + 2 * (64 * 64 + 64 * 10)
    assert r.params > _evaluate(ev, [GOOD], [0])[0].params


# -- budgets -------------------------------------------------------------------------------------------
def test_hard_budget_skips_training():
    flops = TINY.flops(1, 10)
    ev = TrainEvaluator(device="cpu", max_train=200, budget=CostBudget(max_flops=flops - 1))
    t0 = time.perf_counter()
    r = _evaluate(ev, [GOOD.with_train(epochs=8)], [0])[0]
    assert r.status == "over_budget" and r.score == 0.0 and r.flops == flops and r.params > 0
    assert time.perf_counter() - t0 < 1.0
    ok = _evaluate(TrainEvaluator(device="cpu", max_train=200, budget=CostBudget(max_flops=flops)),
        [GOOD], [0]
    )[0]
    assert ok.status == "ok"


def test_soft_budget_scales_accuracy():
    flops = TINY.flops(1, 10)
    budget = CostBudget(max_flops=flops / 2, mode="soft", weight=-0.5)
    r = _evaluate(TrainEvaluator(device="cpu", max_train=200, budget=budget), [GOOD], [0])[0]
    assert r.status == "ok"
    assert r.score == pytest.approx(r.accuracy * 2**-0.5)
    assert r.info["budget_factor"] == pytest.approx(2**-0.5)


# -- plumbing ------------------------------------------------------------------------------------------
def test_registry_and_pickle(ev):
    made = make_evaluator("train", dataset="digits", device="cpu", max_train=200)
    assert isinstance(made, TrainEvaluator) and made.name == "train"
    _evaluate(ev, [GOOD], [0])  # data loaded
    blob = pickle.dumps(ev)
    assert len(blob) < 10_000  # configuration only, no tensors
    clone = pickle.loads(blob)
    assert clone._data is None
    assert _evaluate(clone, [GOOD], [0])[0].score == _evaluate(ev, [GOOD], [0])[0].score
    with pytest.raises(ValueError, match="one seed per joint action"):
        ev.evaluate(np.zeros((1, 7), dtype=np.int64), np.zeros(2, dtype=np.int64))


def test_train_final_reports_test_accuracy():
    out = train_final(GOOD, dataset="digits", device="cpu", seed=0, epoch_scale=1.0)
    assert out["train_images"] == 1797 - 359 and out["test_images"] == 359
    assert out["test_accuracy"] > 0.8
    assert out["flops"] == TINY.flops(1, 10)
