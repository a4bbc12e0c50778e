"""The joint-action codec: one place that knows how a joint action of the agents is laid out.

A joint action is a dict ``{agent: action}``: a ``Discrete`` agent's action is one integer, a
``MultiDiscrete`` agent's a 1-d integer vector (one entry per decision). Search algorithms, the env and
the reward backends work on the *flat index vector* instead: every decision of every agent in agent
order, each as a 0-based index ``0 <= idx[d] < nvec[d]`` (the action value minus the space's ``start``).

    codec = JointActionCodec(env_action_spaces)        # {agent: Discrete | MultiDiscrete}
    idx = codec.encode(action)                         # {agent: action} -> int64 [D], validated
    codec.scaled(idx)                                  # float32 [D] in [0, 1]: idx / (nvec - 1)
    action = codec.decode(idx)                         # int64 [D] -> {agent: action}
    flats = codec.sample(rng, 8)                       # 8 uniform flat index vectors [8, D]
    codec.key(action)                                  # 'aug=3,1,...;nas=...' (canonical, for caches)
    batch = codec.validate_batch(rows)                 # any [K, D] integers -> int64 [K, D], validated

:meth:`JointActionCodec.validate` is the one validation of a per-agent joint action (the PettingZoo
boundary): it names the wrong keys, the wrong length, the first out-of-range value (and its decision, when
the codec knows decision names), non-integer values and booleans. :meth:`~JointActionCodec.encode` checks
the common case (right keys, 1-d int64 arrays in range) in a few microseconds and falls back to it for
anything else. :meth:`JointActionCodec.validate_batch` is
the one validation of a batch of flat joint actions (what search loops and ``env.evaluate`` take).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium
import numpy as np

__all__ = ["JointActionCodec"]

_INT64 = np.dtype(np.int64)
_UINT64 = np.dtype(np.uint64)
_FLOAT32 = np.dtype(np.float32)
_empty = np.empty


class JointActionCodec:
    """Flat index vectors <-> joint actions ``{agent: action}`` over per-agent discrete action spaces.

    Args:
        action_spaces: ``{agent: space}`` in agent order; each space a ``gymnasium.spaces.Discrete`` or a
            1-d ``gymnasium.spaces.MultiDiscrete`` (any ``start``).
        decision_names: optional ``{agent: [name of each decision]}``; error messages then name the
            decision of an out-of-range value.
        kind: what an agent is called in error messages (``"agent"``; the env's search space says
            ``"module"``).

    Attributes:
        agents: the agent names, in order.
        nvec: int64 ``[D]``, the number of choices of every decision (agent order).
        start: int64 ``[D]``, the smallest action value of every decision (the space's ``start``).
        sizes: decisions per agent (1 for ``Discrete``).
        offsets: index of every agent's first decision in the flat vector.
        slices: ``slice`` of every agent's decisions in the flat vector, in agent order.
        slice_of: the same slices by agent name.
        discrete: ``{agent: True}`` for ``Discrete`` agents (their action is one integer).
        agent_of: int64 ``[D]``, the agent position of every decision.
        size: ``D``, the number of decisions.

    One-hot layout (every value of every decision is one column; for critics and encoders):
    ``n_columns = nvec.sum()``, ``column_offset[d]`` (first column of decision ``d``),
    ``decision_of_column``, ``value_of_column``, ``max_choices = nvec.max()``, ``mask`` (bool
    ``[D, max_choices]``: which entries of a padded per-decision table are real choices) and
    ``agent_cardinality`` (``prod_j n_ij`` per agent, as float).

    Raises:
        TypeError: a space that is neither ``Discrete`` nor a 1-d ``MultiDiscrete``.
        ValueError: no agents.
    """

    def __init__(self, action_spaces: Mapping[str, gymnasium.Space], *,
                 decision_names: Mapping[str, Sequence[str]] | None = None, kind: str = "agent") -> None:
        if not action_spaces:
            raise ValueError("a joint action needs at least one agent; got no action spaces")
        self.agents: tuple[str, ...] = tuple(action_spaces)
        self.kind = kind
        nvecs, starts, self.discrete = [], [], {}
        for agent, space in action_spaces.items():
            if isinstance(space, gymnasium.spaces.Discrete):
                nvecs.append(np.array([space.n], dtype=np.int64))
                starts.append(np.array([space.start], dtype=np.int64))
                self.discrete[agent] = True
            elif isinstance(space, gymnasium.spaces.MultiDiscrete):
                n = np.asarray(space.nvec)
                if n.ndim != 1:
                    raise TypeError(f"agent {agent!r}: only 1-d MultiDiscrete spaces are supported, got nvec "
                                    f"of shape {n.shape}")
                nvecs.append(n.astype(np.int64))
                starts.append(np.broadcast_to(np.asarray(space.start), n.shape).astype(np.int64))
                self.discrete[agent] = False
            else:
                raise TypeError(f"agent {agent!r}: joint actions support Discrete and MultiDiscrete spaces, "
                                f"got {type(space).__name__}")
        self.sizes: tuple[int, ...] = tuple(len(n) for n in nvecs)
        self.offsets: tuple[int, ...] = tuple(int(x) for x in np.cumsum((0, *self.sizes))[:-1])
        self.slices: tuple[slice, ...] = tuple(slice(o, o + s) for o, s in zip(self.offsets, self.sizes))
        self.slice_of: dict[str, slice] = dict(zip(self.agents, self.slices))
        self.nvec: np.ndarray = np.concatenate(nvecs)
        self.start: np.ndarray = np.concatenate(starts)
        self.size = int(self.nvec.size)
        self.agent_of: np.ndarray = np.repeat(np.arange(len(self.agents)), self.sizes).astype(np.int64)
        self.shapes: dict[str, tuple[int, ...]] = {
            a: (() if self.discrete[a] else (s,)) for a, s in zip(self.agents, self.sizes)}
        self._nvec_of = {a: self.nvec[sl] for a, sl in self.slice_of.items()}
        self._start_of = {a: self.start[sl] for a, sl in self.slice_of.items()}
        self._names = {a: tuple(decision_names[a]) for a in self.agents} if decision_names else None
        # the fast path: MultiDiscrete agents only, every start 0 (the env's search space)
        self._fast = not any(self.discrete.values()) and not self.start.any()
        self._fast_sig = [((s,), _INT64) for s in self.sizes]  # 1-d int64 arrays of the agents' sizes
        self._nvec_u = self.nvec.astype(np.uint64)
        #: float32 ``[D]``: ``1 / (nvec - 1)`` (1 for a one-choice decision), what :meth:`scaled` multiplies by
        self.unit_scale: np.ndarray = (1.0 / np.maximum(self.nvec - 1, 1)).astype(np.float32)
        self._scaled_scratch = np.empty(self.size, np.float32)  # the kernel's scaled output nobody asked for
        self._n_agents = len(self.agents)
        self._sizes_nvec = np.concatenate([self.sizes, self.nvec]).astype(np.int64)  # the kernel's arguments
        # the compiled check of encode (numba; only for MultiDiscrete agents starting at 0): looked up on the
        # first encode (... = not yet; None = the Python path only)
        self._kernel: Any = ... if self._fast else None
        # one-hot layout
        self.max_choices = int(self.nvec.max()) if self.size else 0
        self.n_columns = int(self.nvec.sum())
        self.column_offset: np.ndarray = np.concatenate([[0], np.cumsum(self.nvec)[:-1]]).astype(np.int64)
        self.decision_of_column: np.ndarray = np.repeat(np.arange(self.size), self.nvec)
        self.value_of_column: np.ndarray = (np.arange(self.n_columns)
                                            - self.column_offset[self.decision_of_column])
        self.mask: np.ndarray = np.arange(self.max_choices)[None, :] < self.nvec[:, None]
        self.agent_cardinality: tuple[float, ...] = tuple(float(np.prod(n.astype(float))) for n in nvecs)

    @classmethod
    def from_nvecs(cls, nvecs: Mapping[str, Sequence[int] | np.ndarray], **kwargs: Any) -> JointActionCodec:
        """A codec of ``MultiDiscrete(nvec)`` agents, ``{agent: nvec}`` (keyword arguments as the
        constructor)."""
        spaces = {a: gymnasium.spaces.MultiDiscrete(np.asarray(n, dtype=np.int64)) for a, n in nvecs.items()}
        return cls(spaces, **kwargs)

    # -- validation ----------------------------------------------------------------------------------------
    def validate(self, action: Mapping[str, Any]) -> dict[str, Any]:
        """Check a joint action and return it in canonical form (an ``np.int64`` per ``Discrete`` agent, an
        int64 vector per ``MultiDiscrete`` agent); raise ``ValueError`` saying exactly what is wrong.

        Accepted: exactly one entry per agent; a ``Discrete`` agent's action a single integer (or a
        one-element vector, as trial records store it); a ``MultiDiscrete`` agent's a vector of its length;
        integer values, or floats with integral values; every value within the space. Booleans, fractional or
        non-finite values, strings and wrong lengths are rejected."""
        if not isinstance(action, Mapping):  # a ValueError, as for every other malformed joint action
            raise ValueError(
                f"actions must be a dict mapping each agent in {list(self.agents)} to its action, "
                f"got {type(action).__name__}")
        missing = [a for a in self.agents if a not in action]
        unknown = [k for k in action if k not in self.slice_of]
        if missing or unknown:
            raise ValueError(f"actions must have exactly one entry per agent {list(self.agents)}; "
                             f"missing {missing}, unknown {unknown}")
        return {a: self._check_agent(a, action[a]) for a in self.agents}

    def _check_agent(self, agent: str, value: Any) -> Any:
        nvec, start = self._nvec_of[agent], self._start_of[agent]
        try:
            a = np.asarray(value)
        except Exception as exc:  # pragma: no cover - exotic objects
            raise ValueError(f"action of agent {agent!r} is not array-like: {exc}") from exc
        if self.discrete[agent]:
            if a.shape not in ((), (1,)):
                raise ValueError(f"action of agent {agent!r} has shape {a.shape}, expected () (a single "
                                 f"integer: {self.kind} {agent!r} has a Discrete space)")
            a = a.reshape(1)
        elif a.shape != nvec.shape:
            raise ValueError(f"action of agent {agent!r} has shape {a.shape}, expected {nvec.shape} "
                             f"(one integer per decision of {self.kind} {agent!r})")
        if a.dtype.kind not in "iu" and not (a.dtype.kind == "f" and np.all(np.mod(a, 1) == 0)):
            raise ValueError(f"action of agent {agent!r} must be integers, got dtype {a.dtype}"
                             + (" (booleans are not actions)" if a.dtype.kind == "b" else ""))
        bad = np.flatnonzero((a < start) | (a >= start + nvec))
        if bad.size:
            i = int(bad[0])
            dec = f" (decision {self._names[agent][i]!r})" if self._names is not None else ""
            where = "" if self.discrete[agent] else f" at position {i}{dec}"
            raise ValueError(f"action of agent {agent!r} is out of range{where}: got {int(a[i])}, allowed "
                             f"{int(start[i])}..{int(start[i] + nvec[i]) - 1}")
        a = a.astype(np.int64, copy=False)
        return np.int64(a[0]) if self.discrete[agent] else a

    def encode_agent(self, agent: str, action: Any) -> np.ndarray:
        """One agent's action -> its part of the flat index vector (int64, 0-based), validated as in
        :meth:`validate` (the AEC boundary: each agent's action is checked at its own step)."""
        if agent not in self.slice_of:
            raise ValueError(f"unknown agent {agent!r}; agents are {list(self.agents)}")
        return np.atleast_1d(self._check_agent(agent, action)) - self._start_of[agent]

    def contains(self, action: Any) -> bool:
        """Whether :meth:`validate` accepts ``action``."""
        try:
            self.validate(action)
        except ValueError:
            return False
        return True

    def validate_batch(self, actions: Any) -> np.ndarray:
        """THE validation of a batch of flat joint actions: int64 ``[K, D]`` (C-contiguous) in this codec's
        layout (0-based indices), or ``ValueError`` naming the first bad row and decision.

        Accepted: anything ``np.asarray`` turns into a 2-d integer array of width ``D`` (``[0, D]`` for no
        rows). Refused: a 1-d input (one joint action: pass ``[row]``), booleans, floats, other widths, and
        values outside ``0 <= idx[d] < nvec[d]``."""
        try:
            a = np.asarray(actions)
        except Exception as exc:  # ragged lists and exotic objects: one clear message
            raise ValueError(f"a batch of joint actions must be an integer array [K, {self.size}]: {exc}") from exc
        if a.ndim != 2:
            hint = (" (one joint action: pass [row])" if a.ndim == 1 else "")
            raise ValueError(f"a batch of joint actions must be a 2-d integer array [K, {self.size}], got "
                             f"shape {a.shape}{hint}")
        if a.shape[1] != self.size:
            raise ValueError(f"a batch of joint actions must have {self.size} columns (one per decision of "
                             f"{list(self.agents)}), got shape {a.shape}")
        if a.dtype.kind not in "iu":
            if a.size == 0 and a.dtype.kind == "f":  # np.zeros((0, D)): no rows, nothing to refuse
                return np.zeros((0, self.size), dtype=np.int64)
            raise ValueError(f"a batch of joint actions must hold integers (0-based choice indices), got "
                             f"dtype {a.dtype}" + (" (booleans are not actions)" if a.dtype.kind == "b" else ""))
        bad = (a < 0) | (a >= self.nvec)
        if bad.any():
            row, d = (int(x[0]) for x in np.nonzero(bad))
            raise ValueError(f"row {row}: {self.decision_name(d)} = {int(a[row, d])} is out of range "
                             f"[0, {int(self.nvec[d])})")
        return np.ascontiguousarray(a, dtype=np.int64)

    def decision_name(self, d: int) -> str:
        """``"agent.decision"`` of flat position ``d`` (``"agent[i]"`` when the codec has no decision
        names)."""
        agent = self.agents[int(self.agent_of[d])]
        i = d - self.slice_of[agent].start
        return f"{agent}.{self._names[agent][i]}" if self._names is not None else f"{agent}[{i}]"

    # -- encode / decode -----------------------------------------------------------------------------------
    def encode(self, action: Mapping[str, Any], scaled_out: np.ndarray | None = None) -> np.ndarray:
        """Joint action -> flat index vector (int64 ``[D]``, 0-based); validated (``ValueError`` as
        :meth:`validate`). The common case (right keys, 1-d int64 arrays in range, every space starting at 0)
        costs a few microseconds; anything else goes through :meth:`validate`, which says precisely what is
        wrong.

        ``scaled_out``: a float32 array ``[D]`` that also receives :meth:`scaled` of the result, in the same
        pass (the env writes its observation's action part so); its contents are undefined after a
        ``ValueError``."""
        kern = self._kernel
        if kern is not None:
            try:
                if kern is ...:
                    kern = self._lookup_kernel()
                if len(action) == self._n_agents:
                    out = _empty(self.size, _INT64)
                    if kern(*map(action.__getitem__, self.agents), self._sizes_nvec, out, self.unit_scale,
                            self._scaled_scratch if scaled_out is None else scaled_out):
                        return out
            except (KeyError, TypeError, AttributeError, ValueError):
                pass
        flat = self._encode_python(action)
        if scaled_out is not None:
            self.scaled(flat, scaled_out)
        return flat

    def _encode_python(self, action: Mapping[str, Any]) -> np.ndarray:
        if self._fast:
            try:
                if len(action) == len(self.agents):
                    arrs = [action[a] for a in self.agents]
                    # shapes and dtypes (a bool array would concatenate to ints) in one comparison
                    if [(a.shape, a.dtype) for a in arrs] == self._fast_sig:
                        flat = np.concatenate(arrs)
                        # negatives wrap to huge unsigned values: one comparison checks both ends
                        if np.count_nonzero(flat.view(_UINT64) < self._nvec_u) == self.size:
                            return flat
            except (KeyError, TypeError, AttributeError, ValueError):
                pass
        checked = self.validate(action)
        return np.concatenate([np.atleast_1d(checked[a]) for a in self.agents]) - self.start

    def scaled(self, idx: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Flat index vector(s) ``[..., D]`` scaled to [0, 1] as float32: ``idx * unit_scale`` (each index
        cast to float32, then one float32 product; 0 for a one-choice decision). The joint action as features:
        the env's observation and the decision view's state hold it. ``out``: a float32 array to write into
        (returned)."""
        if out is None:
            out = np.empty(np.shape(idx), np.float32)
        elif not isinstance(out, np.ndarray) or out.dtype != _FLOAT32 or out.shape[-1:] != (self.size,):
            raise ValueError(f"out must be a float32 array [..., {self.size}] for the scaled joint action, got "
                             f"{type(out).__name__} {getattr(out, 'dtype', '')} {getattr(out, 'shape', '')}")
        out[...] = idx
        out *= self.unit_scale
        return out

    def _lookup_kernel(self) -> Any:
        from ma2ml_env._codec_jit import encode_kernel

        self._kernel = encode_kernel(len(self.agents))
        return self._kernel

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if state["_kernel"] is not None:
            state["_kernel"] = ...  # a numba dispatcher: looked up again after unpickling
        return state

    def encode_batch(self, actions: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Joint actions -> int64 ``[n, D]`` (``[0, D]`` for none)."""
        if not len(actions):
            return np.zeros((0, self.size), dtype=np.int64)
        return np.stack([self.encode(a) for a in actions])

    def decode(self, idx: Sequence[int] | np.ndarray) -> dict[str, Any]:
        """Flat index vector ``[D]`` -> joint action (fresh arrays; ``np.int64`` for ``Discrete`` agents).
        Only the shape is checked: index vectors come from the algorithm itself."""
        vals = np.asarray(idx, dtype=np.int64)
        if vals.shape != (self.size,):
            raise ValueError(f"flat joint action has shape {vals.shape}, expected {(self.size,)}")
        vals = vals + self.start
        return {a: (np.int64(vals[sl.start]) if self.discrete[a] else vals[sl].copy())
                for a, sl in self.slice_of.items()}

    def decode_batch(self, idx: np.ndarray) -> list[dict[str, Any]]:
        """Index vectors ``[n, D]`` -> ``n`` joint actions."""
        return [self.decode(row) for row in np.asarray(idx, dtype=np.int64).reshape(-1, self.size)]

    def key(self, action: Mapping[str, Any] | Sequence[int] | np.ndarray) -> str:
        """The canonical string of a joint action (or of a flat index vector): ``"a=1,2;b=0"`` with the
        action values in agent order. Equal joint actions have equal keys, whatever their array types."""
        idx = self.encode(action) if isinstance(action, Mapping) else np.asarray(action, dtype=np.int64)
        if idx.shape != (self.size,):
            raise ValueError(f"flat joint action has shape {idx.shape}, expected {(self.size,)}")
        vals = (idx + self.start).tolist()
        return ";".join(f"{a}=" + ",".join(map(str, vals[sl])) for a, sl in self.slice_of.items())

    def sample(self, rng: np.random.Generator, n: int | None = None) -> np.ndarray:
        """Uniform random flat index vectors: int64 ``[D]`` (``n=None``) or ``[n, D]``."""
        size = (self.size,) if n is None else (n, self.size)
        return (rng.random(size) * self.nvec).astype(np.int64)

    def sample_actions(self, rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
        """``n`` uniform random joint actions."""
        return self.decode_batch(self.sample(rng, n))

    def __repr__(self) -> str:
        parts = ", ".join(f"{a}:{'Discrete' if self.discrete[a] else n}"
                          for a, n in zip(self.agents, self.sizes))
        return f"JointActionCodec({parts})"
