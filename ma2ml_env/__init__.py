"""ma2ml_env: AutoML pipelines as a cooperative multi-agent PettingZoo environment.

    import ma2ml_env
    env = ma2ml_env.parallel_env(reward="surrogate")      # or the default: real child training
    obs, infos = env.reset(seed=0)
    obs, rewards, terms, truncs, infos = env.step({a: env.action_space(a).sample() for a in env.agents})

Nothing heavy is imported here: torch and the training code load only when ``reward="train"`` is used.
"""

import gymnasium as _gymnasium
import pettingzoo as _pettingzoo

from ma2ml_env.check import EvaluatorCheckError, check_evaluator
from ma2ml_env.codec import JointActionCodec
from ma2ml_env.env import ENV_ID, INFO_KEYS, INFO_MISSING, AutoMLPipelineEnv, env, parallel_env
from ma2ml_env.modules import (
    AUG_OPS,
    DEFAULT_MODULES,
    ArchitectureModule,
    AugmentModule,
    AutoMLModule,
    Decision,
    HyperParameterModule,
    check_module,
    make_module,
    register_module,
    registered_modules,
    unregister_module,
)
from ma2ml_env.modules.check import ModuleCheckError
from ma2ml_env.pipeline import Architecture, AugOp, Pipeline, Stage, TrainConfig
from ma2ml_env.rewards import (
    STATUSES,
    BatchResult,
    CostBudget,
    EvalResult,
    Evaluator,
    PipelineEvaluator,
    make_evaluator,
    register_evaluator,
    registered_evaluators,
)
from ma2ml_env.rewards.base import STATUS_CODES, SUCCESS_STATUSES
from ma2ml_env.rewards.fidelity import Fidelity
from ma2ml_env.rewards.learning_curves import LearningCurveEvaluator, learning_curve_env, learning_curve_tasks
from ma2ml_env.rewards.tabular import BENCHMARKS, benchmark_env, load_table
from ma2ml_env.space import SearchSpace
from ma2ml_env.stepwise import DECISIONS_ENV_ID, DecisionStepEnv
from ma2ml_env.views import JOINT_ENV_ID, JointActionEnv

__version__ = "0.1.0"

__all__ = [
    "AUG_OPS",
    "BENCHMARKS",
    "DECISIONS_ENV_ID",
    "DEFAULT_MODULES",
    "ENV_ID",
    "INFO_KEYS",
    "INFO_MISSING",
    "JOINT_ENV_ID",
    "STATUSES",
    "STATUS_CODES",
    "SUCCESS_STATUSES",
    "Architecture",
    "ArchitectureModule",
    "AugOp",
    "AugmentModule",
    "AutoMLModule",
    "AutoMLPipelineEnv",
    "BatchResult",
    "CostBudget",
    "Decision",
    "DecisionStepEnv",
    "EvalResult",
    "Evaluator",
    "EvaluatorCheckError",
    "Fidelity",
    "HyperParameterModule",
    "JointActionCodec",
    "JointActionEnv",
    "LearningCurveEvaluator",
    "ModuleCheckError",
    "Pipeline",
    "PipelineEvaluator",
    "SearchSpace",
    "Stage",
    "TrainConfig",
    "benchmark_env",
    "check_evaluator",
    "check_module",
    "env",
    "learning_curve_env",
    "learning_curve_tasks",
    "load_table",
    "make_evaluator",
    "make_module",
    "parallel_env",
    "register_evaluator",
    "register_module",
    "registered_evaluators",
    "registered_modules",
    "unregister_module",
]

if ENV_ID not in _pettingzoo.parallel_registry:
    _pettingzoo.register("parallel", ENV_ID, entry_point="ma2ml_env.env:parallel_env")
if ENV_ID not in _pettingzoo.aec_registry:
    _pettingzoo.register("aec", ENV_ID, entry_point="ma2ml_env.env:env")
if DECISIONS_ENV_ID not in _pettingzoo.parallel_registry:
    _pettingzoo.register("parallel", DECISIONS_ENV_ID, entry_point="ma2ml_env.stepwise:decision_parallel_env")
if DECISIONS_ENV_ID not in _pettingzoo.aec_registry:
    _pettingzoo.register("aec", DECISIONS_ENV_ID, entry_point="ma2ml_env.stepwise:decision_aec_env")
if JOINT_ENV_ID not in _gymnasium.registry:
    _gymnasium.register(JOINT_ENV_ID, entry_point="ma2ml_env.views:JointActionEnv")
# the tabular tasks: ma2ml/NB201-cifar10-v0, ma2ml/FCNet-..., ma2ml/HPOBench-...
for _spec in BENCHMARKS.values():
    if _spec.env_id not in _pettingzoo.parallel_registry:
        _pettingzoo.register("parallel", _spec.env_id, entry_point="ma2ml_env.rewards.tabular:benchmark_env",
                             kwargs={"name": _spec.name})
    if _spec.env_id not in _pettingzoo.aec_registry:
        _pettingzoo.register("aec", _spec.env_id, entry_point="ma2ml_env.rewards.tabular:benchmark_aec_env",
                             kwargs={"name": _spec.name})
