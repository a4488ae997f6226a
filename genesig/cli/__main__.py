"""``python -m genesig.cli``: the ``genesig`` command."""

import sys

from genesig.cli import main

sys.exit(main())
