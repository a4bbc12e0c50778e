"""Real training with fidelity levels: a child stopped after some epochs and continued later ends exactly where
an uninterrupted training ends (weights, accuracy), and a continuation pays only for its new epochs.

CPU only, tiny models at 8x8 on digits subsets (the configuration of tests/test_training.py).
"""

from __future__ import annotations

import io
import pickle
import random

import numpy as np
import pytest
import torch

from ma2ml_env import Fidelity, check_evaluator
from ma2ml_env.data import load_dataset
from ma2ml_env.models import build_model
from ma2ml_env.modules import resolve_modules
from ma2ml_env.pipeline import Architecture, Pipeline, Stage
from ma2ml_env.rewards.fidelity import epoch_ladder
from ma2ml_env.rewards.train import TrainEvaluator
from ma2ml_env.rewards.train_fidelity import TrainStates
from ma2ml_env.space import SearchSpace
from ma2ml_env.training import Trainer

TINY = Architecture(resolution=8, stem_width=8, stages=(Stage(3, 1, 8, 1, 1), Stage(3, 2, 16, 1, 2)),
                    head_width=32, dropout=0.2)
BASE = Pipeline(arch=TINY).with_train(optimizer="sgd", lr=0.1, batch_size=32, epochs=8, warmup_epochs=1.0)


