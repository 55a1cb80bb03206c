"""`python -m solvers.score`: the scoring CLI, kept at its published name; the code
is in solvers/scoring/cli.py."""
import sys

from .scoring.cli import main

if __name__ == "__main__":
    sys.exit(main())
