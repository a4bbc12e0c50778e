"""Search algorithms over the multi-agent AutoML environment: MA2ML and baselines, one interface."""

from agents.base import SearchAlgorithm, SearchResult, Trial, run

__all__ = ["SearchAlgorithm", "SearchResult", "Trial", "run"]
