"""The ``ma2ml`` command line with a slow toy reward backend registered as ``toy``, for tests that kill or
race a real CLI process:

    python -m tests._cli_toy search --reward toy --reward-config '{"delay": 0.05}' ...
"""

from __future__ import annotations

import sys

import ma2ml_env
from agents.cli import main

ma2ml_env.register_evaluator("toy", "tests._toys:ToyEvaluator", overwrite=True)
ma2ml_env.register_evaluator("curves", "tests._fidelity_toys:CurveEvaluator", overwrite=True)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
