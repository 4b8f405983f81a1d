"""``python -m grain_bench``."""

import sys

from grain_bench.cli import main

sys.exit(main())
