"""Inference: the Predictor (a deploy net with its dataset's mean, heads and
palettes; large images through stitched tiles), batch jobs over files and
directories, visualisations; the CLI is cli.py (`python -m solvers.infer`)."""
