"""`python -m expe.cli ...`: what the workflow's jobs run (the interpreter that runs Snakemake)."""
import sys

from expe.cli import main

sys.exit(main())
