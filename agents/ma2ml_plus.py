r"""Our extension of MA2ML (registered as ``"ma2ml"``, the CLI's default): the paper's method
(:mod:`agents.ma2ml`) plus four pieces of ours, each a config field so that the benchmark can take it away.

Chosen from measurements on recorded real trainings (``benchmarks/results/REPORT.md``: lower normalised
regret than the paper's MA2ML on the real tabular tasks, 0.024 [0.011, 0.038] paired at 200 evaluations).
Everything the paper defines (factorised policies, the centralised critic on a replay buffer, the
counterfactual advantage, target policies, the ``credit_assignment`` / ``off_policy`` ablations) is
inherited from :class:`agents.ma2ml.MA2ML` unchanged; what is ours:

* **Rank targets** (``critic_targets="rank"``): the critic regresses on the normal scores of the rewards'
  ranks, ``Phi^-1((rank - 1/2) / n)`` (a Gaussian copula), so only their order matters and a few failed or
  outlying evaluations do not dominate the fit (the paper: standardised rewards, ``"zscore"``).
* **Critic ensembles** (``critic_ensemble``): independent critics whose mean is ``Q`` and whose spread
  makes screening optimistic.
* **Mirror-descent policy step** (``policy_update="mirror"``; ``"gradient"`` is the paper's Adam steps).
  Once per round, on ``minibatch_size`` replayed rows ``D_w`` (elite-weighted), for every decision ``j``
  of agent ``i`` and every value ``k`` of it:
  ``Qbar_ij(k) = mean_{a in D_w} Q(a_ij = k, a_-ij)``, ``A_ij(k) = Qbar_ij(k) - sum_k' pi_ij(k') Qbar_ij(k')``
  (the counterfactual advantage of *each* alternative, not only of the sampled one), divided by its
  root-mean-square over agent ``i``'s values, then ``theta_ij = theta~_ij + eta A_ij``, i.e.
  ``pi_ij ∝ pi~_ij exp(eta A_ij)``: the exact maximiser of ``E_{pi_ij}[A_ij] - KL(pi_ij || pi~_ij) / eta``,
  so the trust region is exact and closed-form. Target logits then move by Polyak averaging
  (``target_tau``; 1 = the new policy is the next round's centre). With ``credit_assignment=False`` the
  value ``k`` gets the mean shared advantage of the replayed rows that chose it (0 if none did).
* **Critic screening** (``screening=K``): ``propose(n)`` draws ``K n`` candidates, half from the behaviour
  policy (a ``screen_random`` share of those uniformly at random), half elite buffer rows with one agent's
  decisions redrawn from its policy, and proposes the ``n`` unevaluated ones with the highest
  ``mean + screen_kappa * std`` of ``Q`` over the ensemble (policy samples when every candidate was
  evaluated).
* **Factorisation-machine critic** (``critic="fm"``): :class:`agents.critics.FMCritic`, each ensemble member
  fitted full-batch on its own Poisson bootstrap of the buffer with a ridge penalty, warm-started.

:meth:`MA2MLPlusConfig.paper` is the paper's MA2ML in this config, to which single pieces can be added (the
benchmark's ``ma2ml-rank`` and ``ma2ml-screen``).

Example::

    from agents.base import run
    from agents.ma2ml_plus import MA2MLPlus
    result = run(MA2MLPlus(), env, budget=200, seed=0, batch_size=8)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium
import numpy as np
import torch
from torch import nn

from agents.common import choice, in_range, positive_int
from agents.critics import FMCritic, MLPCritic, log_probs
from agents.ma2ml import MA2ML, MA2MLConfig

__all__ = ["MA2MLPlus", "MA2MLPlusConfig"]


@dataclass(frozen=True)
class MA2MLPlusConfig(MA2MLConfig):
    """Hyper-parameters of our MA2ML: the paper's (:class:`agents.ma2ml.MA2MLConfig`) plus ours, with our
    defaults."""

    target_tau: float = 1.0
    """Polyak rate of the target policies; in (0, 1]. 1 with the mirror step: each round's KL step is
    centred on the previous round's policy (the paper's Adam steps use 0.1)."""

    elite_quantile: float = 0.01
    """Top share of the buffer (by reward) that elite rows come from; in (0, 1]."""

    critic: Literal["mlp", "fm"] = "mlp"
    """``"mlp"``: the paper's MLP critic; ``"fm"``: a factorisation machine (module docstring), fitted by
    ``updates_per_round`` full-batch Adam steps per round (learning rate ``critic_lr`` or 5e-2)."""

    critic_ensemble: int = 4
    """Independent critics (different initialisations) whose mean is ``Q``; >= 1 (the paper: 1)."""

    critic_targets: Literal["zscore", "rank"] = "rank"
    """What the critic regresses on: ``"zscore"`` (the paper's standardised rewards) or ``"rank"`` (normal
    scores of their ranks)."""

    critic_rank: int = 4
    """Rank of the factorisation machine's pairwise interactions (``critic="fm"``); >= 1."""

    critic_l2: float = 1.0
    """Ridge penalty on the factorisation machine's weights, per evaluation (``critic="fm"``); >= 0."""

    policy_update: Literal["gradient", "mirror"] = "mirror"
    """``"mirror"``: one closed-form KL step per round (module docstring); ``"gradient"``: the paper's
    ``updates_per_round`` Adam steps of the clipped objective."""

    mirror_step: float = 0.5
    """Step size ``eta`` of the mirror step (per-agent normalised advantages); > 0."""

    screening: int = 32
    """Candidates screened by the critic per proposed joint action (0: plain policy samples, as in the
    paper); >= 0."""

    screen_kappa: float = 1.0
    """Screening score ``mean + screen_kappa * std`` of ``Q`` over the ensemble (optimism); >= 0."""

    screen_random: float = 0.0
    """Share of the policy half of the screened candidates drawn uniformly at random instead; in [0, 1]."""

    def check(self) -> None:
        super().check()
        own = type(self).__name__
        choice(own, "critic", self.critic, ("mlp", "fm"))
        choice(own, "critic_targets", self.critic_targets, ("zscore", "rank"))
        choice(own, "policy_update", self.policy_update, ("gradient", "mirror"))
        positive_int(own, "critic_ensemble", self.critic_ensemble)
        positive_int(own, "critic_rank", self.critic_rank)
        in_range(own, "mirror_step", self.mirror_step, 0, float("inf"), lo_open=True)
        in_range(own, "critic_l2", self.critic_l2, 0, float("inf"))
        in_range(own, "screen_kappa", self.screen_kappa, 0, float("inf"))
        in_range(own, "screen_random", self.screen_random, 0, 1)
        if isinstance(self.screening, bool) or not isinstance(self.screening, int) or self.screening < 0:
            raise ValueError(f"{own}.screening must be an integer >= 0, got {self.screening!r}")

    @classmethod
    def paper(cls, **overrides: Any) -> MA2MLPlusConfig:
        """The paper's MA2ML (what :class:`agents.ma2ml.MA2ML` runs) in this config, with ``overrides``."""
        base = {"critic_targets": "zscore", "critic_ensemble": 1, "policy_update": "gradient",
                "target_tau": 0.1, "screening": 0, "elite_quantile": 0.03}
        return cls(**{**base, **overrides})


