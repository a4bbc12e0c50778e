"""The joint search space of an ordered list of AutoML modules: flat joint actions <-> :class:`Pipeline`.

:class:`SearchSpace` turns a joint action into a :class:`~ma2ml_env.Pipeline` by applying each AutoML
module in order to a base pipeline, and back again (``encode(decode(a)) == a``; the decoded choices are
stored in ``Pipeline.choices``). Everything about the joint action itself (validation, flat vectors,
sampling) is its :class:`~ma2ml_env.codec.JointActionCodec` ``SearchSpace.codec``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ma2ml_env.codec import JointActionCodec
from ma2ml_env.modules.base import AutoMLModule
from ma2ml_env.pipeline import Pipeline

__all__ = ["SearchSpace"]


class SearchSpace:
    """The joint search space of an ordered list of AutoML modules.

    Args:
        modules: the modules, in the order their ``apply`` runs; their names are the agent names.
        base: the pipeline the modules start from (defaults to ``Pipeline()``).

    Raises:
        ValueError: on an empty list or duplicate module names.
    """

    def __init__(self, modules: Sequence[AutoMLModule], base: Pipeline | None = None) -> None:
        modules = tuple(modules)
        if not modules:
            raise ValueError("SearchSpace needs at least one AutoML module; pass e.g. modules=('aug', 'nas', 'hpo').")
        names = [m.name for m in modules]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(
                f"duplicate AutoML module names {dup}: every module becomes an agent and needs a unique name; "
                "give the second one another name."
            )
        self.modules = modules
        self.names: tuple[str, ...] = tuple(names)
        self.base = base if base is not None else Pipeline()
        self.nvecs: dict[str, np.ndarray] = {m.name: m.nvec for m in modules}
        self.sizes: tuple[int, ...] = tuple(len(m.decisions) for m in modules)
        self.offsets: tuple[int, ...] = tuple(int(x) for x in np.cumsum((0, *self.sizes))[:-1])
        self.joint_nvec: np.ndarray = np.concatenate([self.nvecs[n] for n in self.names]).astype(np.int64)
        #: the joint-action codec: validation, flat <-> per-agent, sampling (decisions named by the modules)
        self.codec = JointActionCodec.from_nvecs(
            self.nvecs, decision_names={m.name: [d.name for d in m.decisions] for m in modules}, kind="module")

    # -- pipelines -------------------------------------------------------------------------------------
    def decode(self, action: Mapping[str, Any] | Sequence[int] | np.ndarray) -> Pipeline:
        """A joint action -> its :class:`Pipeline`: a flat row (int64 ``[D]``, the codec's layout) or a
        per-agent dict, validated here (``ValueError`` saying what is wrong): this is an entry point for
        users. Code that holds a row validated where it entered calls :meth:`build`."""
        if isinstance(action, Mapping):
            return self.build(self.codec.encode(action))
        row = np.asarray(action)
        if row.ndim != 1:
            raise ValueError(f"decode takes one joint action (a flat row of {self.codec.size} ints or a dict per "
                             f"agent), got an array of shape {row.shape}")
        return self.build(self.codec.validate_batch(row[None])[0])

    def build(self, row: np.ndarray) -> Pipeline:
        """The :class:`Pipeline` of a flat row already validated (the backends' and the search loop's rows):
        every module decodes its slice and applies it, in order."""
        actions = self.codec.decode(row)
        pipe = self.base
        choices: dict[str, dict[str, Any]] = {}
        for mod in self.modules:
            choice = mod.decode(actions[mod.name])
            choices[mod.name] = choice
            pipe = mod.apply(choice, pipe)
            if not isinstance(pipe, Pipeline):
                raise TypeError(
                    f"module {mod.name!r}.apply must return a Pipeline, got {type(pipe).__name__}"
                )
        return pipe.replace(choices=choices)

    def encode(self, pipeline: Pipeline) -> dict[str, np.ndarray]:
        """:class:`Pipeline` (as produced by :meth:`decode`) -> joint action (per agent; ``codec.encode``
        flattens it)."""
        missing = [n for n in self.names if n not in pipeline.choices]
        if missing:
            raise ValueError(
                f"pipeline has no recorded choices for modules {missing}; only pipelines made by "
                "SearchSpace.decode (or with `choices` filled in) can be encoded"
            )
        return {m.name: m.encode(pipeline.choices[m.name]) for m in self.modules}

    def __repr__(self) -> str:
        return f"SearchSpace({', '.join(f'{n}:{len(v)}' for n, v in self.nvecs.items())})"
