"""AutoML modules: the registry, the conformance check, user modules end to end."""

from typing import ClassVar

import numpy as np
import pytest

import ma2ml_env
from ma2ml_env import AutoMLModule, Decision, ModuleCheckError, check_module, register_module


@pytest.mark.parametrize("name", ma2ml_env.registered_modules())
def test_every_registered_module_conforms(name):
    check_module(ma2ml_env.make_module(name))


def test_default_modules_registered():
    assert {"aug", "nas", "hpo"} <= set(ma2ml_env.registered_modules())


class Regularise(AutoMLModule):
    """A user module: dropout and mixup, as the README example."""

    name = "reg"
    decisions = (
        Decision("dropout", (0.0, 0.1, 0.3), "dropout before the classifier"),
        Decision("mixup", (0.0, 0.2), "mixup alpha"),
    )
    surrogate_effects: ClassVar = {"dropout": (0.0, 0.08, -0.05), "mixup": (0.0, 0.1)}

    def apply(self, choice, pipeline):
        return pipeline.with_arch(dropout=choice["dropout"]).with_train(mixup_alpha=choice["mixup"])


def test_user_module_becomes_an_agent():
    register_module(Regularise)
    try:
        assert "reg" in ma2ml_env.registered_modules()
        check_module(Regularise())
        e = ma2ml_env.parallel_env(reward="surrogate", modules=("aug", "nas", "hpo", "reg"))
        assert e.possible_agents == ["aug", "nas", "hpo", "reg"]
        assert e.action_space("reg").nvec.tolist() == [3, 2]
        e.reset(seed=0)
        act = {a: e.action_space(a).sample() for a in e.agents}
        act["reg"] = np.array([2, 1])
        e.step(act)
        pipe = e.decode(act)
        assert pipe.arch.dropout == 0.3 and pipe.train.mixup_alpha == 0.2
        assert pipe.choices["reg"] == {"dropout": 0.3, "mixup": 0.2}
        # instances work without registering, too
        e2 = ma2ml_env.parallel_env(reward="surrogate", modules=[Regularise(), "hpo"])
        assert e2.possible_agents == ["reg", "hpo"]
    finally:
        ma2ml_env.unregister_module("reg")


def test_register_errors():
    with pytest.raises(ValueError, match="already registered"):
        register_module(Regularise, name="aug")
    with pytest.raises(ValueError, match="lowercase identifier"):
        register_module(Regularise, name="Bad-Name")


class _Mutating(AutoMLModule):
    name = "mut"
    decisions = (Decision("x", (1, 2)),)

    def apply(self, choice, pipeline):
        pipeline.extras["x"] = choice["x"]  # mutates its input: forbidden
        return pipeline


class _Random(AutoMLModule):
    name = "rnd"
    decisions = (Decision("x", (1, 2)),)

    def apply(self, choice, pipeline):
        return pipeline.with_extras(x=float(np.random.random()))


class _NotPipeline(AutoMLModule):
    name = "bad"
    decisions = (Decision("x", (1, 2)),)

    def apply(self, choice, pipeline):
        return {"x": 1}


@pytest.mark.parametrize(
    "module, match",
    [
        (_Mutating(), "modified its input"),
        (_Random(), "not deterministic"),
        (_NotPipeline(), "must return a Pipeline"),
        ("aug", "not an AutoMLModule"),
    ],
)
def test_check_module_catches_broken_modules(module, match):
    with pytest.raises(ModuleCheckError, match=match):
        check_module(module)


def test_decision_validation():
    with pytest.raises(ValueError, match="duplicate choices"):
        Decision("x", (1, 1))
    with pytest.raises(ValueError, match="at least one choice"):
        Decision("x", ())
    with pytest.raises(ValueError, match="identifier"):
        Decision("not valid", (1,))
    with pytest.raises(ValueError, match="allowed: \\[1, 2\\]"):
        Decision("x", (1, 2)).index(3)


def test_builtin_module_argument_validation():
    with pytest.raises(ValueError, match="unknown augmentation ops \\['Warp'\\]"):
        ma2ml_env.AugmentModule(ops=("Rotate", "Warp"))
    with pytest.raises(ValueError, match="odd"):
        ma2ml_env.ArchitectureModule(kernels=(3, 4))
    with pytest.raises(ValueError, match="unknown optimizers"):
        ma2ml_env.HyperParameterModule(optimizer=("lion",))


def test_pipeline_round_trip_and_readable():
    e = ma2ml_env.parallel_env(reward="surrogate")
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = e.space.codec.decode(e.space.codec.sample(rng))
        p = e.decode(a)
        assert all(np.array_equal(e.space.encode(p)[k], a[k]) for k in a)
        assert "sub-policy 4" in p.describe()
        assert len(p.augment) == 5 and all(len(s) == 2 for s in p.augment)
        assert p.key() == e.decode(a).key()
