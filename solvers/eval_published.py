"""`python -m solvers.eval_published`: the released models' scoring CLI, kept
at its published name; the code is in solvers/scoring/eval_published.py."""
import sys

from .scoring.eval_published import main

if __name__ == "__main__":
    sys.exit(main())
