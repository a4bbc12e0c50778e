"""Search algorithms over the multi-agent AutoML environment: MA2ML and baselines, one interface."""

from agents.base import SearchAlgorithm, SearchResult, Trial, run
from agents.check import AlgorithmCheckError, check_algorithm

__all__ = ["AlgorithmCheckError", "SearchAlgorithm", "SearchResult", "Trial", "check_algorithm", "run"]
