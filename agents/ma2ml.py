r"""MA2ML: off-policy multi-agent actor-critic with counterfactual credit assignment, and MA2ML-Lite.

Wang et al., "Multi-Agent Automated Machine Learning", CVPR 2023 (arXiv 2210.09084). Each AutoML module
(augmentation, architecture, hyper-parameters, ...) is an agent ``i`` with a policy ``pi_i`` over its
decisions; a joint action ``a = (a_1, ..., a_n)`` is one pipeline and its shared reward ``r(a)`` is the
pipeline's validation score. The problem is one-step (state-less): the "state" is constant.

Two readings of the method live in this one class, chosen by switches:

* the defaults (``MA2MLConfig()``): an ensemble of MLP critics on rank targets, one closed-form
  KL-regularised (mirror-descent) policy step per round from the counterfactual advantage of every value
  of every decision, and proposals screened by the critic. Each is a reading of one of the paper's
  ingredients (centralised critic, counterfactual credit, off-policy reuse, trust region); rank targets,
  the mirror step, screening and the optional factorisation-machine critic go beyond the paper and are
  marked so below. Chosen from measurements on recorded real trainings (``benchmarks/results/REPORT.md``);
* ``MA2MLConfig.paper()``: the paper's actor-critic as first implemented here: an MLP critic on z-scored
  rewards, Adam steps on a clipped (PPO-style) objective around Polyak target policies, proposals sampled
  from the policies. ``MA2MLConfig.lite()``: MA2ML-Lite.

Networks
--------
* Policy ``pi_i(a_i) = prod_j softmax(theta_ij)[a_ij]``: one independent categorical per decision ``j``
  of agent ``i`` (plain logits, no state to condition on). Factorising over decisions is what makes the
  counterfactual sums below cheap and exact: the sum over an agent's joint choices has
  ``prod_j n_ij`` terms (6.6e29 for the default augmentation agent), whereas the per-decision sums have
  ``sum_j n_ij`` terms (320), all computable in one batched critic call.
* Centralised critic ``Q(a)`` (``critic="mlp"``, the paper's and the default; the FM critic is below): an MLP
  (ensemble of ``critic_ensemble`` members, averaged) on the one-hot
  encoding of the joint action, fitted by regression on the replay buffer ``D`` of *every* evaluated
  ``(a, r)``: ``L_Q = E_{(a,r)~D} (Q(a) - r~)^2`` with ``r~`` the reward standardised by the buffer's
  mean and standard deviation (``critic_targets="zscore"``; the default is rank targets, below).

Credit assignment (the paper's marginal contribution; COMA's counterfactual baseline)
--------------------------------------------------------------------------------------
``A_i(a) = Q(a) - sum_{a_i'} pi_i(a_i') Q(a_i', a_-i)``  (paper: credit assignment, eq. "marginal
contribution"; Foerster et al. 2018, COMA). How the sum is computed (``counterfactual``):

* ``"enumerate"``: exactly, over all ``prod_j n_ij`` choices of agent ``i``;
* ``"per_decision"``: exactly, per decision: ``A_ij(a) = Q(a) - sum_{a_ij'} pi_ij(a_ij') Q(a_ij', a_-ij)``,
  and agent ``i``'s gradient is ``sum_j A_ij grad log pi_ij(a_ij)``. Because ``pi_i`` factorises, the
  baseline of decision ``j`` does not depend on ``a_ij``, so this is an unbiased estimator of agent
  ``i``'s policy gradient, with credit assigned even finer (to each decision of the agent);
* ``"sample"``: Monte-Carlo, ``counterfactual_samples`` draws ``a_i' ~ pi_i`` per mini-batch row;
* ``"auto"`` (default): ``"enumerate"`` for agents with ``prod_j n_ij <= enumerate_limit``, else
  ``"per_decision"``.

With ``credit_assignment=False`` every agent gets the same advantage: ``Q(a) - V`` with
``V = E_{a~pi} Q(a)`` estimated from ``counterfactual_samples`` fresh draws (``shared_advantage="critic"``),
or the raw ``r(a) - b`` with a moving-average baseline ``b`` (``shared_advantage="reward"``, no critic).

Off-policy, trust-region policy update (``policy_update="gradient"``)
--------------------------------------------------------------------------
Each agent's objective is maximised on mini-batches of the buffer (old behaviour policies, so every
expensive evaluation is reused), all agents simultaneously, inside a trust region around a slowly moving
*target policy* ``pi~_i`` (``trust_region``):

* ``"clip"``: ``L_i = -E_D[min(rho_i A_i, clip(rho_i, 1-eps, 1+eps) A_i)]``, ``rho_i = pi_i(a_i)/pi~_i(a_i)``
  (PPO's clipped importance ratio, with the target policy in the role of the old policy);
* ``"kl"``: ``L_i = -E_D[rho_i A_i] + beta KL(pi~_i || pi_i)`` (exact KL, it factorises over decisions);
* ``"none"``: plain policy gradient ``L_i = -E_D[A_i log pi_i(a_i)]``.

Plus ``-c_H H(pi_i)`` (exact entropy) if ``entropy_coef > 0``. Target policies track the policies by
Polyak averaging of the logits: ``theta~ <- (1 - tau) theta~ + tau theta``. Our reading of the paper: the
behaviour-policy mismatch of buffer samples is not importance-corrected (as in off-policy actor-critic
methods that rely on the critic); the trust region bounds how far one round can move each agent.

With ``off_policy=False`` the policy takes one step on the latest round's samples only, each used once
(on-policy); the critic still fits the whole buffer.

Mirror-descent step (``policy_update="mirror"``, the default; our extension)
--------------------------------------------------------------------------
Once per round, on ``minibatch_size`` replayed rows ``D_w`` (elite-weighted as below), for every decision
``j`` of agent ``i`` and every value ``k`` of it:
``Qbar_ij(k) = mean_{a in D_w} Q(a_ij = k, a_-ij)``, ``A_ij(k) = Qbar_ij(k) - sum_k' pi_ij(k') Qbar_ij(k')``
(the counterfactual advantage of *each* alternative, not only of the sampled one), divided by its
root-mean-square over agent ``i``'s values (``normalize_advantage``), then
``theta_ij = theta~_ij + eta A_ij``, i.e. ``pi_ij ∝ pi~_ij exp(eta A_ij)``: the exact maximiser of
``E_{pi_ij}[A_ij] - KL(pi_ij || pi~_ij) / eta`` (``eta = mirror_step``), so the trust region is exact and
closed-form. Target logits then move by Polyak averaging (``target_tau``; 1 = the new policy is the next
round's centre). With ``credit_assignment=False`` the value ``k`` gets the mean shared advantage of the
replayed rows that chose it (0 if none did): no counterfactuals.

Factorisation-machine critic (``critic="fm"``; our extension)
------------------------------------------------------------
``Q(a) = b + sum_j w[a_j] + sum_{j<k} <v[a_j], v[a_k]>`` (rank ``critic_rank``), an ensemble of
``critic_ensemble`` members, each fitted full-batch on its own Poisson bootstrap of the buffer with a ridge
penalty, warm-started every round; the swap of one decision is closed-form (:class:`FMCritic`).
Targets (``critic_targets="rank"``, the default; our extension): the normal scores of the rewards' ranks,
``Phi^-1((rank - 1/2) / n)`` (a Gaussian copula), so only their order matters.

Screening (``screening=K``, the default 32; our extension)
---------------------------------------------------------
``propose(n)`` draws ``K n`` candidates: half from the behaviour policy (a ``screen_random`` share of those
uniformly at random), half elite buffer rows with one agent's decisions redrawn from its policy; it
proposes the ``n`` unevaluated ones with the highest ``mean + screen_kappa * std`` of ``Q`` over the
ensemble (falling back to policy samples when every candidate was evaluated).

Update order, once per round (in ``observe``)
---------------------------------------------
1. append the round's ``(a, r)`` to the buffer (FM: draw each member's bootstrap weights of the new rows);
   recompute the critic's targets;
2. ``updates_per_round`` critic steps: FM full-batch, or MLP regression on uniform mini-batches (skipped
   when no critic is used);
3. the policy update: one mirror step (default); or ``updates_per_round`` off-policy Adam steps on buffer
   mini-batches (``policy_update="gradient"``; a fraction ``elite_fraction`` of each drawn from the top
   ``elite_quantile`` of the buffer by reward), or one on-policy step; advantages are computed with the
   current critic and current policies (no gradient); all agents are updated simultaneously (one summed
   loss); after each step the target policies are Polyak-averaged towards the policies;
4. (``shared_advantage="reward"``) the moving-average baseline absorbs the round's mean reward.

Proposals: ``propose(n)`` screens (above) or, with ``screening=0``, samples ``n`` joint actions from the
current policies mixed, per decision, with ``exploration`` uniform probability. All torch work runs on
``torch_threads`` threads (default 1), so a seed gives the same search on any machine.

MA2ML-Lite (the paper's simple variant) is the same class with switches: ``credit_assignment=False``,
``shared_advantage="reward"``, ``off_policy=False``, ``trust_region="none"``: REINFORCE on the shared
reward with a moving-average baseline, every sample used once.

Example::

    from agents.base import run
    from agents.ma2ml import MA2ML, MA2MLConfig
    result = run(MA2ML(), env, budget=200, seed=0, batch_size=8)
    paper = run(MA2ML(MA2MLConfig.paper()), env, budget=200, seed=0, batch_size=8)
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium
import numpy as np
import torch
from torch import nn

from agents.base import JointAction, torch_threads
from agents.common import AlgorithmConfig, ConfiguredSearch

__all__ = ["MA2ML", "MA2MLConfig", "MA2MLLite"]


# ---------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MA2MLConfig(AlgorithmConfig):
    """Hyper-parameters of MA2ML (defaults: the full method)."""

    credit_assignment: bool = True
    """Counterfactual advantage ``A_i = Q(a) - E_{a_i'~pi_i} Q(a_i', a_-i)`` per agent (paper's marginal
    contribution). ``False``: every agent gets the same advantage, see ``shared_advantage``."""

    shared_advantage: Literal["critic", "reward"] = "critic"
    """Advantage used when ``credit_assignment=False``: ``"critic"`` = ``Q(a) - E_{a~pi} Q(a)``;
    ``"reward"`` = ``r(a) - b`` with a moving-average baseline ``b`` (no critic at all)."""

    counterfactual: Literal["auto", "enumerate", "per_decision", "sample"] = "auto"
    """How ``E_{a_i'~pi_i} Q(a_i', a_-i)`` is computed (module docstring): exact enumeration of the
    agent's choices, exact per-decision marginalisation, Monte-Carlo, or ``"auto"`` (enumerate agents
    with at most ``enumerate_limit`` joint choices, per-decision otherwise)."""

    enumerate_limit: int = 64
    """Largest ``prod_j n_ij`` an agent may have to be enumerated exactly under ``"auto"``/``"enumerate"``."""

    counterfactual_samples: int = 16
    """Draws from ``pi_i`` per mini-batch row for ``counterfactual="sample"``, and draws from ``pi`` that
    estimate ``V = E_{a~pi} Q(a)`` for ``shared_advantage="critic"``."""

    off_policy: bool = True
    """Reuse the whole buffer for ``updates_per_round`` policy steps per round. ``False``: one on-policy
    step on the latest round's samples only."""

    trust_region: Literal["clip", "kl", "none"] = "clip"
    """Keeps each policy near its target policy: PPO-style clipped ratio ``pi/pi_target``, KL penalty
    ``kl_coef * KL(pi_target || pi)``, or none (plain policy gradient)."""

    clip_epsilon: float = 0.2
    """Clip range ``eps`` of the ratio ``pi_i(a_i)/pi_target_i(a_i)`` (``trust_region="clip"``); in (0, 1)."""

    kl_coef: float = 1.0
    """Weight ``beta`` of ``KL(pi_target || pi)`` (``trust_region="kl"``); > 0."""

    target_tau: float = 1.0
    """Polyak rate of the target policies, ``theta_target <- (1-tau) theta_target + tau theta``; in (0, 1]."""

    updates_per_round: int = 16
    """Critic regression steps per round, and policy steps per round when ``off_policy``; >= 1."""

    minibatch_size: int = 64
    """Rows per mini-batch (drawn with replacement from the buffer); >= 1."""

    policy_lr: float = 0.05
    """Adam learning rate of the policy logits; > 0."""

    entropy_coef: float = 0.0
    """Weight of the entropy bonus ``H(pi_i)`` summed over decisions; >= 0."""

    critic: Literal["mlp", "fm"] = "mlp"
    """The centralised critic: ``"mlp"``, an MLP on the one-hot joint action (the paper's), fitted by
    ``updates_per_round`` mini-batch AdamW steps per round; ``"fm"``, a factorisation machine (per-decision
    terms plus rank-``critic_rank`` pairwise interactions; our extension), fitted full-batch by
    ``updates_per_round`` Adam steps per round, warm-started, each ensemble member on its own Poisson
    bootstrap of the buffer, ridge penalty ``critic_l2``. Its counterfactuals are closed-form."""

    critic_rank: int = 4
    """Rank of the factorisation machine's pairwise interactions (``critic="fm"``); >= 1."""

    critic_l2: float = 1.0
    """Ridge penalty on the factorisation machine's weights, in units of one evaluation (``critic="fm"``);
    >= 0."""

    critic_hidden: int = 64
    """Width of the critic's hidden layers; >= 1."""

    critic_layers: int = 2
    """Number of hidden layers of the critic MLP; >= 1."""

    critic_ensemble: int = 4
    """Independent critics (different initialisations) whose mean is ``Q``; >= 1."""

    critic_lr: float | None = None
    """Adam learning rate of the critic; > 0. ``None``: 1e-2 for the MLP, 5e-2 for the FM (full-batch)."""

    critic_weight_decay: float = 1e-4
    """AdamW weight decay of the critic; >= 0."""

    critic_targets: Literal["zscore", "rank"] = "rank"
    """What the critic regresses on: ``"zscore"``, the rewards standardised over the buffer; ``"rank"``,
    their normal scores (a Gaussian copula: ``Phi^-1((rank - 1/2) / n)``), which only keeps their order, so
    a few failed or outlying evaluations do not dominate the fit."""

    elite_fraction: float = 0.75
    """Fraction of each off-policy policy mini-batch drawn from the best ``elite_quantile`` of the buffer
    by reward (our extension, not in the paper; 0 = the paper's uniform replay); in [0, 1]. Evaluating
    counterfactuals at the best pipelines found so far asks "which choice of agent i is best *given the
    others' best choices*", which lets agents coordinate on optima surrounded by miscoordination
    penalties (relative overgeneralisation), where expected-return learners settle on the safe action."""

    elite_quantile: float = 0.01
    """Top fraction of the buffer (by reward) that elite rows come from; in (0, 1]."""

    exploration: float = 0.05
    """Per-decision probability mass mixed uniformly into proposals; in [0, 1]."""

    screening: int = 32
    """Candidates screened by the critic per proposed joint action (0: off, proposals are plain policy
    samples, as in the paper). Half the candidates are policy samples, half are elite buffer rows with one
    agent's decisions redrawn from its policy; the unevaluated ones with the highest ensemble mean plus one
    standard deviation of ``Q`` are proposed. Our extension; >= 0."""

    policy_update: Literal["gradient", "mirror"] = "mirror"
    """How policies move each round. ``"gradient"``: ``updates_per_round`` Adam steps on the trust-region
    objective (``trust_region``; the paper's actor update). ``"mirror"``: one closed-form KL-regularised
    step per round, ``pi_ij(k) ∝ pi~_ij(k) exp(eta A_ij(k))`` with ``eta = mirror_step`` (the maximiser of
    ``E_pi[A] - KL(pi || pi~) / eta``), where ``A_ij(k)`` is the counterfactual advantage of *every* value
    ``k`` of decision ``j`` of agent ``i``, averaged over ``minibatch_size`` replayed pipelines (elite-
    weighted as the gradient steps are) and divided by its root-mean-square over the agent's values. Our
    extension (module docstring)."""

    mirror_step: float = 0.5
    """Step size ``eta`` of ``policy_update="mirror"`` (per-agent normalised advantages); > 0."""

    screen_kappa: float = 1.0
    """Screening score ``mean + screen_kappa * std`` of ``Q`` over the ensemble (optimism); >= 0."""

    screen_random: float = 0.0
    """Fraction of the screened candidates drawn uniformly at random instead of from the policy (keeps the
    critic looking away from where the policy went); in [0, 1]."""

    torch_threads: int | None = 1
    """Torch intra-op threads while the algorithm computes (restored afterwards); ``None`` leaves torch's
    setting. One thread makes a search the same at any machine's thread count (reductions split across
    threads round differently) and is faster for these small tensors."""

    baseline_decay: float = 0.9
    """Decay of the moving-average reward baseline ``b`` (``shared_advantage="reward"``); in [0, 1)."""

    normalize_advantage: bool = True
    """Divide advantages by their root-mean-square over the mini-batch (scale-free rewards)."""

    def check(self) -> None:
        choices = {
            "shared_advantage": ("critic", "reward"),
            "counterfactual": ("auto", "enumerate", "per_decision", "sample"),
            "trust_region": ("clip", "kl", "none"),
            "critic_targets": ("zscore", "rank"),
            "critic": ("mlp", "fm"),
            "policy_update": ("gradient", "mirror"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in (
            "enumerate_limit",
            "counterfactual_samples",
            "updates_per_round",
            "minibatch_size",
            "critic_hidden",
            "critic_layers",
            "critic_ensemble",
            "critic_rank",
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if self.critic_lr is not None and not self.critic_lr > 0:
            raise ValueError(f"critic_lr must be > 0 or None, got {self.critic_lr!r}")
        for name in ("policy_lr", "kl_coef", "mirror_step"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("entropy_coef", "critic_weight_decay", "critic_l2", "screen_kappa"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 < self.clip_epsilon < 1:
            raise ValueError(f"clip_epsilon must lie in (0, 1), got {self.clip_epsilon!r}")
        if not 0 < self.target_tau <= 1:
            raise ValueError(f"target_tau must lie in (0, 1], got {self.target_tau!r}")
        for name in ("elite_fraction", "exploration", "screen_random"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)!r}")
        if not 0 < self.elite_quantile <= 1:
            raise ValueError(f"elite_quantile must lie in (0, 1], got {self.elite_quantile!r}")
        if not 0 <= self.baseline_decay < 1:
            raise ValueError(f"baseline_decay must lie in [0, 1), got {self.baseline_decay!r}")
        t = self.torch_threads
        if t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < 1):
            raise ValueError(f"torch_threads must be an integer >= 1 or None, got {t!r}")
        if isinstance(self.screening, bool) or not isinstance(self.screening, int) or self.screening < 0:
            raise ValueError(f"screening must be an integer >= 0, got {self.screening!r}")

    @property
    def uses_critic(self) -> bool:
        """Whether a critic is fitted (everything except the pure-reward shared advantage)."""
        return self.credit_assignment or self.shared_advantage == "critic"

    @classmethod
    def paper(cls, **overrides: Any) -> MA2MLConfig:
        """The paper's reading (this library's MA2ML up to version 0.x): an MLP critic on z-scored rewards,
        ``updates_per_round`` Adam steps of the clipped trust-region objective around Polyak (tau 0.1)
        target policies, proposals sampled from the policies (no screening)."""
        base = {
            "critic": "mlp",
            "critic_targets": "zscore",
            "critic_ensemble": 1,
            "policy_update": "gradient",
            "target_tau": 0.1,
            "screening": 0,
            "elite_quantile": 0.03,
        }
        return cls(**{**base, **overrides})

    @classmethod
    def lite(cls, **overrides: Any) -> MA2MLConfig:
        """MA2ML-Lite: REINFORCE on the shared reward, moving-average baseline, on-policy, no critic."""
        base = {
            "credit_assignment": False,
            "shared_advantage": "reward",
            "off_policy": False,
            "trust_region": "none",
            "elite_fraction": 0.0,
        }
        return cls.paper(**{**base, **overrides})


# ---------------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------------
class MLPCritic(nn.Module):
    """``Q(a)``: an ensemble of MLPs on the one-hot joint action, batched over members (the paper's critic).

    The first layer of an MLP on a one-hot vector is a sum of embedding rows, one per decision, so the
    critic takes column indices ``cols [B, n_dec]``; counterfactual inputs reuse the summed
    pre-activation and swap rows (:meth:`swap`, :meth:`replace`). Shapes: ``E`` members, ``H`` width.
    """

    def __init__(
        self, n_cols: int, n_dec: int, hidden: int, layers: int, ensemble: int, generator: torch.Generator
    ) -> None:
        super().__init__()

        def uniform(*shape: int, bound: float) -> nn.Parameter:
            return nn.Parameter((torch.rand(*shape, generator=generator) * 2 - 1) * bound)

        e, h = ensemble, hidden
        self.embed = uniform(e, n_cols, h, bound=n_dec**-0.5)  # first layer weights, one row per column
        self.bias0 = uniform(e, 1, h, bound=n_dec**-0.5)
        self.weights = nn.ParameterList([uniform(e, h, h, bound=h**-0.5) for _ in range(layers - 1)])
        self.biases = nn.ParameterList([uniform(e, 1, h, bound=h**-0.5) for _ in range(layers - 1)])
        self.out_w = uniform(e, h, 1, bound=h**-0.5)
        self.out_b = nn.Parameter(torch.zeros(e, 1, 1))

    def head(self, pre: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """The rest of the MLP on pre-activations ``[E, ..., H]`` -> ``Q [E, ...]``.

        ``inplace=True`` (no-grad callers with a temporary ``pre``) overwrites ``pre`` to save memory traffic.
        """
        shape = pre.shape[:-1]
        h = pre.reshape(shape[0], -1, pre.shape[-1])
        h = h.relu_() if inplace else torch.relu(h)
        for w, b in zip(self.weights, self.biases):
            h = torch.bmm(h, w).add_(b).relu_() if inplace else torch.relu(torch.baddbmm(b, h, w))
        return torch.baddbmm(self.out_b, h, self.out_w).reshape(shape)

    def forward(self, cols: torch.Tensor) -> torch.Tensor:
        """``Q`` of each member for joint actions ``cols [B, n_dec]`` (column indices): ``[E, B]``."""
        return self.head(self.embed[:, cols].sum(2) + self.bias0)

    @torch.no_grad()
    def swap(self, cols: torch.Tensor, alt: torch.Tensor, dec: torch.Tensor) -> torch.Tensor:
        """``Q`` with decision ``dec[c]`` of each row set to column ``alt[c]``, every ``c``: ``[E, B, C]``."""
        taken = self.embed[:, cols]  # [E, B, n_dec, H]
        pre = taken.sum(2) + self.bias0  # [E, B, H]
        # gather from the small "pre without decision j" tensor, then add in place: [E, B, C, H]
        out = (pre[:, :, None, :] - taken)[:, :, dec, :].add_(self.embed[:, None, alt, :])
        return self.head(out, inplace=True)

    @torch.no_grad()
    def replace(self, cols: torch.Tensor, sl: slice, choices: torch.Tensor) -> torch.Tensor:
        """``Q`` with the decisions ``sl`` of each row replaced by each of ``choices`` (columns ``[M, n]``,
        or ``[B, M, n]`` per row): ``[E, B, M]``."""
        taken = self.embed[:, cols]
        own = (taken.sum(2) + self.bias0) - taken[:, :, sl, :].sum(2)  # [E, B, H] without decisions sl
        new = self.embed[:, choices].sum(-2)  # [E, M, H] or [E, B, M, H]
        return self.head(own[:, :, None, :] + (new[:, None] if choices.dim() == 2 else new))


class FMCritic(nn.Module):
    """``Q(a) = b + sum_j w[a_j] + sum_{j<k} <v[a_j], v[a_k]>``: an ensemble of factorisation machines on the
    one-hot joint action (Rendle 2010), batched over members; our alternative to the paper's MLP.

    Per-decision terms plus rank-``R`` pairwise interactions between any two decisions (within and across
    agents). With ``s = sum_j v[a_j]`` the pairwise sum is ``(|s|^2 - sum_j |v[a_j]|^2) / 2``, so a
    counterfactual that swaps decision ``j`` to column ``c`` is closed-form:
    ``Q' = Q + w[c] - w[a_j] + <v[c] - v[a_j], s - v[a_j]>``.
    """

    def __init__(self, n_cols: int, rank: int, ensemble: int, generator: torch.Generator) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(ensemble, 1))
        self.w = nn.Parameter(torch.zeros(ensemble, n_cols))
        self.v = nn.Parameter(torch.randn(ensemble, n_cols, rank, generator=generator) * 0.1)

    @staticmethod
    def _q(bias: torch.Tensor, lin: torch.Tensor, s: torch.Tensor, sq: torch.Tensor) -> torch.Tensor:
        return bias + lin + 0.5 * ((s * s).sum(-1) - sq)

    def forward(self, cols: torch.Tensor) -> torch.Tensor:
        """``Q`` of each member for joint actions ``cols [B, n_dec]`` (column indices): ``[E, B]``."""
        v = self.v[:, cols]  # [E, B, n_dec, R]
        return self._q(self.bias, self.w[:, cols].sum(2), v.sum(2), (v * v).sum((2, 3)))

    @torch.no_grad()
    def swap(self, cols: torch.Tensor, alt: torch.Tensor, dec: torch.Tensor) -> torch.Tensor:
        """``Q`` with decision ``dec[c]`` of each row set to column ``alt[c]``, every ``c``: ``[E, B, C]``."""
        v, w = self.v[:, cols], self.w[:, cols]  # [E, B, n_dec, R], [E, B, n_dec]
        s = v.sum(2)  # [E, B, R]
        q = self._q(self.bias, w.sum(2), s, (v * v).sum((2, 3)))  # [E, B]
        v_t, w_t = v[:, :, dec], w[:, :, dec]  # the taken row of each c's decision: [E, B, C, R], [E, B, C]
        v_c = self.v[:, alt][:, None]  # [E, 1, C, R]
        return q[..., None] + self.w[:, alt][:, None] - w_t + ((v_c - v_t) * (s[:, :, None] - v_t)).sum(-1)

    @torch.no_grad()
    def replace(self, cols: torch.Tensor, sl: slice, choices: torch.Tensor) -> torch.Tensor:
        """``Q`` with the decisions ``sl`` of each row replaced by each of ``choices`` (columns ``[M, n]``,
        or ``[B, M, n]`` per row): ``[E, B, M]``."""
        v, w = self.v[:, cols], self.w[:, cols]  # [E, B, n_dec, R], [E, B, n_dec]
        s = (v.sum(2) - v[:, :, sl].sum(2))[:, :, None]  # [E, B, 1, R]
        lin = (w.sum(2) - w[:, :, sl].sum(2))[:, :, None]
        sq = ((v * v).sum((2, 3)) - (v[:, :, sl] ** 2).sum((2, 3)))[:, :, None]
        nv, nw = self.v[:, choices], self.w[:, choices]  # [E, (B,) M, n, R], [E, (B,) M, n]
        if choices.dim() == 2:
            nv, nw = nv[:, None], nw[:, None]
        return self._q(self.bias[..., None], lin + nw.sum(-1), s + nv.sum(-2), sq + (nv * nv).sum((-1, -2)))


def _log_probs(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-decision log-probabilities ``[n_dec, max_n]`` (``-inf`` on padding)."""
    return torch.log_softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)


# ---------------------------------------------------------------------------------------------------
# Replay buffer: every evaluated (a, r)
# ---------------------------------------------------------------------------------------------------
class ReplayBuffer:
    """Every evaluated joint action (flat decision indices) and its reward, in evaluation order."""

    def __init__(self, n_dec: int) -> None:
        self.actions = np.zeros((0, n_dec), dtype=np.int64)
        self.rewards = np.zeros(0, dtype=np.float64)
        self.rounds = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rewards)

    def add(self, actions: np.ndarray, rewards: np.ndarray, rnd: int) -> None:
        self.actions = np.concatenate([self.actions, actions])
        self.rewards = np.concatenate([self.rewards, rewards])
        self.rounds = np.concatenate([self.rounds, np.full(len(rewards), rnd, dtype=np.int64)])

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"actions": self.actions.copy(), "rewards": self.rewards.copy(), "rounds": self.rounds.copy()}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        self.actions = np.array(state["actions"], dtype=np.int64)
        self.rewards = np.array(state["rewards"], dtype=np.float64)
        self.rounds = np.array(state["rounds"], dtype=np.int64)


# ---------------------------------------------------------------------------------------------------
# The algorithm
# ---------------------------------------------------------------------------------------------------
class MA2ML(ConfiguredSearch):
    """MA2ML search (module docstring): factorised policies, centralised critic on a replay buffer of every
    evaluation, counterfactual advantages, simultaneous trust-region updates around target policies.

    Args:
        config: the hyper-parameters; defaults to ``MA2MLConfig()`` (``MA2MLConfig.lite()`` for Lite).
        **overrides: fields of the config to replace, e.g. ``MA2ML(credit_assignment=False)``.
    """

    name = "ma2ml"
    config_class = MA2MLConfig

    @staticmethod
    def default_config() -> MA2MLConfig:
        return MA2MLConfig()

    # -- setup -------------------------------------------------------------------------------------------
    def setup(self, action_spaces: Mapping[str, gymnasium.Space], seed: int) -> None:
        super().setup(action_spaces, seed)
        cfg = self.config
        lay = self.codec
        self.torch_gen = torch.Generator().manual_seed(int(seed))
        self._mask = torch.as_tensor(lay.mask)
        self._nvec = torch.as_tensor(lay.nvec)
        self._col_offset = torch.as_tensor(lay.column_offset)
        self._dec_of_col = torch.as_tensor(lay.decision_of_column)
        self._k_of_col = torch.as_tensor(lay.value_of_column)
        # Policies: uniform at the start (zero logits); target policies start equal.
        self.logits = nn.Parameter(torch.zeros(lay.size, lay.max_choices))
        self.target_logits = torch.zeros(lay.size, lay.max_choices)
        self.policy_opt = torch.optim.Adam([self.logits], lr=cfg.policy_lr)
        if cfg.critic == "fm":
            self.critic = FMCritic(lay.n_columns, cfg.critic_rank, cfg.critic_ensemble, self.torch_gen)
            self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr or 5e-2)
        else:
            self.critic = MLPCritic(
                lay.n_columns, lay.size, cfg.critic_hidden, cfg.critic_layers, cfg.critic_ensemble,
                self.torch_gen,
            )
            self.critic_opt = torch.optim.AdamW(
                self.critic.parameters(), lr=cfg.critic_lr or 1e-2, weight_decay=cfg.critic_weight_decay
            )
        self._boot = np.ones((cfg.critic_ensemble, 0))  # FM: per-member bootstrap weight of each buffer row
        self.buffer = ReplayBuffer(lay.size)
        self.baseline: float | None = None
        self.rounds_done = 0
        self._reward_mean, self._reward_std = 0.0, 1.0
        self._build_units()

    def _build_units(self) -> None:
        """Credit units: each gets its own advantage; an agent, or one decision of an agent."""
        cfg, lay = self.config, self.codec
        unit_of_dec = np.zeros(lay.size, dtype=np.int64)
        self._unit_mode: list[str] = []  # per unit: "enumerate", "sample", "decision", "shared"
        self._unit_agent: list[int] = []
        self._enum: dict[int, torch.Tensor] = {}  # agent -> all its choices [M, n_i]
        u = 0
        for i, (sl, size) in enumerate(zip(lay.slices, lay.agent_cardinality)):
            if not cfg.credit_assignment:
                mode = "shared"
            elif cfg.counterfactual == "sample":
                mode = "sample"
            elif cfg.counterfactual == "per_decision":
                mode = "decision"
            elif size <= cfg.enumerate_limit:
                mode = "enumerate"
            elif cfg.counterfactual == "enumerate":
                raise ValueError(
                    f"counterfactual='enumerate' needs every agent to have at most enumerate_limit="
                    f"{cfg.enumerate_limit} joint choices; agent {lay.agents[i]!r} has {size:.3g}. Raise "
                    "enumerate_limit or use counterfactual='auto'"
                )
            else:
                mode = "decision"
            if mode == "decision" and lay.sizes[i] == 1:
                mode = "enumerate"  # one decision: per-decision and enumeration coincide
            if mode == "enumerate":
                grids = np.meshgrid(*[np.arange(n) for n in lay.nvec[sl]], indexing="ij")
                self._enum[i] = torch.as_tensor(np.stack([g.reshape(-1) for g in grids], axis=1))
            if mode == "decision":
                for d in range(sl.start, sl.stop):
                    unit_of_dec[d] = u
                    self._unit_mode.append(mode)
                    self._unit_agent.append(i)
                    u += 1
            else:
                unit_of_dec[sl] = u
                self._unit_mode.append(mode)
                self._unit_agent.append(i)
                u += 1
        self.n_units = u
        agent_of_dec = np.repeat(np.arange(len(lay.agents)), lay.sizes)
        self._unit_of_col = torch.as_tensor(unit_of_dec[lay.decision_of_column])
        self._agent_of_col = torch.as_tensor(agent_of_dec[lay.decision_of_column])
        unit_of_col = unit_of_dec[lay.decision_of_column]
        self._cols_per_unit = torch.as_tensor(np.bincount(unit_of_col, minlength=u)).float()
        self._cols_per_agent = torch.as_tensor(np.bincount(agent_of_dec[lay.decision_of_column])).float()
        self._unit_of_dec = torch.as_tensor(unit_of_dec)
        # Columns of decisions whose units are per-decision: counterfactuals swap one decision's row.
        dec_units = [self._unit_mode[unit_of_dec[d]] == "decision" for d in range(lay.size)]
        self._pd_decs = torch.as_tensor(np.flatnonzero(dec_units))
        self._pd_cols = torch.as_tensor(np.flatnonzero(np.asarray(dec_units)[lay.decision_of_column]))

    # -- policies -----------------------------------------------------------------------------------------
    def probabilities(self) -> dict[str, list[np.ndarray]]:
        """Current policy: per agent, one probability vector per decision."""
        with torch.no_grad():
            p = _log_probs(self.logits, self._mask).exp().numpy()
        return {
            a: [p[d, : self.codec.nvec[d]].copy() for d in range(sl.start, sl.stop)]
            for a, sl in zip(self.codec.agents, self.codec.slices)
        }

    def greedy(self) -> JointAction:
        """The most probable joint action of the current policies (per-decision argmax)."""
        with torch.no_grad():
            flat = self.logits.masked_fill(~self._mask, float("-inf")).argmax(-1).numpy()
        return self.codec.decode(flat)

    def metrics(self) -> dict[str, Any]:
        """Diagnostics of the last round: mean critic loss (standardised rewards), mean policy loss, and per
        agent the mean |A_i| of its credit units before normalisation (the credit it was given)."""
        return dict(getattr(self, "_metrics", {}))

    def propose(self, n: int) -> list[JointAction]:
        """Sample ``n`` joint actions from the policies mixed with ``exploration`` uniform mass (with
        ``screening``: the best of ``screening * n`` candidates by the critic, see the config)."""
        lay, cfg = self.codec, self.config
        k = cfg.screening * n
        with torch_threads(cfg.torch_threads):
            screen = k and cfg.uses_critic and len(self.buffer)
            flat = self._screen(n, k) if screen else self._behaviour_samples(n)
        return [lay.decode(row) for row in flat]

    def _behaviour_samples(self, n: int) -> np.ndarray:
        """``n`` flat joint actions from the policies mixed with ``exploration`` uniform mass."""
        lay, eps = self.codec, self.config.exploration
        with torch.no_grad():
            p = _log_probs(self.logits, self._mask).exp().double().numpy()
        p = (1 - eps) * p + eps * lay.mask / lay.nvec[:, None]
        cdf = np.cumsum(p, axis=1)
        u = self.rng.random((n, lay.size, 1)) * cdf[None, :, -1:]
        return np.minimum((cdf[None] < u).sum(-1), lay.nvec - 1)  # [n, n_dec]

    def _screen(self, n: int, k: int) -> np.ndarray:
        """The ``n`` best unevaluated of ``k`` candidates by ``Q`` mean + std over the ensemble."""
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

    def _sample_policy(self, shape: tuple[int, ...], decs: slice | None = None) -> torch.Tensor:
        """Draws from the current policy (no exploration): ``[*shape, n_dec_in_decs]``."""
        with torch.no_grad():
            p = _log_probs(self.logits, self._mask).exp().double().numpy()
        if decs is not None:
            p = p[decs]
        cdf = np.cumsum(p, axis=1)
        u = self.rng.random((*shape, len(p), 1)) * cdf[:, -1:]
        nvec = self.codec.nvec if decs is None else self.codec.nvec[decs]
        return torch.as_tensor(np.minimum((cdf < u).sum(-1), nvec - 1))

    # -- observe: buffer + update ---------------------------------------------------------------------------
    def observe(self, actions: Sequence[JointAction], scores: Sequence[float]) -> None:
        """Store the round's evaluations and run the round's updates (module docstring, update order)."""
        with torch_threads(self.config.torch_threads):
            self._observe(actions, scores)

    def _observe(self, actions: Sequence[JointAction], scores: Sequence[float]) -> None:
        if len(actions) != len(scores):
            raise ValueError(f"got {len(actions)} actions but {len(scores)} scores")
        if not actions:
            return
        cfg = self.config
        flat = np.stack([self.codec.encode(a) for a in actions])
        r = np.asarray(scores, dtype=np.float64)
        if not np.all(np.isfinite(r)):
            raise ValueError("scores must be finite (the search loop maps failures to a defined score)")
        start = len(self.buffer)
        self.buffer.add(flat, r, self.rounds_done)
        self._reward_mean = float(self.buffer.rewards.mean())
        std = float(self.buffer.rewards.std())
        self._reward_std = std if std > 1e-12 else 1.0
        self._targets = self._critic_targets(self.buffer.rewards)
        critic_losses, policy_losses, self._adv_sums = [], [], torch.zeros(self.n_units)
        if cfg.uses_critic and cfg.critic == "fm":
            e = cfg.critic_ensemble
            new = self.rng.poisson(1.0, size=(e, len(r))) if e > 1 else np.ones((1, len(r)))
            self._boot = np.concatenate([self._boot, new], axis=1)
            critic_losses = [self.fit_fm() for _ in range(cfg.updates_per_round)]
        elif cfg.uses_critic:
            for _ in range(cfg.updates_per_round):
                critic_losses.append(self.critic_step(self._uniform_rows(cfg.minibatch_size)))
        if cfg.policy_update == "mirror":
            rows = self._policy_rows(cfg.minibatch_size) if cfg.off_policy else np.arange(start, len(self.buffer))
            policy_losses.append(self.mirror_step(rows))
        elif cfg.off_policy:
            for _ in range(cfg.updates_per_round):
                policy_losses.append(self.policy_step(self._policy_rows(cfg.minibatch_size)))
        else:
            policy_losses.append(self.policy_step(np.arange(start, len(self.buffer))))
        # the round's diagnostics, for loggers (agents.tracking reads metrics())
        unit_agent = torch.as_tensor(self._unit_agent)
        per_agent = torch.zeros(len(self.codec.agents)).index_add_(0, unit_agent, self._adv_sums)
        counts = torch.zeros(len(self.codec.agents)).index_add_(0, unit_agent, torch.ones(self.n_units))
        per_agent = per_agent / (counts * len(policy_losses)).clamp(min=1)
        self._metrics = {
            "policy_loss": float(np.mean(policy_losses)),
            "mean_abs_advantage": dict(zip(self.codec.agents, per_agent.tolist())),
            **({"critic_loss": float(np.mean(critic_losses))} if critic_losses else {}),
        }
        if cfg.shared_advantage == "reward":
            m = float(r.mean())
            self.baseline = (
                m
                if self.baseline is None
                else cfg.baseline_decay * self.baseline + (1 - cfg.baseline_decay) * m
            )
        self.rounds_done += 1

    def _uniform_rows(self, n: int) -> np.ndarray:
        return self.rng.integers(0, len(self.buffer), size=n)

    def _policy_rows(self, n: int) -> np.ndarray:
        cfg = self.config
        n_elite = round(cfg.elite_fraction * n)
        rows = self._uniform_rows(n - n_elite)
        if n_elite:
            rows = np.concatenate([rows, self._elite_rows(n_elite)])
        return rows

    def _elite_rows(self, n: int) -> np.ndarray:
        """``n`` buffer rows drawn uniformly from the best ``elite_quantile`` by reward."""
        k = max(1, int(np.ceil(self.config.elite_quantile * len(self.buffer))))
        # stable sort on -reward: ties keep evaluation order, so the choice is reproducible
        top = np.argsort(-self.buffer.rewards, kind="stable")[:k]
        return top[self.rng.integers(0, k, size=n)]

    def _cols(self, flat: torch.Tensor) -> torch.Tensor:
        return flat + self._col_offset

    def _critic_targets(self, rewards: np.ndarray) -> np.ndarray:
        """The critic's regression targets for every buffer row (see ``MA2MLConfig.critic_targets``)."""
        if self.config.critic_targets == "rank":
            from scipy.stats import norm, rankdata

            return norm.ppf((rankdata(rewards) - 0.5) / len(rewards))
        return (rewards - self._reward_mean) / self._reward_std

    def critic_step(self, rows: np.ndarray) -> float:
        """One regression step of ``Q`` on buffer rows: ``(Q(a) - r~)^2`` for every ensemble member."""
        cols = self._cols(torch.as_tensor(self.buffer.actions[rows]))
        target = torch.as_tensor(self._targets[rows]).float()
        loss = (self.critic(cols) - target).pow(2).mean()
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()
        return float(loss.detach())

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

    @torch.no_grad()
    def mirror_step(self, rows: np.ndarray) -> float:
        """The closed-form KL-regularised policy step (``policy_update="mirror"``) on replayed buffer rows;
        returns ``-E_pi[A]`` of the normalised advantages (the new policy's expected improvement, negated)."""
        cfg, lay = self.config, self.codec
        uniq, counts = np.unique(rows, return_counts=True)
        flat = torch.as_tensor(self.buffer.actions[uniq])
        wts = torch.as_tensor(counts / counts.sum()).float()  # [B]
        probs = _log_probs(self.logits, self._mask).exp()
        p_col = probs[self._dec_of_col, self._k_of_col]  # [n_cols]
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
        new_p = _log_probs(self.logits, self._mask).exp()[self._dec_of_col, self._k_of_col]
        return -float((new_p * adv).sum())

    @torch.no_grad()
    def advantages(self, flat: torch.Tensor, rows: np.ndarray | None = None) -> torch.Tensor:
        """Advantage of each credit unit for joint actions ``flat [B, n_dec]``: ``[B, n_units]``."""
        cfg, lay = self.config, self.codec
        b = flat.shape[0]
        if not cfg.uses_critic:  # shared r(a) - b
            r = torch.as_tensor(self.buffer.rewards[rows])
            base = self.baseline if self.baseline is not None else float(r.mean())
            return (r - base).float()[:, None].expand(b, self.n_units).clone()
        critic = self.critic
        cols = self._cols(flat)
        q = critic(cols).mean(0)  # [B]
        adv = torch.empty(b, self.n_units)
        if not cfg.credit_assignment:
            samples = self._sample_policy((cfg.counterfactual_samples,))
            v = critic(self._cols(samples)).mean()
            return (q - v)[:, None].expand(b, self.n_units).clone()
        probs = _log_probs(self.logits.detach(), self._mask).exp()  # [n_dec, max_n]
        if len(self._pd_cols):  # per-decision: swap decision j for every alternative column
            pc = self._pd_cols
            dec = self._dec_of_col[pc]
            q_alt = critic.swap(cols, pc, dec).mean(0)  # [B, C]
            w = probs[dec, self._k_of_col[pc]]  # [C]
            base = torch.zeros(b, lay.size).index_add_(1, dec, q_alt * w)  # [B, n_dec]
            decs = self._pd_decs
            adv[:, self._unit_of_dec[decs]] = q[:, None] - base[:, decs]
        for u, (mode, i) in enumerate(zip(self._unit_mode, self._unit_agent)):
            if mode not in ("enumerate", "sample"):
                continue
            sl = lay.slices[i]
            off = self._col_offset[sl]
            if mode == "enumerate":
                choices = self._enum[i]  # [M, n_i]
                w = probs[torch.arange(sl.start, sl.stop), choices].prod(-1)  # [M]
                adv[:, u] = q - (critic.replace(cols, sl, choices + off).mean(0) * w).sum(-1)
            else:
                draws = self._sample_policy((b, cfg.counterfactual_samples), sl)  # [B, M, n_i]
                adv[:, u] = q - critic.replace(cols, sl, draws + off).mean(0).mean(-1)
        return adv

    def policy_step(self, rows: np.ndarray) -> float:
        """One simultaneous update of every agent's policy on buffer rows, then the Polyak target update."""
        cfg, lay = self.config, self.codec
        flat = torch.as_tensor(self.buffer.actions[rows])
        # Elite rows repeat: evaluate the (costly) counterfactuals once per distinct buffer row.
        uniq, inverse = np.unique(rows, return_inverse=True)
        adv = self.advantages(torch.as_tensor(self.buffer.actions[uniq]), uniq)[torch.as_tensor(inverse)]
        if hasattr(self, "_adv_sums"):  # per-unit credit before normalisation, for metrics()
            self._adv_sums += adv.abs().mean(0)
        if cfg.normalize_advantage:
            adv = adv / (adv.pow(2).mean().sqrt() + 1e-8)
        dec_idx = torch.arange(lay.size)
        logp_all = _log_probs(self.logits, self._mask)
        logp = torch.zeros(len(rows), self.n_units).index_add_(1, self._unit_of_dec, logp_all[dec_idx, flat])
        if cfg.trust_region == "none":
            objective = (logp * adv).mean(0).sum()
        else:
            logp_t_all = _log_probs(self.target_logits, self._mask)
            logp_t = torch.zeros_like(logp).index_add_(1, self._unit_of_dec, logp_t_all[dec_idx, flat])
            ratio = torch.exp(logp - logp_t)
            if cfg.trust_region == "clip":
                clipped = ratio.clamp(1 - cfg.clip_epsilon, 1 + cfg.clip_epsilon)
                objective = torch.minimum(ratio * adv, clipped * adv).mean(0).sum()
            else:
                # padded entries are -inf: zero them *before* products so no 0 * inf reaches autograd
                lp, lp_t = logp_all.masked_fill(~self._mask, 0.0), logp_t_all.masked_fill(~self._mask, 0.0)
                kl = (lp_t.exp() * self._mask * (lp_t - lp)).sum()
                objective = (ratio * adv).mean(0).sum() - cfg.kl_coef * kl
        if cfg.entropy_coef > 0:
            entropy = -(logp_all.exp() * logp_all.masked_fill(~self._mask, 0.0)).sum()
            objective = objective + cfg.entropy_coef * entropy
        loss = -objective
        self.policy_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.policy_opt.step()
        with torch.no_grad():
            self.target_logits.lerp_(self.logits, cfg.target_tau)
        return float(loss.detach())

    # -- checkpointing -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the search exactly (picklable, independent copies)."""
        return copy.deepcopy(
            {
                "version": 1,
                "config": dataclasses.asdict(self.config),
                "action_spaces": self.action_spaces,
                "seed": self.seed,
                "logits": self.logits.detach(),
                "target_logits": self.target_logits,
                "policy_opt": self.policy_opt.state_dict(),
                "critic": self.critic.state_dict(),
                "critic_opt": self.critic_opt.state_dict(),
                "buffer": self.buffer.state_dict(),
                "boot": self._boot,
                "np_rng": self.rng.bit_generator.state,
                "torch_rng": self.torch_gen.get_state(),
                "baseline": self.baseline,
                "rounds_done": self.rounds_done,
                "reward_stats": (self._reward_mean, self._reward_std),
            }
        )

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`; no :meth:`setup` needed before (the state holds the spaces)."""
        state = copy.deepcopy(dict(state))
        self.config = MA2MLConfig(**state["config"])
        self.setup(state["action_spaces"], state["seed"])
        with torch.no_grad():
            self.logits.copy_(state["logits"])
            self.target_logits.copy_(state["target_logits"])
        self.policy_opt.load_state_dict(state["policy_opt"])
        self.critic.load_state_dict(state["critic"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.buffer.load_state_dict(state["buffer"])
        self._boot = np.array(state["boot"], dtype=np.float64)
        self.rng.bit_generator.state = state["np_rng"]
        self.torch_gen.set_state(state["torch_rng"])
        self.baseline = state["baseline"]
        self.rounds_done = state["rounds_done"]
        self._reward_mean, self._reward_std = state["reward_stats"]


class MA2MLLite(MA2ML):
    """MA2ML-Lite: each agent runs REINFORCE on the shared reward with a moving-average baseline,
    on-policy (every sample used once), no critic: ``MA2ML`` with ``MA2MLConfig.lite()`` switches."""

    name = "ma2ml-lite"

    @staticmethod
    def default_config() -> MA2MLConfig:
        return MA2MLConfig.lite()
