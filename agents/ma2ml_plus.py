r"""Our extension of MA2ML (registered as ``"ma2ml"``, the CLI's default): the paper's method
(:mod:`agents.ma2ml`) plus pieces of ours, each a config field (or, for fidelity, a call) so that the
benchmark can take it away.

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
  evaluated). Every joint action one decision away from each of the ``screen_neighbours`` best distinct
  evaluated ones joins those candidates, ranked on the same score with no reserved slots: the systematic
  neighbourhood of the incumbents that local search owes its late gains to. With it, ``mirror_step`` 0.25
  and ``exploration`` 0.2 keep the policies from collapsing by 100 evaluations (DESIGN section 9;
  ``benchmarks/results/ma2ml-stall.md``).
* **Restarts** (``restart_after``): when the best evaluation is ``restart_after`` evaluations old (and no
  restart came since), the policies and target policies restart uniform; the critic and the replay buffer
  stay, so screening still ranks the now diverse candidates (local search's restarts, with a memory).
* **Factorisation-machine critic** (``critic="fm"``): :class:`agents.critics.FMCritic`, each ensemble member
  fitted full-batch on its own Poisson bootstrap of the buffer with a ridge penalty, warm-started.
* **Learning from every fidelity** (the paper trains every child to the end; multi-fidelity is ours). Once
  told the evaluator's levels (:meth:`MA2MLPlus.set_fidelity`, which :mod:`agents.multifidelity` calls),
  the critic is ``Q(a, l)``: the level is one more one-hot input (a pseudo-decision with a column per level,
  plus one for "a child's first result, level not told", which is what :meth:`observe` gets from the loop).
  :meth:`MA2MLPlus.observe_levels` adds a promoted child's later results to the replay buffer at their
  level; targets (rank or z-score) are computed within each level, so a low-fidelity result is compared
  only with others of its level and is never read as a final score. Every question the search asks, the
  counterfactual advantages of the policy step, screening, and which rows are elite (by ``Q(a, top)``
  instead of the raw reward), is asked at the full training, so all levels inform them through the
  shared weights. Replay draws rows of every level. Without :meth:`set_fidelity` nothing changes.

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
from agents.threads import torch_threads
from ma2ml_env.rewards.fidelity import Fidelity

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

    mirror_step: float = 0.25
    """Step size ``eta`` of the mirror step (per-agent normalised advantages); > 0. 0.25: 0.5 collapsed the
    policies by about 100 evaluations (the logits grow by about ``eta`` every round)."""

    exploration: float = 0.2
    """Per-decision probability mass mixed uniformly into policy samples and one-agent redraws (the
    screening candidates); in [0, 1] (the paper's MA2ML here: 0.05)."""

    screening: int = 32
    """Candidates screened by the critic per proposed joint action (0: plain policy samples, as in the
    paper); >= 0."""

    screen_kappa: float = 1.0
    """Screening score ``mean + screen_kappa * std`` of ``Q`` over the ensemble (optimism); >= 0."""

    screen_random: float = 0.0
    """Share of the policy half of the screened candidates drawn uniformly at random instead; in [0, 1]."""

    screen_neighbours: int = 3
    """Every unevaluated joint action one decision away from each of the ``screen_neighbours`` best
    evaluated ones joins the screening candidates, ranked on the same score (no reserved slots); >= 0
    (0: none). The systematic neighbourhood of the incumbents that local search owes its late gains to."""

    restart_after: int = 32
    """Restart the policies and target policies uniform when the best evaluation is ``restart_after``
    evaluations old and none was restarted since (the critic and the buffer stay); >= 0 (0: never)."""

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
        for name in ("screening", "screen_neighbours", "restart_after"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{own}.{name} must be an integer >= 0, got {v!r}")

    @classmethod
    def paper(cls, **overrides: Any) -> MA2MLPlusConfig:
        """The paper's MA2ML (what :class:`agents.ma2ml.MA2ML` runs) in this config, with ``overrides``."""
        base = {"critic_targets": "zscore", "critic_ensemble": 1, "policy_update": "gradient",
                "target_tau": 0.1, "screening": 0, "elite_quantile": 0.03, "exploration": 0.05,
                "mirror_step": 0.5, "screen_neighbours": 0, "restart_after": 0}
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
        self._levels: tuple[float, ...] | None = None  # the fidelity levels (set_fidelity); None: full fidelity
        self._restarted_at = 0  # buffer size at the last restart of the policies
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
        extra = 0 if self._levels is None else len(self._levels) + 1  # the fidelity input's columns
        if cfg.critic == "fm":
            critic = FMCritic(lay.n_columns + extra, cfg.critic_rank, cfg.critic_ensemble, self.torch_gen)
            return critic, torch.optim.Adam(critic.parameters(), lr=cfg.critic_lr or 5e-2)
        critic = MLPCritic(lay.n_columns + extra, lay.size + bool(extra), cfg.critic_hidden, cfg.critic_layers,
                           cfg.critic_ensemble, self.torch_gen)
        opt = torch.optim.AdamW(critic.parameters(), lr=cfg.critic_lr or 1e-2, weight_decay=cfg.critic_weight_decay)
        return critic, opt

    # -- fidelity: the critic learns from every level ---------------------------------------------------------
    def set_fidelity(self, fidelity: Any) -> None:
        """Declare the evaluator's fidelity levels (a :class:`ma2ml_env.Fidelity` or its increasing levels; the
        last is the full training): from then on the critic takes the level of each result as an input
        (module docstring). Call after :meth:`setup` and before the first observation; calling it again with
        the same levels does nothing. The multi-fidelity loop calls it."""
        levels = (fidelity if isinstance(fidelity, Fidelity) else Fidelity(fidelity)).levels  # checked there
        if levels == self._levels:
            return
        if len(self.buffer):
            raise RuntimeError("set_fidelity must be called before the first observe (after setup): the critic "
                               "already learnt from results without levels")
        self._levels = levels
        self.critic, self.critic_opt = self._make_critic()

    def observe_levels(self, actions: np.ndarray, scores: np.ndarray, levels: np.ndarray) -> None:
        """Results of children continued to a higher fidelity: joint actions as proposed, their scores and
        the fidelity level index of each (``0 <= level < len(levels)`` of :meth:`set_fidelity`). They join
        the replay buffer at their level and the round's updates run, as in :meth:`observe`."""
        if self._levels is None:
            raise RuntimeError("observe_levels needs the fidelity levels: call set_fidelity(fidelity) after setup "
                               "(agents.multifidelity does)")
        flat, r = self.observed_batch(actions, scores)
        lv = np.asarray(levels)
        if lv.shape != r.shape or (lv.size and (lv.dtype.kind not in "iu" or lv.min() < 0
                                                or lv.max() >= len(self._levels))):
            raise ValueError(f"observe_levels takes one level index per score, integers in [0, "
                             f"{len(self._levels)}), got {lv!r}")
        with torch_threads(self.config.torch_threads):
            self._observe(flat, r, lv.astype(np.int64))

    def _observe(self, flat: np.ndarray, r: np.ndarray, levels: np.ndarray | None = None) -> None:
        if self._levels is not None and levels is None:  # a child's first result: its level is not told
            levels = np.full(len(r), self._first, dtype=np.int64)
        super()._observe(flat, r, levels)
        after = self.config.restart_after
        if after and len(self.buffer):
            since = len(self.buffer) - max(int(np.argmax(self._merit())) + 1, self._restarted_at)
            if since >= after:
                with torch.no_grad():
                    self.logits.zero_()
                    self.target_logits.zero_()
                self._restarted_at = len(self.buffer)

    @property
    def _first(self) -> int:
        """The critic's level input of a first result (observe() does not say at which level it was)."""
        return len(self._levels or ())

    def _cols(self, flat: torch.Tensor, levels: np.ndarray | None = None) -> torch.Tensor:
        """The critic's input: column indices, plus with fidelity levels the column of the level (default:
        the full training, what every policy and screening question asks about)."""
        cols = super()._cols(flat)
        if self._levels is None:
            return cols
        lv = torch.full((len(flat),), len(self._levels) - 1) if levels is None else torch.as_tensor(levels)
        return torch.cat([cols, (self.codec.n_columns + lv)[:, None]], 1)

    def _buffer_cols(self, rows: np.ndarray) -> torch.Tensor:
        return self._cols(torch.as_tensor(self.buffer.actions[rows]), self.buffer.levels[rows])

    @torch.no_grad()
    def _merit(self) -> np.ndarray:
        """Rewards at full fidelity; with fidelity levels, ``Q`` at the full training (the critic's reading of
        every level's results), since rewards at different levels do not compare."""
        if self._levels is None:
            return self.buffer.rewards
        return self.critic(self._cols(torch.as_tensor(self.buffer.actions))).mean(0).numpy()

    def _restore_setup(self, state: Mapping[str, Any]) -> None:
        if state.get("fidelity") is not None:
            self.set_fidelity(state["fidelity"])

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
        if self.config.screen_neighbours:
            cand = np.concatenate([cand, self.neighbours(self.config.screen_neighbours)])
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

    def neighbours(self, top: int) -> np.ndarray:
        """Every joint action one decision away from each of the ``top`` best distinct evaluated ones (by
        :meth:`_merit`), in that order: ``[n, D]``, possibly evaluated already."""
        lay, acts = self.codec, self.buffer.actions
        best: list[int] = []
        keys: set[bytes] = set()
        for i in np.argsort(-self._merit(), kind="stable"):
            if len(best) == top:
                break
            if acts[i].tobytes() not in keys:
                keys.add(acts[i].tobytes())
                best.append(int(i))
        rows = acts[best]  # [T, D]
        dec, val = lay.decision_of_column, lay.value_of_column
        out = np.repeat(rows[:, None, :], lay.n_columns, axis=1)  # [T, C, D]: column c sets decision dec[c]
        out[:, np.arange(lay.n_columns), dec] = val
        return out[rows[:, dec] != val[None, :]]

    # -- the critic: rank targets, factorisation machine -----------------------------------------------------
    def _critic_targets(self, rewards: np.ndarray) -> np.ndarray:
        """Rank or z-score targets over the buffer; with fidelity levels, within each level (a low-level
        result is compared with the others at its level, never with final scores)."""
        if self._levels is None:
            return self._targets_of(rewards, self._reward_mean, self._reward_std)
        out = np.empty(len(rewards))
        for v in np.unique(self.buffer.levels):
            at = self.buffer.levels == v
            std = float(rewards[at].std())
            out[at] = self._targets_of(rewards[at], float(rewards[at].mean()), std if std > 1e-12 else 1.0)
        return out

    def _targets_of(self, rewards: np.ndarray, mean: float, std: float) -> np.ndarray:
        if self.config.critic_targets == "rank":
            from scipy.stats import norm, rankdata

            return norm.ppf((rankdata(rewards) - 0.5) / len(rewards))
        return (rewards - mean) / std

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
        cols = self._buffer_cols(np.arange(len(self.buffer)))
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
            flat_cols, rep = cols[:, : lay.size].reshape(-1), (lambda x: x[:, None].expand(-1, lay.size).reshape(-1))
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
        return {**super().state_dict(), "boot": self._boot.copy(), "fidelity": self._levels,
                "restarted_at": self._restarted_at}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._boot = np.array(state["boot"], dtype=np.float64)
        self._restarted_at = int(state.get("restarted_at", 0))
