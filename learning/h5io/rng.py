"""Per-sample random number generators of CDP datasets.

Sample ``i`` (global index, also in shard files) gets its own ``torch.Generator`` seeded with
:func:`sample_seed` ``(seed, i)`` — 63 bits from ``numpy.random.SeedSequence([seed, i])`` — so a
file's content does not depend on batch size, on where an interrupted run was resumed, on
sharding or on how many threads draw the noise, and different ``(seed, i)`` pairs do not collide
the way ``seed·K + i`` would.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["RNG_DOC", "sample_seed", "sample_generator"]

#: What the ``rng`` root attribute of a dataset file says.
RNG_DOC = ("torch.Generator per sample i, manual_seed(learning.h5io.sample_seed(seed, i)) = "
           "63 bits of numpy.random.SeedSequence([seed, i]).generate_state(2, uint32)")


def sample_seed(seed: int, i: int) -> int:
    """The 63-bit seed of sample ``i``'s generator: ``SeedSequence([seed, i])`` → 2 words."""
    w = np.random.SeedSequence([int(seed), int(i)]).generate_state(2, dtype=np.uint32)
    return ((int(w[0]) << 32) | int(w[1])) & ((1 << 63) - 1)


def sample_generator(seed: int, i: int) -> torch.Generator:
    """A CPU ``torch.Generator`` for sample ``i`` of a run with ``seed`` (:func:`sample_seed`)."""
    return torch.Generator().manual_seed(sample_seed(seed, i))