class MA2MLPlus(MA2ML):
    """Our MA2ML (module docstring): the paper's method with rank targets, critic ensembles, the
    mirror-descent step and critic screening (and optionally the factorisation-machine critic).

    Args:
        config: the hyper-parameters (default ``MA2MLPlusConfig()``).
        **overrides: fields of the config to replace, e.g. ``MA2MLPlus(screening=0)``.
    """

    name = "ma2ml"
    config_class = MA2MLPlusConfig

    def setup(self, action_spaces: Mapping[str, gymnasium.Space], seed: int) -> None:
        super().setup(action_spaces, seed)
        lay = self.codec
        self._boot = np.ones((self.config.critic_ensemble, 0))  # FM: each member's bootstrap weight per row
        # the mirror step's index maps: each column's credit unit and agent, columns per unit and per agent
        agent_of_col = np.repeat(np.arange(len(lay.agents)), lay.sizes)[lay.decision_of_column]
        unit_of_col = self._unit_of_dec.numpy()[lay.decision_of_column]
        self._unit_of_col, self._agent_of_col = torch.as_tensor(unit_of_col), torch.as_tensor(agent_of_col)
        self._cols_per_unit = torch.as_tensor(np.bincount(unit_of_col, minlength=self.n_units)).float()
        self._cols_per_agent = torch.as_tensor(np.bincount(agent_of_col)).float()

    def _make_critic(self) -> tuple[nn.Module, torch.optim.Optimizer]:
        cfg, lay = self.config, self.codec
        if cfg.critic == "fm":
            critic = FMCritic(lay.n_columns, cfg.critic_rank, cfg.critic_ensemble, self.torch_gen)
            return critic, torch.optim.Adam(critic.parameters(), lr=cfg.critic_lr or 5e-2)
        critic = MLPCritic(lay.n_columns, lay.size, cfg.critic_hidden, cfg.critic_layers, cfg.critic_ensemble,
                           self.torch_gen)
        opt = torch.optim.AdamW(critic.parameters(), lr=cfg.critic_lr or 1e-2, weight_decay=cfg.critic_weight_decay)
        return critic, opt

    # -- proposals: critic screening ----------------------------------------------------------------------
    def _propose(self, n: int) -> np.ndarray:
        k = self.config.screening * n
        if k and self.config.uses_critic and len(self.buffer):
            return self._screen(n, k)
        return self._behaviour_samples(n)

    def _screen(self, n: int, k: int) -> np.ndarray:
        """The ``n`` best unevaluated of ``k`` candidates by ``Q`` mean + ``screen_kappa`` std over the
        ensemble."""
        lay = self.codec
        cand = self._behaviour_samples(k)
        n_random = round(self.config.screen_random * (k // 2))
        if n_random:
            cand[:n_random] = self.rng.integers(0, lay.nvec, size=(n_random, lay.size))
        m = k // 2
        cand[m:] = self.buffer.actions[self._elite_rows(k - m)]
        redraw = self._behaviour_samples(k - m)
        agents = self.rng.integers(0, len(lay.slices), size=k - m)
        for i, a in enumerate(agents):  # one agent's decisions of an elite redrawn from the behaviour policy
            sl = lay.slices[a]
            cand[m + i, sl] = redraw[i, sl]
        seen = {row.tobytes() for row in self.buffer.actions}
        keep, fresh = [], set()
        for i, row in enumerate(cand):
            key = row.tobytes()
            if key not in seen and key not in fresh:
                fresh.add(key)
                keep.append(i)
        cand = cand[keep]
        if not len(cand):  # a small space, all of it evaluated: plain samples
            return self._behaviour_samples(n)
        with torch.no_grad():
            qs = self.critic(self._cols(torch.as_tensor(cand)))  # [E, K]
            spread = qs.std(0) * self.config.screen_kappa if qs.shape[0] > 1 else 0.0
            score = (qs.mean(0) + spread).numpy()
        best = cand[np.argsort(-score, kind="stable")[:n]]
        if len(best) < n:
            best = np.concatenate([best, self._behaviour_samples(n - len(best))])
        return best

    # -- the critic: rank targets, factorisation machine -----------------------------------------------------
    def _critic_targets(self, rewards: np.ndarray) -> np.ndarray:
        if self.config.critic_targets == "rank":
            from scipy.stats import norm, rankdata

            return norm.ppf((rankdata(rewards) - 0.5) / len(rewards))
        return super()._critic_targets(rewards)

    def _update_critic(self, n_new: int) -> list[float]:
        cfg = self.config
        if cfg.critic != "fm":
            return super()._update_critic(n_new)
        e = cfg.critic_ensemble
        new = self.rng.poisson(1.0, size=(e, n_new)) if e > 1 else np.ones((1, n_new))
        self._boot = np.concatenate([self._boot, new], axis=1)
        return [self.fit_fm() for _ in range(cfg.updates_per_round)]

    def fit_fm(self) -> float:
        """One full-batch step of the factorisation-machine ensemble: per member, the bootstrap-weighted mean
        of ``(Q(a) - r~)^2`` plus ``critic_l2 * |weights|^2`` per unit of bootstrap weight (ridge)."""
        cols = self._cols(torch.as_tensor(self.buffer.actions))
        target = torch.as_tensor(self._targets).float()
        w = torch.as_tensor(self._boot).float()  # [E, N]
        total = w.sum(1).clamp(min=1.0)
        mse = ((self.critic(cols) - target) ** 2 * w).sum(1) / total
        reg = self.critic.w.pow(2).sum(1) + self.critic.v.pow(2).sum((1, 2))
        loss = (mse + self.config.critic_l2 * reg / total).sum()
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()
        return float(mse.detach().mean())

    # -- the policies: the mirror-descent step ----------------------------------------------------------------
    def _update_policies(self, start: int) -> list[float]:
        cfg = self.config
        if cfg.policy_update != "mirror":
            return super()._update_policies(start)
        rows = self._policy_rows(cfg.minibatch_size) if cfg.off_policy else np.arange(start, len(self.buffer))
        return [self.mirror_step(rows)]

    @torch.no_grad()
    def mirror_step(self, rows: np.ndarray) -> float:
        """The closed-form KL-regularised policy step on replayed buffer rows; returns ``-E_pi[A]`` of the
        normalised advantages (the new policy's expected improvement, negated)."""
        cfg, lay = self.config, self.codec
        uniq, counts = np.unique(rows, return_counts=True)
        flat = torch.as_tensor(self.buffer.actions[uniq])
        wts = torch.as_tensor(counts / counts.sum()).float()  # [B]
        p_col = log_probs(self.logits, self._mask).exp()[self._dec_of_col, self._k_of_col]  # [n_cols]
        cols = self._cols(flat)
        if cfg.credit_assignment:  # A_ij(k) = mean_D Q(a_ij = k, a_-ij) - sum_k' pi_ij(k') (same with k')
            every = torch.arange(lay.n_columns)
            q_bar = wts @ self.critic.swap(cols, every, self._dec_of_col).mean(0)  # [n_cols]
            base = torch.zeros(lay.size).index_add_(0, self._dec_of_col, p_col * q_bar)
            adv = q_bar - base[self._dec_of_col]
        else:  # the shared advantage of the replayed rows, credited to the values they chose
            shared = self.advantages(flat, uniq)[:, 0]  # [B]
            flat_cols, rep = cols.reshape(-1), (lambda x: x[:, None].expand(-1, lay.size).reshape(-1))
            num = torch.zeros(lay.n_columns).index_add_(0, flat_cols, rep(wts * shared))
            den = torch.zeros(lay.n_columns).index_add_(0, flat_cols, rep(wts))
            adv = torch.where(den > 0, num / den.clamp(min=1e-12), torch.zeros(()))
        per_unit = torch.zeros(self.n_units).index_add_(0, self._unit_of_col, adv.abs())
        self._adv_sums += per_unit / self._cols_per_unit
        if cfg.normalize_advantage:
            sq = torch.zeros(len(lay.agents)).index_add_(0, self._agent_of_col, adv * adv)
            rms = (sq / self._cols_per_agent).sqrt()
            adv = adv / (rms[self._agent_of_col] + 1e-8)
        step = torch.zeros_like(self.logits)
        step[self._dec_of_col, self._k_of_col] = adv
        self.logits.copy_(self.target_logits + cfg.mirror_step * step)
        self.target_logits.lerp_(self.logits, cfg.target_tau)
        new_p = log_probs(self.logits, self._mask).exp()[self._dec_of_col, self._k_of_col]
        return -float((new_p * adv).sum())

    # -- checkpointing ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "boot": self._boot.copy()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._boot = np.array(state["boot"], dtype=np.float64)
