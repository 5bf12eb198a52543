"""Common random numbers for evaluations: every evaluation of a composite draws the same random numbers.

Some OpenMMLab models sample at inference: mmaction2's TRN head (``RelationModuleMultiScale``) draws which frame
relations it sums with ``np.random.choice`` in every forward, eval mode included. Two composites evaluated with
different draws differ by that sampling as well as by their descendants, and an accuracy drop of one block is a
difference of two such evaluations. Run under :func:`same_random_numbers`, every evaluation draws alike, so the
difference is the descendants'; the caller's random state is restored afterwards (retraining, resumed runs and the
runner's own seeding see no evaluation).
"""
from __future__ import annotations

import contextlib
import random
from typing import Iterator

import numpy as np
import torch


@contextlib.contextmanager
def same_random_numbers(seed: int | None = 0) -> Iterator[None]:
    """Seeds Python's, NumPy's and torch's generators (CUDA's too, where present) with ``seed`` for the block and
    restores their previous states afterwards; ``None`` leaves them alone."""
    if seed is None:
        yield
        return
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds every CUDA device too
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
