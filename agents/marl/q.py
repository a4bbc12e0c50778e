"""IQL, VDN and QMIX from TorchRL's multi-agent components, on the decision-per-step view: one pipeline is
one episode of ``T`` steps in which every agent picks its next decision (``agents.marl.common``).

* Utilities: one ``MultiAgentMLP`` shared by the agents (``share_params=True``; the agent id is part of each
  observation) gives ``Q_i(o_i, .)`` over the padded actions; ``QValueModule`` takes the greedy legal action
  (the step's action mask) and ``EGreedyModule`` explores (a uniform legal action with probability
  ``eps``, annealed linearly from ``eps_init`` to ``eps_end`` over ``explore_evaluations`` evaluations).
* Learning: every evaluated pipeline goes to a TorchRL ``ReplayBuffer`` as its row and raw score; a
  mini-batch draws ``minibatch_size`` pipelines and one uniform step of each, and rebuilds those
  transitions from the rows (``DecisionStepLearner.transitions``; the reward is the score standardised over
  every score observed so far). After each round, ``updates`` such steps, each followed by a soft update of
  the target network (``tau``).

  - IQL (independent Q-learning, Tan 1993): TorchRL's ``DQNLoss`` per agent, on the shared reward.
  - VDN (Sunehag et al. 2018): ``QMixerLoss`` with ``VDNMixer``, ``Q_tot = sum_i Q_i``.
  - QMIX (Rashid et al. 2018): ``QMixerLoss`` with ``QMixer``, a monotonic mixing of the ``Q_i``
    conditioned on the global state (the partial pipeline).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.common import in_range, positive_int
from agents.marl.common import AGENTS, DecisionStepConfig, DecisionStepLearner, quiet

__all__ = ["IQL", "QMIX", "VDN", "QConfig"]


@dataclass(frozen=True)
class QConfig(DecisionStepConfig):
    """Hyper-parameters of :class:`IQL`, :class:`VDN` and :class:`QMIX`."""

    updates: int = 4
    """Gradient steps per round (each on a fresh mini-batch from the replay buffer)."""

    minibatch_size: int = 128
    """Transitions per mini-batch (pipelines drawn uniformly, one uniform step of each)."""

    buffer_size: int = 10_000
    """Capacity of the replay buffer, in pipelines (each kept as its row and score)."""

    gamma: float = 1.0
    """Discount (the score is the one reward of an episode of a few steps)."""

    tau: float = 0.1
    """Soft update rate of the target network after each step."""

    eps_init: float = 1.0
    """Epsilon of the first evaluations (probability of a uniform legal action)."""

    eps_end: float = 0.05
    """Epsilon after ``explore_evaluations`` evaluations."""

    explore_evaluations: int = 100
    """Evaluations over which epsilon is annealed linearly."""

    mixing_embed_dim: int = 32
    """QMIX only: width of the mixing network."""

    def check(self) -> None:
        super().check()
        own = type(self).__name__
        for name in ("updates", "minibatch_size", "buffer_size", "explore_evaluations", "mixing_embed_dim"):
            positive_int(own, name, getattr(self, name))
        in_range(own, "gamma", self.gamma, 0.0, 1.0)
        in_range(own, "tau", self.tau, 0.0, 1.0, lo_open=True)
        in_range(own, "eps_init", self.eps_init, 0.0, 1.0)
        in_range(own, "eps_end", self.eps_end, 0.0, 1.0)


class IQL(DecisionStepLearner):
    """Independent Q-learning: each agent's ``Q_i`` regressed on the shared reward with TorchRL's ``DQNLoss``
    (module docstring).

    Args:
        config: a :class:`QConfig`, or its fields as keyword arguments.
    """

    name = "iql"
    config_class = QConfig
    _STATEFUL = ("loss", "optimiser", "explore", "buffer")

    def build(self) -> None:
        import torch
        from tensordict.nn import TensorDictModule, TensorDictSequential
        from torchrl.data import Categorical, LazyTensorStorage, ReplayBuffer
        from torchrl.modules import EGreedyModule, MultiAgentMLP, QValueModule
        from torchrl.objectives import SoftUpdate, ValueEstimators

        cfg, lay = self.config, self.layout
        net = MultiAgentMLP(lay.observation_size, lay.n_actions, n_agents=lay.n_agents, centralized=False,
                            share_params=True, depth=cfg.depth, num_cells=cfg.hidden,
                            activation_class=torch.nn.Tanh)
        self.qvalue = TensorDictSequential(
            TensorDictModule(net, in_keys=[(AGENTS, "observation")], out_keys=[(AGENTS, "action_value")]),
            QValueModule(action_space="categorical", action_value_key=(AGENTS, "action_value"),
                         action_mask_key=(AGENTS, "action_mask"),
                         out_keys=[(AGENTS, "action"), (AGENTS, "action_value"), (AGENTS, "chosen_action_value")]))
        self.explore = EGreedyModule(Categorical(lay.n_actions, shape=(lay.n_agents,)), eps_init=cfg.eps_init,
                                     eps_end=cfg.eps_end, annealing_num_steps=cfg.explore_evaluations,
                                     action_key=(AGENTS, "action"), action_mask_key=(AGENTS, "action_mask"))
        self.loss = self.make_loss()
        self.loss.make_value_estimator(ValueEstimators.TD0, gamma=cfg.gamma)
        self.target_update = SoftUpdate(self.loss, tau=cfg.tau)
        self.optimiser = torch.optim.Adam(self.loss.parameters(), lr=cfg.lr)
        self.buffer = ReplayBuffer(storage=LazyTensorStorage(cfg.buffer_size), batch_size=cfg.minibatch_size)

    def make_loss(self) -> Any:
        from torchrl.objectives import DQNLoss

        loss = DQNLoss(self.qvalue, delay_value=True, action_space="categorical")
        loss.set_keys(action_value=(AGENTS, "action_value"), value=(AGENTS, "chosen_action_value"),
                      action=(AGENTS, "action"), reward=(AGENTS, "reward"), done=(AGENTS, "done"),
                      terminated=(AGENTS, "terminated"))
        return loss

    def act(self, td: Any) -> Any:
        import torch

        with torch.no_grad():
            return self.explore(self.qvalue(td))[AGENTS, "action"]

    def learn(self, rows: np.ndarray, scores: np.ndarray) -> None:
        import torch
        from tensordict import TensorDict

        kept = TensorDict({"row": torch.tensor(rows), "score": torch.tensor(scores)}, batch_size=[len(scores)])
        with quiet("torchrl"):  # the storage's first write logs its shape at INFO level
            self.buffer.extend(kept)
        self.explore.step(len(scores))  # epsilon anneals per evaluation
        params = list(self.loss.parameters())
        for _ in range(self.config.updates):
            drawn = self.buffer.sample()
            steps = torch.randint(self.layout.horizon, (len(drawn), 1)).numpy()
            batch = self.transitions(drawn["row"].numpy(), drawn["score"].numpy(), steps).reshape(-1)
            self.clip_step(self.loss(batch)["loss"], params, self.optimiser)
            self.target_update.step()


class VDN(IQL):
    """Value decomposition, ``Q_tot = sum_i Q_i`` (TorchRL's ``VDNMixer`` in ``QMixerLoss``; module
    docstring)."""

    name = "vdn"

    def mixer(self) -> Any:
        from tensordict.nn import TensorDictModule
        from torchrl.modules import VDNMixer

        return TensorDictModule(VDNMixer(self.layout.n_agents, device="cpu"),
                                in_keys=[(AGENTS, "chosen_action_value")], out_keys=["chosen_action_value"])

    def make_loss(self) -> Any:
        from torchrl.objectives.multiagent import QMixerLoss

        loss = QMixerLoss(self.qvalue, self.mixer(), delay_value=True, action_space="categorical")
        loss.set_keys(global_value="chosen_action_value", local_value=(AGENTS, "chosen_action_value"),
                      action_value=(AGENTS, "action_value"), action=(AGENTS, "action"), reward="reward",
                      done="done", terminated="terminated")
        return loss


class QMIX(VDN):
    """QMIX: a monotonic mixing network of the ``Q_i`` conditioned on the global state (TorchRL's ``QMixer``
    in ``QMixerLoss``; module docstring)."""

    name = "qmix"

    def mixer(self) -> Any:
        from tensordict.nn import TensorDictModule
        from torchrl.modules import QMixer

        lay = self.layout
        return TensorDictModule(
            QMixer(state_shape=(lay.state_size,), mixing_embed_dim=self.config.mixing_embed_dim,
                   n_agents=lay.n_agents, device="cpu"),
            in_keys=[(AGENTS, "chosen_action_value"), "state"], out_keys=["chosen_action_value"])
