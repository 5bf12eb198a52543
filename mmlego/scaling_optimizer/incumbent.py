"""The first incumbent of the exact search: the LP relaxation's solution rounded, then improved block by block.

The LP of one surrogate constraint (see :mod:`.branch_and_bound`) walks, over all blocks, the lower convex hull
segments of each block cheapest per unit saved first. Taking its segments whole until both budgets hold gives an
integral configuration close to the LP's optimum; single-block changes that lower the drop and still fit then
improve it. A few vectorized steps per budget, against a beam search over every layer that costs as much as the
exact pass: the incumbent only decides how much the exact pass prunes, never its answer.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Tuple

import numpy as np

if TYPE_CHECKING:
    from .branch_and_bound import _Padded, _SurrogateBound

__all__ = ['lp_path', 'rounded_incumbent', 'improve']


def lp_path(p: '_Padded', bound: '_SurrogateBound') -> Tuple[np.ndarray, ...]:
    """Totals (latency, memory, drop, sparsity) after taking 0, 1, ... segments of ``bound``'s LP path (built once
    per relaxation: it does not depend on the budgets)."""
    rows = np.arange(len(bound.start_options))
    first = bound.start_options
    previous = first.copy()
    before = np.empty(len(bound.segment_block), dtype=np.int64)  # the option each segment leaves
    for i, (block, option) in enumerate(zip(bound.segment_block.tolist(), bound.segment_option.tolist())):
        before[i], previous[block] = previous[block], option
    blocks, reached = bound.segment_block, bound.segment_option
    totals = []
    for values in (p.latency, p.memory, p.loss, p.sparsity):
        start = values[rows, first].sum()
        totals.append(np.concatenate([[start], start + np.cumsum(values[blocks, reached] - values[blocks, before])]))
    return tuple(totals)


def rounded_incumbent(p: '_Padded', bound: '_SurrogateBound', path: Tuple[np.ndarray, ...], latency_left: float,
                      memory_left: float) -> Optional[Tuple[float, float, List[int]]]:
    """The first point of the LP path that fits both budgets, improved by :func:`improve`; ``None`` if none fits.

    Returns:
        (drop, sparsity, option position per group).
    """
    latency, memory, _, _ = path
    fits = np.flatnonzero((latency <= latency_left) & (memory <= memory_left))
    if not len(fits):
        return None
    taken = int(fits[0])  # the fewest segments: the least drop along the path
    chosen = bound.start_options.copy()
    blocks, reached = bound.segment_block[:taken], bound.segment_option[:taken]
    if taken:  # per block, the last option its segments reached
        last = taken - 1 - np.unique(blocks[::-1], return_index=True)[1]
        chosen[blocks[last]] = reached[last]
    return improve(p, chosen, latency_left, memory_left)


def improve(p: '_Padded', chosen: np.ndarray, latency_left: float, memory_left: float,
            rounds: int = 64) -> Tuple[float, float, List[int]]:
    """A fitting configuration improved by single-block changes: each round applies the change of one block's
    option that lowers the drop most and still fits both budgets, until none does (or ``rounds`` ran)."""
    rows = np.arange(len(chosen))
    width = p.loss.shape[1]
    valid = np.arange(width)[None, :] < p.count[:, None]  # not a padding copy
    for _ in range(rounds):
        latency, memory, loss = p.latency[rows, chosen], p.memory[rows, chosen], p.loss[rows, chosen]
        gain = loss[:, None] - p.loss  # drop saved by switching block i to option j
        fits = (valid & (p.latency - latency[:, None] <= latency_left - latency.sum())
                & (p.memory - memory[:, None] <= memory_left - memory.sum()) & (gain > 1e-12))
        if not fits.any():
            break
        best = int(np.argmax(np.where(fits, gain, -np.inf)))
        chosen[best // width] = best % width
    return float(p.loss[rows, chosen].sum()), float(p.sparsity[rows, chosen].sum()), chosen.tolist()
