"""A conformance check users run on their own search algorithms (as :func:`ma2ml_env.check_module` is for
AutoML modules).

    from agents import check_algorithm
    check_algorithm(MySearch)                 # a class, or a factory: lambda: MySearch(step=0.2)
    check_algorithm(MySearch(), rounds=4)     # or an instance (copied with copy.deepcopy for every run)
"""

from __future__ import annotations

import copy
import pickle
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium
import numpy as np

from agents.base import SearchAlgorithm
from ma2ml_env.codec import JointActionCodec

__all__ = ["SPACES", "AlgorithmCheckError", "check_algorithm"]

#: the default joint space of the check: a Discrete agent and a MultiDiscrete one (36 joint actions)
SPACES: dict[str, gymnasium.Space] = {"x": gymnasium.spaces.Discrete(3),
                                      "y": gymnasium.spaces.MultiDiscrete([2, 3, 2])}


class AlgorithmCheckError(AssertionError):
    """Raised by :func:`check_algorithm` with a message that says which rule failed and how to fix it."""


def _scores(codec: JointActionCodec, actions: np.ndarray) -> np.ndarray:
    """A fixed pseudo-random score in [0, 1) per joint action (row)."""
    return np.array([zlib.crc32(codec.key(row).encode()) / 2**32 for row in actions], dtype=np.float64)


def check_algorithm(algorithm: SearchAlgorithm | Callable[[], SearchAlgorithm], *,
                    spaces: Mapping[str, gymnasium.Space] | None = None, seed: int = 0, batch_size: int = 4,
                    rounds: int = 3) -> None:
    """Check that a search algorithm follows the :class:`~agents.base.SearchAlgorithm` contract.

    Rules checked, on ``spaces`` (default :data:`SPACES`) for ``rounds`` rounds of ``batch_size`` (plus
    a round of 1): ``setup`` succeeds; ``propose(n)`` returns an ``np.ndarray`` of dtype int64 and shape
    ``[n, D]`` in the layout of :class:`~ma2ml_env.codec.JointActionCodec`, every value in range
    (:meth:`~ma2ml_env.codec.JointActionCodec.validate_batch`); ``observe`` accepts those rows (read-only,
    as :func:`~agents.base.run` passes them) with float64 scores; a fresh object with the same seed
    proposes the same actions (the same search); ``state_dict()`` (when implemented), taken after an
    ``observe`` and right after a ``propose``, pickles, and a fresh object set up and loaded from it
    proposes what the uninterrupted one proposes next; ``observe`` given input of the wrong shape (a 1-d
    row, rows of the wrong width, more rows than scores) rejects it with ``ValueError`` or ``TypeError``
    (:meth:`~agents.base.SearchAlgorithm.observed_batch` does), or ignores it, and proposes valid actions
    afterwards.

    Args:
        algorithm: a :class:`SearchAlgorithm` class or a zero-argument factory of fresh instances; or an
            instance that has not been set up (it is copied with ``copy.deepcopy`` for every run).
        spaces: ``{agent: Discrete | MultiDiscrete}``.
        seed: the seed of every run.
        batch_size: joint actions per round.
        rounds: rounds of ``batch_size`` per run (>= 2).

    Raises:
        AlgorithmCheckError: on the first broken rule.
    """
    if rounds < 2 or batch_size < 1:
        raise ValueError(f"check_algorithm needs rounds >= 2 and batch_size >= 1, got {rounds} and "
                         f"{batch_size}")
    chk = _Checker(_factory(algorithm), dict(spaces if spaces is not None else SPACES), seed,
                   [batch_size] * rounds + [1])
    chk.run()
    chk.same_seed()
    chk.checkpoints()
    chk.malformed_observe()


