"""stable-baselines3's PPO and A2C (the library's own ``train()``) as one agent choosing the whole joint
action (the joint ``MultiDiscrete`` view). Needs ``stable-baselines3`` (``pip install "ma2ml[sb3]"``),
imported at set-up; SB3 logs nowhere unless ``SB3Config.log_dir`` asks for it."""

from __future__ import annotations

import contextlib
import copy
import math
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import gymnasium
import numpy as np

from agents.common import (
    AlgorithmConfig,
    ConfiguredSearch,
    choice,
    in_range,
    load_rng,
    positive_int,
    require,
    rng_state,
)
from agents.threads import torch_threads

__all__ = ["SB3Agent", "SB3Config"]


@dataclass(frozen=True)
class SB3Config(AlgorithmConfig):
    """Hyper-parameters of :class:`SB3Agent`. Fields other than ``algo``, ``n_steps``, ``torch_threads`` and
    ``log_dir`` go to the SB3 constructor; ``model_kwargs`` passes any other constructor argument (e.g.
    ``{"max_grad_norm": 1}``)."""

    algo: Literal["ppo", "a2c"] = "ppo"
    """Which stable-baselines3 algorithm."""

    n_steps: int = 16
    """Evaluations per policy update (SB3's rollout length): after every ``n_steps`` observed rewards the
    rollout buffer is filled with them and SB3's own ``train()`` runs once."""

    learning_rate: float = 1e-2
    """Optimizer step size (SB3's defaults, 3e-4 / 7e-4, are tuned for long RL runs, not a few hundred
    evaluations)."""

    batch_size: int = 16
    """PPO mini-batch size (PPO only)."""

    n_epochs: int = 10
    """PPO passes over each rollout (PPO only)."""

    clip_range: float = 0.2
    """PPO's clipping of the probability ratio (PPO only)."""

    ent_coef: float = 0.0
    """Entropy bonus coefficient."""

    normalize_advantage: bool = True
    """Standardise advantages within each mini-batch (PPO) / rollout (A2C)."""

    net_arch: tuple[int, ...] = (64,)
    """Hidden layer sizes of the policy and value networks."""

    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """More keyword arguments of ``PPO(...)`` / ``A2C(...)``."""

    torch_threads: int | None = 1
    """torch threads while SB3's small networks run (``propose`` and the update); the process-wide setting
    is restored afterwards. Thread start-up dominates such tiny networks (one thread was 10x faster than
    two on a busy 2-core machine). ``None``: leave torch's setting."""

    log_dir: str | None = None
    """Folder where SB3's training statistics (losses, entropy, ...) are written as ``progress.csv`` after
    every update. ``None`` (default): SB3 logs nowhere (its default logger would leave an ``SB3-<date>``
    folder in the system temp folder for every search)."""

    def check(self) -> None:
        choice("SB3Config", "algo", self.algo, ("ppo", "a2c"))
        positive_int("SB3Config", "n_steps", self.n_steps)
        positive_int("SB3Config", "batch_size", self.batch_size)
        positive_int("SB3Config", "n_epochs", self.n_epochs)
        in_range("SB3Config", "learning_rate", self.learning_rate, 0.0, math.inf, lo_open=True, hi_open=True)
        in_range("SB3Config", "clip_range", self.clip_range, 0.0, 1.0, lo_open=True)
        in_range("SB3Config", "ent_coef", self.ent_coef, 0.0, math.inf, hi_open=True)
        if self.torch_threads is not None:
            positive_int("SB3Config", "torch_threads", self.torch_threads)
        object.__setattr__(self, "net_arch", tuple(self.net_arch))
        if not self.net_arch or not all(isinstance(h, int) and h > 0 for h in self.net_arch):
            raise ValueError(f"SB3Config.net_arch must be a non-empty sequence of positive ints, got "
                             f"{self.net_arch!r}")
        if not isinstance(self.model_kwargs, Mapping):
            raise TypeError(f"SB3Config.model_kwargs must be a mapping, got "
                            f"{type(self.model_kwargs).__name__}")
        clash = sorted(set(self.model_kwargs) & {"policy", "env", "seed", "device", "n_steps", "verbose"})
        if clash:
            raise ValueError(f"SB3Config.model_kwargs may not set {clash}: they are fixed by SB3Agent")


