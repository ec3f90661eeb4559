"""``python -m sparkserve.benchmark serve --help``."""
import sys

from sparkserve.benchmark.cli import main

sys.exit(main())