class _Checker:
    """The runs of :func:`check_algorithm`; ``history`` holds the keys of the first run's proposals."""

    def __init__(self, make: Callable[[], SearchAlgorithm], spaces: dict[str, gymnasium.Space], seed: int,
                 sizes: list[int]) -> None:
        self.make, self.spaces, self.seed, self.sizes = make, spaces, seed, sizes
        self.codec = JointActionCodec(spaces)
        self.label = type(make()).__name__
        self.history: list[list[str]] = []
        self.width = self.codec.size

    def fail(self, msg: str) -> None:
        raise AlgorithmCheckError(f"search algorithm {self.label}: {msg}")

    def call(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except AlgorithmCheckError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of the user's code is reported
            self.fail(f"{what} raised {type(exc).__name__}: {exc}")

    def fresh(self, where: str) -> SearchAlgorithm:
        algo = self.make()
        self.call(f"setup() {where}", lambda: algo.setup(self.spaces, self.seed))
        return algo

    def keys(self, actions: np.ndarray) -> list[str]:
        return [self.codec.key(row) for row in actions]

    def propose(self, algo: SearchAlgorithm, n: int, where: str) -> np.ndarray:
        out = self.call(f"propose({n}) {where}", lambda: algo.propose(n))
        want = f"an int64 array [{n}, {self.width}] (one row per joint action, codec layout)"
        if not isinstance(out, np.ndarray):
            self.fail(f"propose({n}) {where} must return {want}, got {type(out).__name__}")
        if out.dtype != np.int64:
            self.fail(f"propose({n}) {where} must return {want}, got dtype {out.dtype}")
        if out.shape != (n, self.width):
            self.fail(f"propose({n}) {where} returned shape {out.shape}, expected {want}")
        try:
            self.codec.validate_batch(out)
        except ValueError as exc:
            self.fail(f"propose({n}) {where} returned a joint action out of range: {exc}")
        rows = out.copy()
        rows.flags.writeable = False  # what run() hands observe
        return rows

    def observe(self, algo: SearchAlgorithm, actions: np.ndarray, where: str) -> None:
        scores = _scores(self.codec, actions)
        self.call(f"observe() of {len(actions)} proposals {where}", lambda: algo.observe(actions, scores))

    # -- the rules -------------------------------------------------------------------------------------------
    def run(self) -> None:
        """Every proposal valid, every observe accepted."""
        algo = self.fresh("on the check's spaces")
        for r, n in enumerate(self.sizes):
            acts = self.propose(algo, n, f"in round {r}")
            self.observe(algo, acts, f"in round {r}")
            self.history.append(self.keys(acts))

    def same_seed(self) -> None:
        """A second object with the same seed makes the same search."""
        algo = self.fresh("of a second object")
        for r, n in enumerate(self.sizes):
            acts = self.propose(algo, n, f"in round {r} of a second object")
            if self.keys(acts) != self.history[r]:
                self.fail(f"a second object with the same seed proposed other joint actions in round {r}: "
                          f"{self.keys(acts)} instead of {self.history[r]}. Draw randomness only from "
                          "generators seeded in setup(), never from global RNGs or the clock")
            self.observe(algo, acts, f"in round {r} of a second object")

    def checkpoints(self) -> None:
        """Resume from a state taken after an observe and from one taken right after a propose (what
        ``agents.store`` stores); skipped when ``state_dict`` raises ``NotImplementedError``."""
        probe = self.fresh("for state_dict()")
        try:
            probe.state_dict()
        except NotImplementedError:
            return  # checkpointing is optional
        except Exception as exc:  # noqa: BLE001 - any failure of the user's code is reported
            self.fail(f"state_dict() raised {type(exc).__name__}: {exc}")
        self.resume(1, mid_round=False)
        self.resume(1, mid_round=True)

    def resume(self, cut: int, mid_round: bool) -> None:
        """Run to round ``cut`` (and its propose when ``mid_round``), checkpoint, resume a fresh object from
        the pickled state and compare its proposals with the uninterrupted run's."""
        when = f"right after propose() of round {cut}" if mid_round else f"after round {cut - 1}"
        algo = self.fresh("for a checkpoint")
        pending = None
        for r in range(cut + mid_round):
            acts = self.propose(algo, self.sizes[r], f"in round {r}")
            if r < cut:
                self.observe(algo, acts, f"in round {r}")
            else:
                pending = acts
        state = self.call(f"state_dict() {when}", algo.state_dict)
        try:
            state = pickle.loads(pickle.dumps(state))
        except Exception as exc:  # noqa: BLE001 - any failure of the user's code is reported
            self.fail(f"state_dict() {when} does not pickle ({type(exc).__name__}: {exc}); it must, to be "
                      "stored")
        resumed = self.fresh("to load a checkpoint")
        self.call(f"load_state_dict() of the state {when}", lambda: resumed.load_state_dict(state))
        if pending is not None:
            self.observe(resumed, pending, f"in round {cut} after load_state_dict()")
        for r in range(cut + mid_round, len(self.sizes)):
            acts = self.propose(resumed, self.sizes[r], f"in round {r} after load_state_dict()")
            if self.keys(acts) != self.history[r]:
                self.fail(f"after load_state_dict() of the state {when}, round {r} proposed "
                          f"{self.keys(acts)} but the uninterrupted search proposed {self.history[r]}; "
                          "state_dict() must hold everything the next proposals depend on (RNG states "
                          "included)")
            self.observe(resumed, acts, f"in round {r} after load_state_dict()")

    def malformed_observe(self) -> None:
        """``observe`` rejects input of the wrong shape with ValueError/TypeError or ignores it, and the object
        still proposes valid joint actions."""
        valid = np.zeros((1, self.width), dtype=np.int64)
        cases = [
            ("a 1-d row instead of a batch [n, D]", valid[0], np.array([0.5])),
            (f"rows of width {self.width + 1} instead of {self.width}",
             np.zeros((1, self.width + 1), dtype=np.int64), np.array([0.5])),
            ("two joint actions and one score", np.zeros((2, self.width), dtype=np.int64), np.array([0.5])),
        ]
        n = self.sizes[0]
        for what, actions, scores in cases:
            algo = self.fresh(f"before observing {what}")
            self.observe(algo, self.propose(algo, n, "in round 0"), "in round 0")
            try:
                algo.observe(actions, scores)
            except (ValueError, TypeError):
                pass  # rejected
            except Exception as exc:  # noqa: BLE001 - any failure of the user's code is reported
                self.fail(f"observe() given {what} raised {type(exc).__name__}: {exc}; reject malformed "
                          "input with a ValueError that says what is wrong (SearchAlgorithm.observed_batch does) "
                          "or ignore it")
            self.propose(algo, n, f"after observe() was given {what}")


def _factory(algorithm: Any) -> Callable[[], SearchAlgorithm]:
    if isinstance(algorithm, SearchAlgorithm):
        if hasattr(algorithm, "action_spaces"):
            raise AlgorithmCheckError(f"search algorithm {type(algorithm).__name__}: pass an instance that "
                                      "has not been set up yet (or a class or factory), so that every run "
                                      "starts fresh")
        try:
            copy.deepcopy(algorithm)
        except Exception as exc:
            raise AlgorithmCheckError(f"search algorithm {type(algorithm).__name__}: the instance cannot be "
                                      f"copied ({type(exc).__name__}: {exc}); pass its class or a factory "
                                      "instead") from exc
        return lambda: copy.deepcopy(algorithm)
    if not callable(algorithm):
        raise AlgorithmCheckError(f"check_algorithm needs a SearchAlgorithm instance, class or factory, got "
                                  f"{type(algorithm).__name__}")

    def make() -> SearchAlgorithm:
        algo = algorithm()
        if not isinstance(algo, SearchAlgorithm):
            raise AlgorithmCheckError(f"{algorithm!r} built a {type(algo).__name__}, not an "
                                      "agents.SearchAlgorithm; "
                                      "subclass agents.SearchAlgorithm")
        return algo

    return make
