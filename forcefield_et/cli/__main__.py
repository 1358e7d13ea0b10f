"""``python -m forcefield_et.cli``: the ``forcefield-et`` command (also under torchrun)."""

import sys

from . import main

sys.exit(main())
