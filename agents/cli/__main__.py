"""``python -m agents.cli``: the ``ma2ml`` command."""

import sys

from agents.cli.main import main

sys.exit(main())
