r"""The baseline search algorithms, re-exported from their own modules (kept so that
``from agents.baselines import RandomSearch`` and the like still work).

=================  ====================================  ==================================================
name               class                                 module
=================  ====================================  ==================================================
``random``         :class:`RandomSearch`                 :mod:`agents.random_search`
``evolution``      :class:`RegularizedEvolution`         :mod:`agents.evolution`
``tpe``            :class:`OptunaTPE`                    :mod:`agents.tpe` (on :mod:`agents.optuna_ask_tell`)
``gp``             :class:`~agents.gp.GPBO`              :mod:`agents.gp` (on :mod:`agents.optuna_ask_tell`)
``local-search``   :class:`~agents.local_search.LocalSearch`  :mod:`agents.local_search`
``ppo``, ``a2c``   :class:`SB3Agent`                     :mod:`agents.sb3`
``independent``    :class:`IndependentLearners`          :mod:`agents.independent`
``separate``       :class:`ModuleByModule`               :mod:`agents.separate`
=================  ====================================  ==================================================

What the algorithms share (config handling, the common set-up, optional imports, RNG state) is in
:mod:`agents.common`; the joint-action codec is :class:`ma2ml_env.codec.JointActionCodec`.
"""

from agents.common import require
from agents.evolution import EvolutionConfig, RegularizedEvolution
from agents.independent import IndependentConfig, IndependentLearners
from agents.random_search import RandomSearch
from agents.sb3 import SB3Agent, SB3Config
from agents.separate import ModuleByModule, ModuleByModuleConfig
from agents.tpe import OptunaTPE, TPEConfig

__all__ = [
    "EvolutionConfig",
    "IndependentConfig",
    "IndependentLearners",
    "ModuleByModule",
    "ModuleByModuleConfig",
    "OptunaTPE",
    "RandomSearch",
    "RegularizedEvolution",
    "SB3Agent",
    "SB3Config",
    "TPEConfig",
    "require",
]
