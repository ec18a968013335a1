"""``python -m service ...``: the gradsweep command line."""

import sys

from service.cli import main

sys.exit(main())
