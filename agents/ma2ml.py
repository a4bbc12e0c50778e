r"""MA2ML and MA2ML-Lite, the paper's methods (Wang et al., "Multi-Agent Automated Machine Learning", CVPR 2023,
arXiv 2210.09084). Our extension of MA2ML (the CLI's default) is :mod:`agents.ma2ml_plus`.

Each AutoML module (augmentation, architecture, hyper-parameters, ...) is an agent ``i`` with a policy
``pi_i`` over its decisions; a joint action ``a = (a_1, ..., a_n)`` is one pipeline and its shared reward
``r(a)`` is the pipeline's validation score. One pipeline is one episode and the state ``s`` is constant,
so it is dropped from the symbols below.

Algorithm (MA2ML), one round per batch of ``n`` evaluations
-----------------------------------------------------------
    initialise policies pi_i (uniform), target policies pi~_i = pi_i, critic Q, replay buffer D = {}
    repeat
        sample a^1..a^n ~ pi = prod_i pi_i (mixed with `exploration` uniform mass); evaluate r(a^k)
        D <- D + {(a^k, r(a^k))}
        for `updates_per_round` steps:  critic regression on a mini-batch of D
            L_Q = mean (Q(a) - r~)^2,   r~ = (r - mean_D r) / std_D r
        for `updates_per_round` steps:  all agents at once, on a mini-batch B of D (off-policy)
            A_i(a) = Q(a) - sum_{a_i'} pi_i(a_i') Q(a_i', a_-i)          (credit assignment)
            rho_i  = pi_i(a_i) / pi~_i(a_i)
            L_pi   = - sum_i mean_B min(rho_i A_i, clip(rho_i, 1 - eps, 1 + eps) A_i)   (trust region)
            one Adam step on L_pi;   theta~ <- (1 - tau) theta~ + tau theta           (target policies)

* Policies: ``pi_i(a_i) = prod_j softmax(theta_ij)[a_ij]``, one categorical per decision ``j`` of agent
  ``i`` (plain logits). Factorising makes the counterfactual sum exact and cheap: per decision it has
  ``n_ij`` terms instead of ``prod_j n_ij`` for the whole agent.
* Critic ``Q(a)``: an MLP on the one-hot joint action (:class:`agents.critics.MLPCritic`).
* Credit assignment (the paper's marginal contribution; COMA's counterfactual baseline, Foerster et al.
  2018), always exact, never sampled: an agent with at most ``enumerate_limit`` joint choices sums over
  all of them; a larger one is credited per decision, ``A_ij(a) = Q(a) - sum_{a_ij'} pi_ij(a_ij')
  Q(a_ij', a_-ij)`` with gradient ``sum_j A_ij grad log pi_ij``, unbiased because ``pi_i`` factorises
  (the baseline of decision ``j`` does not depend on ``a_ij``). Our reading: buffer samples are not
  importance-corrected for the behaviour policy that drew them (the critic carries the off-policy
  information); the trust region bounds each round's move.
* The paper's ablations are config fields: ``credit_assignment=False`` gives every agent the same
  advantage ``Q(a) - E_{a~pi} Q(a)``; ``off_policy=False`` takes one step on the latest round only.
* Not in the paper, kept because the recorded benchmark cells (``ma2ml-paper``) ran with it: a share
  ``elite_fraction`` of each policy mini-batch comes from the best ``elite_quantile`` of ``D`` (0 = the
  paper's uniform replay); advantages are divided by their root-mean-square (``normalize_advantage``).

MA2ML-Lite (:class:`MA2MLLite`): REINFORCE on the shared reward, ``L_i = -mean (r(a) - b) log pi_i(a_i)``
with a moving-average baseline ``b``, on the latest round only; no critic is fitted.

Example::

    from agents.base import run
    from agents.ma2ml import MA2ML, MA2MLLite
    result = run(MA2ML(), env, budget=200, seed=0, batch_size=8)
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium
import numpy as np
import torch
from torch import nn

from agents.common import AlgorithmConfig, ConfiguredSearch, choice, in_range, positive_int
from agents.critics import MLPCritic, ReplayBuffer, log_probs
from agents.threads import torch_threads

__all__ = ["MA2ML", "MA2MLConfig", "MA2MLLite"]


# -- config -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MA2MLConfig(AlgorithmConfig):
    """Hyper-parameters of the paper's MA2ML (defaults) and of MA2ML-Lite (:meth:`lite`)."""

    credit_assignment: bool = True
    """Counterfactual advantage ``A_i = Q(a) - E_{a_i'~pi_i} Q(a_i', a_-i)`` per agent (the paper's marginal
    contribution). ``False`` (the paper's ablation): one shared advantage, see ``shared_advantage``."""

    shared_advantage: Literal["critic", "reward"] = "critic"
    """Advantage when ``credit_assignment=False``: ``"critic"`` = ``Q(a) - E_{a~pi} Q(a)``; ``"reward"`` =
    ``r(a) - b`` with a moving-average baseline ``b`` and no critic (MA2ML-Lite)."""

    enumerate_limit: int = 64
    """Agents with at most this many joint choices ``prod_j n_ij`` get their counterfactual sum by
    enumeration, the others per decision (module docstring); >= 1."""

    counterfactual_samples: int = 16
    """Draws ``a ~ pi`` estimating ``E_{a~pi} Q(a)`` for ``shared_advantage="critic"``; >= 1."""

    off_policy: bool = True
    """Reuse the whole buffer for ``updates_per_round`` policy steps per round. ``False`` (the paper's
    ablation): one step on the latest round's samples only."""

    trust_region: Literal["clip", "none"] = "clip"
    """``"clip"``: the clipped ratio ``pi_i / pi~_i`` around the target policy; ``"none"``: plain policy
    gradient (MA2ML-Lite)."""

    clip_epsilon: float = 0.2
    """Clip range ``eps`` of the ratio ``pi_i(a_i) / pi~_i(a_i)``; in (0, 1)."""

    target_tau: float = 0.1
    """Polyak rate of the target policies, ``theta~ <- (1 - tau) theta~ + tau theta``; in (0, 1]."""

    updates_per_round: int = 16
    """Critic regression steps per round, and policy steps per round when ``off_policy``; >= 1."""

    minibatch_size: int = 64
    """Rows per mini-batch (drawn with replacement from the buffer); >= 1."""

    policy_lr: float = 0.05
    """Adam learning rate of the policy logits; > 0."""

    critic_hidden: int = 64
    """Width of the critic's hidden layers; >= 1."""

    critic_layers: int = 2
    """Hidden layers of the critic MLP; >= 1."""

    critic_lr: float | None = None
    """AdamW learning rate of the critic; > 0 (``None``: 1e-2)."""

    critic_weight_decay: float = 1e-4
    """AdamW weight decay of the critic; >= 0."""

    elite_fraction: float = 0.75
    """Share of each off-policy mini-batch drawn from the best ``elite_quantile`` of the buffer (not in the
    paper; 0 = its uniform replay). Counterfactuals at the best pipelines so far ask which choice of agent
    ``i`` is best given the others' best choices: agents coordinate on optima amid miscoordination; in [0, 1]."""

    elite_quantile: float = 0.03
    """Top share of the buffer (by reward) that elite rows come from; in (0, 1]."""

    exploration: float = 0.05
    """Per-decision probability mass mixed uniformly into proposals; in [0, 1]."""

    normalize_advantage: bool = True
    """Divide advantages by their root-mean-square over the mini-batch (scale-free rewards)."""

    baseline_decay: float = 0.9
    """Decay of the moving-average reward baseline ``b`` (``shared_advantage="reward"``); in [0, 1)."""

    torch_threads: int | None = 1
    """Torch intra-op threads while the algorithm computes (restored afterwards; ``None``: torch's setting).
    One thread gives the same search at any thread count and is faster for these small tensors."""

    def check(self) -> None:
        own = type(self).__name__
        choice(own, "shared_advantage", self.shared_advantage, ("critic", "reward"))
        choice(own, "trust_region", self.trust_region, ("clip", "none"))
        for name in ("enumerate_limit", "counterfactual_samples", "updates_per_round", "minibatch_size",
                     "critic_hidden", "critic_layers"):
            positive_int(own, name, getattr(self, name))
        in_range(own, "policy_lr", self.policy_lr, 0, float("inf"), lo_open=True)
        if self.critic_lr is not None:
            in_range(own, "critic_lr", self.critic_lr, 0, float("inf"), lo_open=True)
        in_range(own, "critic_weight_decay", self.critic_weight_decay, 0, float("inf"))
        in_range(own, "clip_epsilon", self.clip_epsilon, 0, 1, lo_open=True, hi_open=True)
        in_range(own, "target_tau", self.target_tau, 0, 1, lo_open=True)
        for name in ("elite_fraction", "exploration"):
            in_range(own, name, getattr(self, name), 0, 1)
        in_range(own, "elite_quantile", self.elite_quantile, 0, 1, lo_open=True)
        in_range(own, "baseline_decay", self.baseline_decay, 0, 1, hi_open=True)
        if self.torch_threads is not None:
            positive_int(own, "torch_threads", self.torch_threads)

    @property
    def uses_critic(self) -> bool:
        """Whether a critic is fitted (everything except the reward-baseline advantage of Lite)."""
        return self.credit_assignment or self.shared_advantage == "critic"

    @classmethod
    def lite(cls, **overrides: Any) -> MA2MLConfig:
        """MA2ML-Lite: REINFORCE on the shared reward, moving-average baseline, on-policy, no critic."""
        base = {"credit_assignment": False, "shared_advantage": "reward", "off_policy": False,
                "trust_region": "none", "elite_fraction": 0.0}
        return cls(**{**base, **overrides})


