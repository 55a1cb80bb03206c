"""The project's one default seed: the training data order (data layers),
dropout masks (the SGD loop), the demo's synthetic data and weights. Every
default seed is this constant; a run may pass another."""
SEED = 1337