class _BanditEnv(gymnasium.Env):
    """The env SB3 is built on: one step per episode, a constant observation, the joint ``MultiDiscrete``.
    Its ``step`` is never called: rewards come from :meth:`SearchAlgorithm.observe`."""

    def __init__(self, nvec: np.ndarray) -> None:
        self.observation_space = gymnasium.spaces.Box(0.0, 1.0, (1,), np.float32)
        self.action_space = gymnasium.spaces.MultiDiscrete(nvec)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return np.ones(1, np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:  # pragma: no cover
        raise RuntimeError("SB3Agent drives SB3 by propose/observe; the env is never stepped")


class SB3Agent(ConfiguredSearch):
    """stable-baselines3's PPO or A2C as one agent choosing the whole joint action.

    SB3 drives its own environment loop in ``learn()``, but here the loop belongs to the search
    (``propose`` -> batch evaluation -> ``observe``). Rather than run ``learn()`` in a background thread
    fed through queues (a second thread of control, hard to make deterministic or to checkpoint), this
    class uses SB3's pieces directly, which is what ``learn()`` does inside:

    * ``propose(n)``: the SB3 policy's action distribution for the (constant) observation, sampled with
      this algorithm's own ``torch.Generator``; the policy's value estimate and log-probabilities are
      kept with each action;
    * ``observe``: the rewards are queued; every ``n_steps`` of them fill SB3's ``RolloutBuffer`` (each
      evaluation is a one-step episode: ``done=True``, so the advantage is ``r - V``), and SB3's own
      ``model.train()`` runs: PPO's clipped surrogate epochs or A2C's single step, unchanged.

    The observation is constant: a pipeline is a one-step episode and the problem is state-less (DESIGN.md
    section 1). ``model.train()`` draws mini-batch permutations from NumPy's global RNG; it runs under a
    global seed drawn from this algorithm's RNG (and the previous global state is restored), so runs are
    reproducible whatever else uses the global RNGs.

    Args:
        config: an :class:`SB3Config`; or its fields as keyword arguments (e.g. ``SB3Agent(algo="a2c")``).
    """

    config_class = SB3Config

    def __init__(self, config: SB3Config | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.name = self.config.algo

    def setup(self, action_spaces: Mapping[str, gymnasium.Space], seed: int) -> None:
        super().setup(action_spaces, seed)
        sb3 = require("stable_baselines3", "sb3")
        require("torch._dynamo", "sb3")  # its optimizers import it: quietly here (see ma2ml_env.imports)
        import torch
        from stable_baselines3.common.logger import Logger, configure

        cfg = self.config
        self.torch_gen = torch.Generator().manual_seed(int(seed))
        env = _BanditEnv(self.codec.nvec)
        kwargs: dict[str, Any] = {
            "learning_rate": cfg.learning_rate, "n_steps": cfg.n_steps, "ent_coef": cfg.ent_coef,
            "gamma": 1.0,
            "gae_lambda": 1.0, "normalize_advantage": cfg.normalize_advantage,
            "policy_kwargs": {"net_arch": list(cfg.net_arch)},
        }
        if cfg.algo == "ppo":
            kwargs.update(batch_size=cfg.batch_size, n_epochs=cfg.n_epochs, clip_range=cfg.clip_range)
        kwargs.update(cfg.model_kwargs)
        cls = {"ppo": sb3.PPO, "a2c": sb3.A2C}[cfg.algo]
        with self._global_seed():  # network initialisation uses torch's global RNG
            self.model = cls("MlpPolicy", env, seed=None, device="cpu", verbose=0, **kwargs)
        # SB3's configure(None, ...) makes a tempdir/SB3-<date> folder; a Logger without outputs writes
        # nothing
        logger = configure(cfg.log_dir, ["csv"]) if cfg.log_dir is not None else Logger(None, [])
        self.model.set_logger(logger)
        self._obs = torch.ones((1, 1), dtype=torch.float32)
        self._proposed: deque[tuple[tuple[int, ...], float, float]] = deque()  # (idx, value, log_prob)
        self._ready: list[tuple[np.ndarray, float, float, float]] = []  # (idx, reward, value, log_prob)
        self.updates = 0

    def _threads(self) -> contextlib.AbstractContextManager[None]:
        return torch_threads(self.config.torch_threads)

    @contextlib.contextmanager
    def _global_seed(self) -> Iterator[None]:
        """Run SB3 code that uses the global NumPy/torch RNGs under a seed from this algorithm's RNG."""
        import torch

        s = int(self.rng.integers(2**31 - 1))
        np_state = np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            np.random.seed(s)
            try:
                yield
            finally:
                np.random.set_state(np_state)

    def propose(self, n: int) -> np.ndarray:
        import torch

        policy = self.model.policy
        with torch.no_grad(), self._threads():
            obs = self._obs.expand(n, -1)
            dist = policy.get_distribution(obs)
            probs = torch.cat([d.probs for d in dist.distribution], dim=1)  # [n, sum nvec]
            sections = self.codec.nvec.tolist()
            cols = [torch.multinomial(p, 1, generator=self.torch_gen)
                    for p in torch.split(probs, sections, dim=1)]
            actions = torch.cat(cols, dim=1)
            log_probs = dist.log_prob(actions)
            values = policy.predict_values(obs).flatten()
        idx = actions.numpy().astype(np.int64)
        for x, v, lp in zip(idx.tolist(), values.tolist(), log_probs.tolist()):
            self._proposed.append((tuple(x), v, lp))
        return idx

    def observe(self, actions: np.ndarray, scores: np.ndarray) -> None:
        import torch

        actions, scores = self.observed_batch(actions, scores)
        for idx, score in zip(actions, scores.tolist()):
            key = tuple(idx.tolist())
            k = next((k for k, p in enumerate(self._proposed) if p[0] == key), None)
            if k is not None:
                _, value, log_prob = self._proposed[k]
                del self._proposed[k]
            else:  # not proposed by this policy (e.g. a warm start): evaluate it under the current policy
                with torch.no_grad():
                    a = torch.as_tensor(idx[None])
                    v, lp, _ = self.model.policy.evaluate_actions(self._obs, a)
                value, log_prob = float(v.flatten()[0]), float(lp.flatten()[0])
            self._ready.append((idx.copy(), score, value, log_prob))
        while len(self._ready) >= self.config.n_steps:
            batch, self._ready = self._ready[: self.config.n_steps], self._ready[self.config.n_steps:]
            self._train(batch)

    def _train(self, batch: list[tuple[np.ndarray, float, float, float]]) -> None:
        """Fill SB3's rollout buffer with one-step episodes and run SB3's own ``train()``."""
        import torch

        buf = self.model.rollout_buffer
        buf.reset()
        obs = np.ones((1, 1), np.float32)
        for idx, reward, value, log_prob in batch:
            buf.add(obs, idx[None].copy(), np.array([reward], np.float32), np.ones(1, np.float32),
                    torch.tensor([value]), torch.tensor([log_prob]))
        # every step ends its episode: advantage = r - V(s), return = r
        buf.compute_returns_and_advantage(last_values=torch.zeros(1), dones=np.ones(1, np.float32))
        with self._global_seed(), self._threads():
            self.model.train()
        self.updates += 1
        if self.config.log_dir is not None:
            self.model.logger.dump(step=self.updates)

    def state_dict(self) -> dict[str, Any]:
        return {
            "policy": copy.deepcopy(self.model.policy.state_dict()),
            "optimizer": copy.deepcopy(self.model.policy.optimizer.state_dict()),
            "n_updates": self.model._n_updates,
            "ready": copy.deepcopy(self._ready),
            "proposed": list(self._proposed),
            "rng": rng_state(self.rng),
            "torch_rng": self.torch_gen.get_state(),
            "updates": self.updates,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.policy.load_state_dict(state["policy"])
        self.model.policy.optimizer.load_state_dict(state["optimizer"])
        self.model._n_updates = state["n_updates"]
        self._ready = copy.deepcopy(list(state["ready"]))
        self._proposed = deque(state.get("proposed", ()))
        self.rng = load_rng(state["rng"])
        self.torch_gen.set_state(state["torch_rng"])
        self.updates = state["updates"]