# -- the algorithm (networks and replay buffer: agents.critics) ---------------------------------------
class MA2ML(ConfiguredSearch):
    """The paper's MA2ML (module docstring): factorised policies, a centralised critic on a replay buffer of
    every evaluation, counterfactual advantages, simultaneous clipped updates around target policies.

    Args:
        config: the hyper-parameters (default ``MA2MLConfig()``).
        **overrides: fields of the config to replace, e.g. ``MA2ML(credit_assignment=False)``.
    """

    name = "ma2ml-paper"
    config_class = MA2MLConfig

    def setup(self, action_spaces: Mapping[str, gymnasium.Space], seed: int) -> None:
        super().setup(action_spaces, seed)
        cfg, lay = self.config, self.codec
        self.torch_gen = torch.Generator().manual_seed(int(seed))
        self._mask, self._col_offset = torch.as_tensor(lay.mask), torch.as_tensor(lay.column_offset)
        self._dec_of_col, self._k_of_col = torch.as_tensor(lay.decision_of_column), torch.as_tensor(lay.value_of_column)
        # policies start uniform (zero logits); the target policies start equal to them
        self.logits = nn.Parameter(torch.zeros(lay.size, lay.max_choices))
        self.target_logits = torch.zeros(lay.size, lay.max_choices)
        self.policy_opt = torch.optim.Adam([self.logits], lr=cfg.policy_lr)
        self.critic, self.critic_opt = self._make_critic()  # Lite builds one too but never fits or reads it
        self.buffer = ReplayBuffer(lay.size)
        self.baseline: float | None = None  # MA2ML-Lite's moving-average reward
        self.rounds_done = 0
        self._reward_mean, self._reward_std = 0.0, 1.0
        self._build_units()
        self._adv_sums = torch.zeros(self.n_units)  # per-unit credit of the round, for metrics()

    def _make_critic(self) -> tuple[nn.Module, torch.optim.Optimizer]:
        cfg, lay = self.config, self.codec
        critic = MLPCritic(lay.n_columns, lay.size, cfg.critic_hidden, cfg.critic_layers, 1, self.torch_gen)
        opt = torch.optim.AdamW(critic.parameters(), lr=cfg.critic_lr or 1e-2, weight_decay=cfg.critic_weight_decay)
        return critic, opt

    def _build_units(self) -> None:
        """Credit units, each with its own advantage: an agent, or one decision of an agent."""
        cfg, lay = self.config, self.codec
        unit_of_dec = np.zeros(lay.size, dtype=np.int64)
        self._unit_mode: list[str] = []  # per unit: "enumerate", "decision" or "shared"
        self._unit_agent: list[int] = []
        self._enum: dict[int, torch.Tensor] = {}  # agent -> all its choices [M, n_i]
        for i, (sl, size) in enumerate(zip(lay.slices, lay.agent_cardinality)):
            small = size <= cfg.enumerate_limit or lay.sizes[i] == 1  # one decision: the two ways coincide
            mode = "shared" if not cfg.credit_assignment else "enumerate" if small else "decision"
            if mode == "enumerate":
                grids = np.meshgrid(*[np.arange(n) for n in lay.nvec[sl]], indexing="ij")
                self._enum[i] = torch.as_tensor(np.stack([g.reshape(-1) for g in grids], axis=1))
            decs = range(sl.start, sl.stop) if mode == "decision" else [sl]
            for d in decs:
                unit_of_dec[d] = len(self._unit_mode)
                self._unit_mode.append(mode)
                self._unit_agent.append(i)
        self.n_units = len(self._unit_mode)
        self._unit_of_dec = torch.as_tensor(unit_of_dec)
        # per-decision units: their counterfactuals swap one decision's column
        dec_units = np.array([self._unit_mode[unit_of_dec[d]] == "decision" for d in range(lay.size)], dtype=bool)
        self._pd_decs = torch.as_tensor(np.flatnonzero(dec_units))
        self._pd_cols = torch.as_tensor(np.flatnonzero(dec_units[lay.decision_of_column]))

    # -- policies and proposals ---------------------------------------------------------------------------
    def probabilities(self) -> dict[str, list[np.ndarray]]:
        """Current policy: per agent, one probability vector per decision."""
        with torch.no_grad():
            p = log_probs(self.logits, self._mask).exp().numpy()
        return {a: [p[d, : self.codec.nvec[d]].copy() for d in range(sl.start, sl.stop)]
                for a, sl in zip(self.codec.agents, self.codec.slices)}

    def greedy(self) -> np.ndarray:
        """The most probable joint action of the current policies (per-decision argmax), a flat row."""
        with torch.no_grad():
            return self.logits.masked_fill(~self._mask, float("-inf")).argmax(-1).numpy()

    def metrics(self) -> dict[str, Any]:
        """Diagnostics of the last round: mean critic and policy losses, and per agent the mean ``|A_i|`` of
        its credit units before normalisation (the credit it was given)."""
        return dict(getattr(self, "_metrics", {}))

    def propose(self, n: int) -> np.ndarray:
        """``n`` joint actions (int64 ``[n, D]``) sampled from the policies mixed with ``exploration`` uniform
        mass."""
        with torch_threads(self.config.torch_threads):
            return self._propose(n)

    def _propose(self, n: int) -> np.ndarray:
        return self._behaviour_samples(n)

    def _behaviour_samples(self, n: int, eps: float | None = None) -> np.ndarray:
        """``n`` flat joint actions ``[n, D]`` from the policies mixed with ``eps`` (default ``exploration``)
        uniform mass."""
        lay, eps = self.codec, self.config.exploration if eps is None else eps
        with torch.no_grad():
            p = log_probs(self.logits, self._mask).exp().double().numpy()
        p = (1 - eps) * p + eps * lay.mask / lay.nvec[:, None]
        cdf = np.cumsum(p, axis=1)
        u = self.rng.random((n, lay.size, 1)) * cdf[None, :, -1:]
        return np.minimum((cdf[None] < u).sum(-1), lay.nvec - 1)

    # -- observe: buffer, critic, policies ----------------------------------------------------------------
    def observe(self, actions: np.ndarray, scores: np.ndarray) -> None:
        """Store the round's evaluations (int64 ``[n, D]`` as proposed, one score each) and run the round's
        updates (module docstring)."""
        flat, r = self.observed_batch(actions, scores)
        with torch_threads(self.config.torch_threads):
            self._observe(flat, r)

    def _observe(self, flat: np.ndarray, r: np.ndarray, levels: np.ndarray | None = None) -> None:
        if not len(r):
            return
        if not np.all(np.isfinite(r)):
            raise ValueError("scores must be finite (the search loop maps failures to a defined score)")
        cfg, start = self.config, len(self.buffer)
        self.buffer.add(flat, r, self.rounds_done, levels)
        self._reward_mean = float(self.buffer.rewards.mean())
        std = float(self.buffer.rewards.std())
        self._reward_std = std if std > 1e-12 else 1.0
        self._targets = self._critic_targets(self.buffer.rewards)
        self._adv_sums = torch.zeros(self.n_units)
        critic_losses = self._update_critic(len(r)) if cfg.uses_critic else []
        policy_losses = self._update_policies(start)
        unit_agent = torch.as_tensor(self._unit_agent)  # the round's diagnostics (agents.tracking reads them)
        per_agent = torch.zeros(len(self.codec.agents)).index_add_(0, unit_agent, self._adv_sums)
        counts = torch.zeros(len(self.codec.agents)).index_add_(0, unit_agent, torch.ones(self.n_units))
        per_agent = per_agent / (counts * len(policy_losses)).clamp(min=1)
        self._metrics = {"policy_loss": float(np.mean(policy_losses)),
                         "mean_abs_advantage": dict(zip(self.codec.agents, per_agent.tolist())),
                         **({"critic_loss": float(np.mean(critic_losses))} if critic_losses else {})}
        if cfg.shared_advantage == "reward":
            m, d = float(r.mean()), cfg.baseline_decay
            self.baseline = m if self.baseline is None else d * self.baseline + (1 - d) * m
        self.rounds_done += 1

    def _critic_targets(self, rewards: np.ndarray) -> np.ndarray:
        """``r~``: the rewards standardised over the buffer."""
        return (rewards - self._reward_mean) / self._reward_std

    def _update_critic(self, n_new: int) -> list[float]:
        return [self.critic_step(self._uniform_rows(self.config.minibatch_size))
                for _ in range(self.config.updates_per_round)]

    def _update_policies(self, start: int) -> list[float]:
        cfg = self.config
        if not cfg.off_policy:  # on-policy: the latest round, once
            return [self.policy_step(np.arange(start, len(self.buffer)))]
        return [self.policy_step(self._policy_rows(cfg.minibatch_size)) for _ in range(cfg.updates_per_round)]

    def _uniform_rows(self, n: int) -> np.ndarray:
        return self.rng.integers(0, len(self.buffer), size=n)

    def _policy_rows(self, n: int) -> np.ndarray:
        """``n`` buffer rows: ``elite_fraction`` of them elite, the rest uniform."""
        n_elite = round(self.config.elite_fraction * n)
        rows = self._uniform_rows(n - n_elite)
        return np.concatenate([rows, self._elite_rows(n_elite)]) if n_elite else rows

    def _elite_rows(self, n: int) -> np.ndarray:
        """``n`` buffer rows drawn uniformly from the best ``elite_quantile`` by :meth:`_merit`."""
        k = max(1, int(np.ceil(self.config.elite_quantile * len(self.buffer))))
        top = np.argsort(-self._merit(), kind="stable")[:k]  # stable: ties keep evaluation order
        return top[self.rng.integers(0, k, size=n)]

    def _merit(self) -> np.ndarray:
        """What ranks the buffer's rows (elites): their rewards."""
        return self.buffer.rewards

    def _cols(self, flat: torch.Tensor) -> torch.Tensor:
        """The critic's input (column indices) for joint actions ``flat [B, D]``."""
        return flat + self._col_offset

    def _buffer_cols(self, rows: np.ndarray) -> torch.Tensor:
        """The critic's input for buffer rows (what the critic regresses on)."""
        return self._cols(torch.as_tensor(self.buffer.actions[rows]))

    def critic_step(self, rows: np.ndarray) -> float:
        """One regression step of ``Q`` on buffer rows: ``mean (Q(a) - r~)^2`` (every ensemble member)."""
        cols = self._buffer_cols(rows)
        target = torch.as_tensor(self._targets[rows]).float()
        loss = (self.critic(cols) - target).pow(2).mean()
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()
        return float(loss.detach())

    @torch.no_grad()
    def advantages(self, flat: torch.Tensor, rows: np.ndarray | None = None) -> torch.Tensor:
        """Advantage of each credit unit for joint actions ``flat [B, D]`` (buffer ``rows``): ``[B, n_units]``."""
        cfg, lay, b = self.config, self.codec, flat.shape[0]
        if not cfg.uses_critic:  # Lite: the shared r(a) - b
            r = torch.as_tensor(self.buffer.rewards[rows])
            base = self.baseline if self.baseline is not None else float(r.mean())
            return (r - base).float()[:, None].expand(b, self.n_units).clone()
        critic, cols = self.critic, self._cols(flat)
        q = critic(cols).mean(0)  # [B]
        if not cfg.credit_assignment:  # the shared Q(a) - E_{a~pi} Q(a)
            draws = torch.as_tensor(self._behaviour_samples(cfg.counterfactual_samples, eps=0.0))
            v = critic(self._cols(draws)).mean()
            return (q - v)[:, None].expand(b, self.n_units).clone()
        adv = torch.empty(b, self.n_units)
        probs = log_probs(self.logits.detach(), self._mask).exp()  # [D, max_n]
        if len(self._pd_cols):  # per decision: swap decision j to every alternative value
            pc = self._pd_cols
            dec = self._dec_of_col[pc]
            q_alt = critic.swap(cols, pc, dec).mean(0)  # [B, C]
            base = torch.zeros(b, lay.size).index_add_(1, dec, q_alt * probs[dec, self._k_of_col[pc]])
            adv[:, self._unit_of_dec[self._pd_decs]] = q[:, None] - base[:, self._pd_decs]
        for u, (mode, i) in enumerate(zip(self._unit_mode, self._unit_agent)):
            if mode == "enumerate":  # every choice of agent i, weighted by pi_i
                sl, choices = lay.slices[i], self._enum[i]  # [M, n_i]
                w = probs[torch.arange(sl.start, sl.stop), choices].prod(-1)  # [M]
                q_alt = critic.replace(cols, sl, choices + self._col_offset[sl]).mean(0)  # [B, M]
                adv[:, u] = q - (q_alt * w).sum(-1)
        return adv

    def policy_step(self, rows: np.ndarray) -> float:
        """One simultaneous update of every agent's policy on buffer rows, then the Polyak target update."""
        cfg, lay = self.config, self.codec
        flat = torch.as_tensor(self.buffer.actions[rows])
        uniq, inverse = np.unique(rows, return_inverse=True)  # elite rows repeat: counterfactuals once per row
        adv = self.advantages(torch.as_tensor(self.buffer.actions[uniq]), uniq)[torch.as_tensor(inverse)]
        self._adv_sums += adv.abs().mean(0)  # per-unit credit before normalisation, for metrics()
        if cfg.normalize_advantage:
            adv = adv / (adv.pow(2).mean().sqrt() + 1e-8)
        dec_idx = torch.arange(lay.size)
        logp = torch.zeros(len(rows), self.n_units).index_add_(
            1, self._unit_of_dec, log_probs(self.logits, self._mask)[dec_idx, flat])  # log pi_u(a_u)
        if cfg.trust_region == "none":
            objective = (logp * adv).mean(0).sum()
        else:
            logp_t = torch.zeros_like(logp).index_add_(
                1, self._unit_of_dec, log_probs(self.target_logits, self._mask)[dec_idx, flat])
            ratio = torch.exp(logp - logp_t)
            clipped = ratio.clamp(1 - cfg.clip_epsilon, 1 + cfg.clip_epsilon)
            objective = torch.minimum(ratio * adv, clipped * adv).mean(0).sum()
        loss = -objective
        self.policy_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.policy_opt.step()
        with torch.no_grad():
            self.target_logits.lerp_(self.logits, cfg.target_tau)
        return float(loss.detach())

    # -- checkpointing ------------------------------------------------------------------------------------
    _STATEFUL = ("policy_opt", "critic", "critic_opt", "buffer")  # each has state_dict / load_state_dict

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the search exactly (picklable, independent copies)."""
        return copy.deepcopy({
            "version": 2, "config": dataclasses.asdict(self.config), "action_spaces": self.action_spaces,
            "seed": self.seed, "logits": self.logits.detach(), "target_logits": self.target_logits,
            **{k: getattr(self, k).state_dict() for k in self._STATEFUL}, "np_rng": self.rng.bit_generator.state,
            "torch_rng": self.torch_gen.get_state(), "baseline": self.baseline, "rounds_done": self.rounds_done,
            "reward_stats": (self._reward_mean, self._reward_std)})

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`; no :meth:`setup` needed before (the state holds the spaces)."""
        state = copy.deepcopy(dict(state))
        self.config = self.config_class(**state["config"])
        self.setup(state["action_spaces"], state["seed"])
        self._restore_setup(state)
        with torch.no_grad():
            self.logits.copy_(state["logits"])
            self.target_logits.copy_(state["target_logits"])
        for k in self._STATEFUL:
            getattr(self, k).load_state_dict(state[k])
        self.rng.bit_generator.state = state["np_rng"]
        self.torch_gen.set_state(state["torch_rng"])
        self.baseline, self.rounds_done = state["baseline"], state["rounds_done"]
        self._reward_mean, self._reward_std = state["reward_stats"]


    def _restore_setup(self, state: Mapping[str, Any]) -> None:
        """What a subclass restores between :meth:`setup` and loading the networks (shapes); nothing here."""


class MA2MLLite(MA2ML):
    """MA2ML-Lite, the paper's simple variant: each agent runs REINFORCE on the shared reward with a
    moving-average baseline, on-policy (every sample used once), no critic (``MA2MLConfig.lite()``)."""

    name = "ma2ml-lite"

    @classmethod
    def default_config(cls) -> MA2MLConfig:
        return MA2MLConfig.lite()
