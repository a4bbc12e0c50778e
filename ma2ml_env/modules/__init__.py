"""AutoML modules (agents): the built-in AUG, NAS and HPO modules and the registry users join."""

from ma2ml_env.modules.aug import AUG_OPS, AugmentModule
from ma2ml_env.modules.base import (
    AutoMLModule,
    Decision,
    make_module,
    register_module,
    registered_modules,
    resolve_modules,
    unregister_module,
)
from ma2ml_env.modules.check import check_module
from ma2ml_env.modules.hpo import HyperParameterModule
from ma2ml_env.modules.nas import ArchitectureModule

#: The paper's three modules, in the order they are applied.
DEFAULT_MODULES = ("aug", "nas", "hpo")

__all__ = [
    "AUG_OPS",
    "DEFAULT_MODULES",
    "ArchitectureModule",
    "AugmentModule",
    "AutoMLModule",
    "Decision",
    "HyperParameterModule",
    "check_module",
    "make_module",
    "register_module",
    "registered_modules",
    "resolve_modules",
    "unregister_module",
]
