"""``python -m bigntk``: the ``bigntk`` command."""

import sys

from bigntk.cli import main

sys.exit(main())
