"""`python -m expe ...`: the `expe` command (the same as `python -m expe.cli ...`)."""
import sys

from expe.cli import main

sys.exit(main())
