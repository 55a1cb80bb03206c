"""`python -m solvers.solve`: the training CLI, kept at its published name; the code
is in solvers/training/cli.py."""
import sys

from .training.cli import main

if __name__ == "__main__":
    sys.exit(main())
