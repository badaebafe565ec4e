"""Seeded random generators: every random draw in vaedft goes through these.

An instance's randomness is a pure function of ``(seed, index)``: its generator is
built from ``SeedSequence(seed, spawn_key=(index,))``, so results do not depend on
chunking, batching, ordering or resumption.
"""

from __future__ import annotations

import numpy as np

__all__ = ["check_seed", "instance_rng"]


def check_seed(seed) -> int:
    """Return ``seed`` as a Python int, or raise ``ValueError`` unless it is a non-negative integer."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def instance_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of instance ``index`` under ``seed`` (independent streams per index)."""
    seed = check_seed(seed)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"instance index must be a non-negative integer, got {index!r}")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(int(index),))))
