"""Training: one run of one model (run.py and its jobs), the solver
definition, learning curves, NCCL multi-GPU; the CLI is cli.py
(`python -m solvers.solve`)."""
