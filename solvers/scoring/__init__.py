"""Scoring: the papers' metrics, scoring a net over a split, the released
models against the papers; the CLIs are cli.py (`python -m solvers.score`)
and eval_published.py (`python -m solvers.eval_published`)."""
