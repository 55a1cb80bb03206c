"""`python -m solvers.infer`: the inference CLI, kept at its published name; the code
is in solvers/inference/cli.py."""
import sys

from .inference.cli import main

if __name__ == "__main__":
    sys.exit(main())
