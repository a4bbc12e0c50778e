"""MAPPO and IPPO (Yu et al. 2022; de Witt et al. 2020) from TorchRL's multi-agent components, on the
decision-per-step view: one pipeline is one episode of ``T`` steps in which every agent picks its next
decision (``agents.marl.common``).

* Policy: one ``MultiAgentMLP`` shared by the agents (``share_params=True``; the agent id is part of each
  observation), its logits masked to the legal choices of the step (``MaskedCategorical``) in a
  ``ProbabilisticActor``.
* Critic: MAPPO's is centralised (``MultiAgentMLP(centralized=True)``: the value of every agent reads the
  observations of all agents); IPPO's is decentralised (each agent's value reads its own). In this view
  every observation already holds the whole partial pipeline (the global state plus the agent id), so the
  two differ in the critic's input layout, not in the information it has.
* Update, after each round of ``n`` pipelines: the shared score, standardised over every score observed so
  far, is the reward of each episode's last step; TorchRL's ``GAE`` (``gamma``, ``lmbda``) gives the
  advantages and ``ClipPPOLoss`` (clipped ratio, entropy bonus, value loss) takes ``epochs`` Adam steps on
  the round's episodes (on-policy; the behaviour log-probabilities are recomputed in ``observe``, the
  networks being unchanged since ``propose``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.common import in_range, positive_int
from agents.marl.common import AGENTS, DecisionStepConfig, DecisionStepLearner

__all__ = ["IPPO", "MAPPO", "PPOConfig"]


@dataclass(frozen=True)
class PPOConfig(DecisionStepConfig):
    """Hyper-parameters of :class:`MAPPO` and :class:`IPPO`."""

    epochs: int = 4
    """``ClipPPOLoss`` steps per round (on the whole round's episodes)."""

    clip_epsilon: float = 0.2
    """Clip range of the probability ratio."""

    entropy_coeff: float = 0.01
    """Weight of the entropy bonus."""

    critic_coeff: float = 0.5
    """Weight of the value loss."""

    gamma: float = 1.0
    """Discount (the score is the one reward of an episode of a few steps)."""

    lmbda: float = 0.95
    """GAE's lambda."""

    def check(self) -> None:
        super().check()
        own = type(self).__name__
        positive_int(own, "epochs", self.epochs)
        in_range(own, "clip_epsilon", self.clip_epsilon, 0.0, 1.0, lo_open=True, hi_open=True)
        in_range(own, "entropy_coeff", self.entropy_coeff, 0.0, float("inf"), hi_open=True)
        in_range(own, "critic_coeff", self.critic_coeff, 0.0, float("inf"), hi_open=True)
        in_range(own, "gamma", self.gamma, 0.0, 1.0)
        in_range(own, "lmbda", self.lmbda, 0.0, 1.0)


class MAPPO(DecisionStepLearner):
    """MAPPO: shared policy, centralised critic, TorchRL's ``ClipPPOLoss`` and ``GAE`` (module docstring).

    Args:
        config: a :class:`PPOConfig`, or its fields as keyword arguments.
    """

    name = "mappo"
    config_class = PPOConfig
    centralised_critic = True
    _STATEFUL = ("loss", "optimiser")

    def build(self) -> None:
        import torch
        from tensordict.nn import InteractionType, TensorDictModule
        from torchrl.modules import MaskedCategorical, MultiAgentMLP, ProbabilisticActor
        from torchrl.objectives import ClipPPOLoss, ValueEstimators

        cfg, lay = self.config, self.layout
        net = dict(n_agents=lay.n_agents, share_params=True, depth=cfg.depth, num_cells=cfg.hidden,
                   activation_class=torch.nn.Tanh)
        policy = TensorDictModule(MultiAgentMLP(lay.observation_size, lay.n_actions, centralized=False, **net),
                                  in_keys=[(AGENTS, "observation")], out_keys=[(AGENTS, "logits")])
        self.actor = ProbabilisticActor(
            policy, in_keys={"logits": (AGENTS, "logits"), "mask": (AGENTS, "action_mask")},
            out_keys=[(AGENTS, "action")], distribution_class=MaskedCategorical, return_log_prob=True,
            log_prob_key=(AGENTS, "action_log_prob"), default_interaction_type=InteractionType.RANDOM)
        critic = TensorDictModule(
            MultiAgentMLP(lay.observation_size, 1, centralized=self.centralised_critic, **net),
            in_keys=[(AGENTS, "observation")], out_keys=[(AGENTS, "state_value")])
        self.loss = ClipPPOLoss(self.actor, critic, clip_epsilon=cfg.clip_epsilon, entropy_coeff=cfg.entropy_coeff,
                                critic_coeff=cfg.critic_coeff, normalize_advantage=False)
        self.loss.set_keys(reward=(AGENTS, "reward"), action=(AGENTS, "action"), value=(AGENTS, "state_value"),
                           sample_log_prob=(AGENTS, "action_log_prob"), done=(AGENTS, "done"),
                           terminated=(AGENTS, "terminated"))
        self.loss.make_value_estimator(ValueEstimators.GAE, gamma=cfg.gamma, lmbda=cfg.lmbda)
        self.optimiser = torch.optim.Adam(self.loss.parameters(), lr=cfg.lr)

    def act(self, td: Any) -> Any:
        import torch

        with torch.no_grad():
            return self.actor(td)[AGENTS, "action"]

    def learn(self, rows: np.ndarray, scores: np.ndarray) -> None:
        import torch

        episodes, loss = self.episodes(rows, scores), self.loss
        with torch.no_grad():
            # the behaviour log-probabilities of the actions taken (networks unchanged since propose)
            episodes[AGENTS, "action_log_prob"] = self.actor.get_dist(episodes).log_prob(episodes[AGENTS, "action"])
            loss.value_estimator(episodes, params=loss.critic_network_params,
                                 target_params=loss.target_critic_network_params)
        params = list(loss.parameters())
        for _ in range(self.config.epochs):
            out = loss(episodes)
            total = out["loss_objective"] + out["loss_critic"] + out["loss_entropy"]
            self.clip_step(total, params, self.optimiser)


class IPPO(MAPPO):
    """IPPO: as :class:`MAPPO` with a decentralised critic (each agent's value reads its own observation)."""

    name = "ippo"
    centralised_critic = False
