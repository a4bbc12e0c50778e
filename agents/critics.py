"""The pieces both MA2MLs share (:mod:`agents.ma2ml`, the paper's; :mod:`agents.ma2ml_plus`, ours): the
centralised critics, the replay buffer and the per-decision log-probabilities of factorised policies.

A joint action is a flat row of decision indices in the codec's layout (``int64 [D]``); the critics take
*column* indices (decision index plus the decision's column offset, ``codec.column_offset``), i.e. the
positions of the ones of the one-hot joint action, ``cols [B, D]``, and every critic is an ensemble of
``E`` members batched along a leading axis (the paper's MA2ML uses ``E = 1``). Each critic answers the
counterfactual questions of credit assignment without recomputing whole joint actions:
``swap`` (one decision set to another value) and ``replace`` (one agent's decisions replaced).

* :class:`MLPCritic`: the paper's critic, an MLP on the one-hot joint action.
* :class:`FMCritic`: a factorisation machine (our extension; only :mod:`agents.ma2ml_plus` uses it).
* :class:`ReplayBuffer`: every evaluated ``(a, r)`` in evaluation order (the paper's replay buffer ``D``).
* :func:`log_probs`: ``log pi_ij`` of every value of every decision from padded logits.

A leaf module: it imports torch and numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from ma2ml_env.imports import import_module

# torch's optimizers import torch._dynamo on first use, which creates $TMPDIR/torchinductor_<user>: import it
# here, quietly, once (every MA2ML builds optimizers at set-up anyway, so this costs nothing extra)
import_module("torch._dynamo")

__all__ = ["FMCritic", "MLPCritic", "ReplayBuffer", "log_probs"]


class MLPCritic(nn.Module):
    """``Q(a)``: an ensemble of MLPs on the one-hot joint action, batched over members (the paper's critic;
    the paper fits one, ``ensemble=1``; our extension averages several).

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


def log_probs(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-decision log-probabilities ``[n_dec, max_n]`` (``-inf`` on padding)."""
    return torch.log_softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)


class ReplayBuffer:
    """The paper's replay buffer ``D``: every evaluated joint action (flat rows ``int64 [N, D]``), its reward,
    the round it was observed in and the fidelity level of the reward (0 at full fidelity; see
    :meth:`agents.ma2ml_plus.MA2MLPlus.observe_levels`), in evaluation order."""

    def __init__(self, n_dec: int) -> None:
        self.actions = np.zeros((0, n_dec), dtype=np.int64)
        self.rewards = np.zeros(0, dtype=np.float64)
        self.rounds = np.zeros(0, dtype=np.int64)
        self.levels = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rewards)

    def add(self, actions: np.ndarray, rewards: np.ndarray, rnd: int, levels: np.ndarray | None = None) -> None:
        self.actions = np.concatenate([self.actions, actions])
        self.rewards = np.concatenate([self.rewards, rewards])
        self.rounds = np.concatenate([self.rounds, np.full(len(rewards), rnd, dtype=np.int64)])
        lv = np.zeros(len(rewards), dtype=np.int64) if levels is None else np.asarray(levels, dtype=np.int64)
        self.levels = np.concatenate([self.levels, lv])

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"actions": self.actions.copy(), "rewards": self.rewards.copy(), "rounds": self.rounds.copy(),
                "levels": self.levels.copy()}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        self.actions = np.array(state["actions"], dtype=np.int64)
        self.rewards = np.array(state["rewards"], dtype=np.float64)
        self.rounds = np.array(state["rounds"], dtype=np.int64)
        self.levels = np.array(state.get("levels", np.zeros(len(self.rewards))), dtype=np.int64)