@pytest.fixture(scope="module")
def data():
    """The digits subset, with torch on one thread (as the evaluator runs children) for the direct trainers."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_dataset("digits", max_train=300)
    torch.set_num_threads(old)


def rng_hook(x, y, generator):
    """A user hook drawing from Python's and NumPy's global RNGs (saved and restored with the child)."""
    return x * (1.0 + 0.01 * random.random() + 0.01 * float(np.random.rand())), y


def _trainer(pipeline: Pipeline, data, seed: int = 3, model_seed: int = 0) -> Trainer:
    model = build_model(pipeline.arch, data.channels, data.num_classes,
                        generator=torch.Generator().manual_seed(model_seed))
    return Trainer(model, pipeline, data.train_x, data.train_y, num_classes=data.num_classes, mean=data.mean,
                   std=data.std, seed=seed, epoch_scale=0.5)


def _through_disk(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, map_location="cpu", weights_only=True)  # what a state_dir file gives back


@pytest.mark.parametrize("pipeline", [
    BASE,
    BASE.with_train(optimizer="adamw", lr=3e-3, schedule="step", mixup_alpha=0.4, label_smoothing=0.1)
        .with_extras(cutout=2, crop_padding=1).replace(batch_hooks=(rng_hook,)),
], ids=["sgd-cosine-dropout", "adamw-step-mixup-hooks"])
def test_continuing_gives_the_weights_of_training_straight_through(pipeline, data):
    straight = _trainer(pipeline, data)
    stop = straight.steps_at(3) + 1  # mid-pass: the data order of the pass in progress is part of the state
    assert stop % straight.steps_per_epoch != 0 and stop < straight.total
    random.seed(11)
    np.random.seed(11)
    torch.manual_seed(11)
    caller = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    straight.run(straight.total)

    first = _trainer(pipeline, data)
    first.run(stop)
    state = _through_disk(first.state_dict())
    second = _trainer(pipeline, data, model_seed=99)  # other initial weights: all come from the state
    second.load_state_dict(state)
    second.run(second.total)

    assert second.step == straight.step == straight.total
    for (name, a), b in zip(straight.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert straight.stats().train_loss == second.stats().train_loss
    # the continuation trained only its new steps; the schedule is the full one either way
    assert second.stats().images == (straight.total - stop) * straight.bs
    assert straight.stats().images == straight.total * straight.bs
    # the caller's global RNGs are untouched by the child's draws
    assert random.getstate() == caller[0] and np.array_equal(np.random.get_state()[1], caller[1])
    assert torch.equal(torch.get_rng_state(), caller[2])


def test_a_stopped_child_has_the_learning_rate_of_the_full_schedule(data):
    pipe = BASE.with_train(warmup_epochs=0.0)
    t = _trainer(pipe, data)
    t.run(t.steps_at(4))  # half of 8 epochs of cosine: half the peak rate
    assert t.opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 * (1 + np.cos(np.pi * (t.step - 1) / t.total)))
    assert 0.04 < t.opt.param_groups[0]["lr"] < 0.06


def test_a_state_from_another_schedule_is_refused(data):
    long = _trainer(BASE.with_train(epochs=8), data)
    long.run(long.total)
    short = _trainer(BASE.with_train(epochs=1), data)
    with pytest.raises(ValueError, match="outside this schedule"):
        short.load_state_dict(long.state_dict())


# -- the evaluator -------------------------------------------------------------------------------------------
def _bound(**kw) -> tuple[TrainEvaluator, SearchSpace]:
    ev = TrainEvaluator(device="cpu", max_train=300, epoch_scale=0.5, **kw)
    space = SearchSpace(resolve_modules(("hpo",)), base=BASE)
    ev.bind(space)
    return ev, space


def _rows(space: SearchSpace, epochs: int = 8, n: int = 2) -> np.ndarray:
    names = [d.name for d in space.modules[0].decisions]
    rows = np.zeros((n, len(names)), dtype=np.int64)
    choices = {d.name: d.choices for d in space.modules[0].decisions}
    rows[:, names.index("lr")] = choices["lr"].index(0.1)
    rows[:, names.index("optimizer")] = np.arange(n) % 2  # sgd, adamw
    rows[:, names.index("epochs")] = choices["epochs"].index(epochs)
    return rows


def _at(ev, rows, seeds, level, start=None):
    k = len(rows)
    return ev.evaluate(rows, seeds, levels=np.full(k, level),
                       start=None if start is None else np.full(k, start))


def test_default_ladder_and_its_settings():
    ev, _ = _bound()
    assert ev.fidelity == Fidelity((1, 2, 4, 8), "epochs")  # the hpo agent's epochs go up to 8
    assert epoch_ladder(12) == (1, 2, 4, 8, 12) and epoch_ladder(1) == (1,) and epoch_ladder(0.5) == (0.5,)
    assert "fidelity_epochs" not in ev.config()
    mine, _ = _bound(fidelity_epochs=(2, 8))
    assert mine.fidelity.levels == (2, 8) and mine.config()["fidelity_epochs"] == [2, 8]
    for bad in ((4, 2), (), "1,2", (0, 8)):
        with pytest.raises(ValueError, match="fidelity_epochs"):
            TrainEvaluator(device="cpu", fidelity_epochs=bad)
    with pytest.raises(ValueError, match="is a file"):
        TrainEvaluator(device="cpu", state_dir=__file__)


def test_continuing_to_a_level_gives_the_result_of_training_straight_there():
    ev, space = _bound()
    rows, seeds = _rows(space), np.array([5, 6])
    low = _at(ev, rows, seeds, 1)                      # 2 epochs of 8, saved
    straight = _at(ev, rows, seeds, 3)                 # the full training
    went_on = _at(ev, rows, seeds, 3, start=1)         # from the saved state at 2 epochs
    full = ev.evaluate(rows, seeds)                    # no fidelity request: today's full training
    assert went_on.statuses() == ["ok", "ok"]
    assert np.array_equal(went_on.score, straight.score) and np.array_equal(full.score, straight.score)
    assert np.array_equal(went_on.accuracy, straight.accuracy)
    assert not np.array_equal(low.score, straight.score)
    for lo, s, g in zip(low.info, straight.info, went_on.info):
        assert g["continued"] is True
        assert g["steps"] == s["steps"] and lo["steps"] < s["steps"]
        # a continuation pays for its new steps only (seconds are measured time: compared through the work)
        assert g["images"] == s["images"] - lo["images"] > 0
        assert s["curve"]["2"] == lo["curve"]["2"] and list(s["curve"]) == ["1", "2", "4", "8"]
        assert list(g["curve"]) == ["4", "8"] and g["curve"]["8"] == s["curve"]["8"]
    assert len(ev.states) == 0  # the state at level 1 was consumed; the full training saves none


def test_a_continued_state_has_the_weights_of_a_straight_training(tmp_path):
    (a, space), (b, _) = _bound(state_dir=tmp_path / "a"), _bound(state_dir=tmp_path / "b")
    rows, seeds = _rows(space, n=1), np.array([4])
    _at(a, rows, seeds, 2)              # straight to 4 epochs
    _at(b, rows, seeds, 0)              # 1 epoch ...
    _at(b, rows, seeds, 2, start=0)     # ... then on to 4
    (fa,), (fb,) = list((tmp_path / "a").glob("*.pt")), list((tmp_path / "b").glob("*.pt"))
    assert fa.name == fb.name  # same key: same settings, joint action, seed and level
    sa, sb = (torch.load(f, weights_only=True) for f in (fa, fb))
    assert sa["step"] == sb["step"] > 0
    for name, t in sa["model"].items():
        assert torch.equal(t, sb["model"][name]), name


def test_states_in_a_folder_continue_in_another_process_and_a_missing_one_trains_from_scratch(tmp_path):
    ev, space = _bound(state_dir=tmp_path)
    rows, seeds = _rows(space, n=1), np.array([8])
    low = _at(ev, rows, seeds, 1)
    assert len(list(tmp_path.glob("*.pt"))) == 1
    other = pickle.loads(pickle.dumps(ev))  # a worker's copy: only the folder is shared
    went_on = _at(other, rows, seeds, 3, start=1)
    assert went_on.info[0]["continued"] is True and not list(tmp_path.glob("*.pt"))
    again = _at(other, rows, seeds, 3, start=1)  # the state is gone: from scratch, at the full cost
    assert again.info[0]["continued"] is False
    assert again.score[0] == went_on.score[0]
    assert again.info[0]["images"] == went_on.info[0]["images"] + low.info[0]["images"]
    # memory states do not travel with a pickled copy (each worker process has its own)
    mem, _ = _bound()
    _at(mem, rows, seeds, 1)
    assert len(mem.states) == 1 and len(pickle.loads(pickle.dumps(mem)).states) == 0
    assert len(TrainStates(tmp_path)) == 0


def test_a_level_past_the_childs_own_schedule_is_its_full_training():
    ev, space = _bound()
    rows, seeds = _rows(space, epochs=2, n=1), np.array([1])
    at4 = _at(ev, rows, seeds, 2)   # 4 epochs asked of a 2-epoch child
    full = ev.evaluate(rows, seeds)
    assert at4.score[0] == full.score[0] and at4.info[0]["steps"] == full.info[0]["steps"]
    assert at4.info[0]["curve"]["2"] == at4.info[0]["curve"]["4"]


def test_bad_levels_are_value_errors():
    ev, space = _bound()
    rows, seeds = _rows(space), np.array([0, 1])
    with pytest.raises(ValueError, match=r"levels must be indices 0\.\.3"):
        _at(ev, rows, seeds, 4)
    with pytest.raises(ValueError, match="start must be -1"):
        _at(ev, rows, seeds, 1, start=1)


def test_check_evaluator_passes_the_training_evaluator_with_levels(tmp_path):
    tiny = Architecture(resolution=8, stem_width=8, stages=(Stage(3, 1, 8, 1, 1),), head_width=16)
    for kw in ({}, {"state_dir": tmp_path, "fidelity_epochs": (1, 8)}):
        ev = TrainEvaluator(device="cpu", max_train=64, epoch_scale=0.25, **kw)
        check_evaluator(ev, modules=("hpo",), base=Pipeline(arch=tiny), num_pipelines=2)


def test_memory_states_are_bounded_oldest_dropped_first():
    states = TrainStates(max_memory=3 * 400)
    for i in range(5):
        states.put(f"k{i}", {"model": {"w": torch.zeros(100)}, "step": i})  # 400 bytes each
    assert len(states) == 3 and states.get("k0") is None and states.get("k4")["step"] == 4
    states.put("k2", {"model": {"w": torch.zeros(100)}, "step": 9})  # replaced, not counted twice
    assert len(states) == 3 and states.get("k2")["step"] == 9
    states.discard("k3")
    assert len(states) == 2 and states.get("k3") is None
