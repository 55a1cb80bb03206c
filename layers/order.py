"""The sequence of examples a layer serves: shuffled per epoch, or split order.

Training draws epoch-wise permutations from `numpy.random.RandomState(seed)`,
so every id is seen once per epoch and two runs with the same seed see the
same sequence (the 2016 reference sampled with replacement from the global
`random` module). Evaluation walks the split file in order and wraps around,
so scores line up with the split.
"""
import itertools

import numpy as np


def indices(n, randomize, seed):
    """An endless iterator over range(n)."""
    if n < 1:
        raise ValueError("cannot order an empty split")
    if not randomize:
        return itertools.cycle(range(n))
    rng = np.random.RandomState(seed)
    return (int(i) for _ in itertools.count() for i in rng.permutation(n))


def keys(ids, randomize, seed):
    """An endless iterator over the ids in serving order."""
    ids = list(ids)
    return (ids[i] for i in indices(len(ids), randomize, seed))
