"""Non-dominated configurations of the scaling problem, merged block by block (the structure behind 'exact').

A configuration is kept only if no other one is at most as slow, at most as large and at least as good, where
"good" is the lexicographic key (weighted drop, total sparsity): the same order every solver uses, drops first,
ties (see :data:`~mmlego.scaling_optimizer.problem.TIE_TOL`) to the lower sparsity. Drops and sparsities are
compared rounded to :data:`KEY_DECIMALS` decimals so that sums taken in another order still tie.

Merging blocks one at a time and filtering after every merge gives the exact frontier of the whole problem
(a dominated partial configuration only completes into dominated configurations). Once built, a budget is
answered by a lookup: the frontier is sorted by the key, so the answer is its first point within both budgets.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import numpy as np

__all__ = ['OptionGroup', 'Frontier', 'pareto_indices', 'build_frontier', 'KEY_DECIMALS']

#: Decimals to which drops and sparsities are rounded when two configurations are compared.
KEY_DECIMALS = 9


@dataclass
class OptionGroup:
    """The options of one block as arrays (``index``: their positions in the block's option list)."""
    latency: np.ndarray
    memory: np.ndarray
    loss: np.ndarray
    sparsity: np.ndarray
    index: np.ndarray

    def __len__(self) -> int:
        return len(self.index)

    def take(self, keep: np.ndarray) -> 'OptionGroup':
        return OptionGroup(self.latency[keep], self.memory[keep], self.loss[keep], self.sparsity[keep],
                           self.index[keep])


def key_order(latency: np.ndarray, memory: np.ndarray, loss: np.ndarray, sparsity: np.ndarray) -> np.ndarray:
    """Indices sorting points by (rounded loss, rounded sparsity, latency, memory)."""
    return np.lexsort((memory, latency, np.round(sparsity, KEY_DECIMALS), np.round(loss, KEY_DECIMALS)))


def pareto_indices(latency: np.ndarray, memory: np.ndarray, loss: np.ndarray, sparsity: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points, in key order (best key first).

    Points are visited best key first; each is compared with a staircase of the (latency, memory) pairs visited
    so far (latency ascending, memory strictly descending): it is dominated iff the last staircase step at or
    below its latency has memory at or below its own. ``O(n log n)`` comparisons (the list edits are memmoves).
    """
    order = key_order(latency, memory, loss, sparsity)
    steps_x: List[float] = []
    steps_y: List[float] = []
    keep: List[int] = []
    for rank, (x, y) in enumerate(zip(latency[order].tolist(), memory[order].tolist())):
        i = bisect.bisect_right(steps_x, x)
        if i and steps_y[i - 1] <= y:
            continue
        end = i
        while end < len(steps_x) and steps_y[end] >= y:
            end += 1
        steps_x[i:end] = [x]
        steps_y[i:end] = [y]
        keep.append(rank)
    return order[np.asarray(keep, dtype=np.int64)]


@dataclass
class Frontier:
    """Non-dominated configurations in key order; ``choice[i, g]`` is the option of group ``g`` (its position)."""
    latency: np.ndarray
    memory: np.ndarray
    loss: np.ndarray
    sparsity: np.ndarray
    choice: np.ndarray

    def __len__(self) -> int:
        return len(self.latency)

    def as_group(self) -> OptionGroup:
        """The frontier as the options of one group (positions as indices; ``choice`` maps them back)."""
        return OptionGroup(self.latency, self.memory, self.loss, self.sparsity, np.arange(len(self)))

    def candidates(self, latency_budget: float, memory_budget: float, limit: int = 4) -> np.ndarray:
        """Up to ``limit`` positions of points within both budgets (block totals), best first."""
        within = (self.latency <= latency_budget) & (self.memory <= memory_budget)
        return np.flatnonzero(within)[:limit]


def build_frontier(groups: Sequence[OptionGroup], max_points: int,
                   keep: Callable[..., np.ndarray] = pareto_indices) -> Optional[Frontier]:
    """The frontier of all configurations of ``groups``; ``None`` if a merge would exceed ``max_points``.

    Args:
        groups: One :class:`OptionGroup` per block (of every model solved together).
        max_points: Largest number of candidate configurations a single merge may create; bounds the build
            time (about a microsecond per candidate) and the memory.
        keep: ``(latency, memory, loss, sparsity) -> indices`` of the points that can still win, in key order:
            :func:`pareto_indices` (both budgets), or a one-budget filter (a frontier for that budget alone).
    """
    latency = np.zeros(1)
    memory = np.zeros(1)
    loss = np.zeros(1)
    sparsity = np.zeros(1)
    choice = np.zeros((1, 0), dtype=np.int16)
    for group in groups:
        k = len(group)
        if len(latency) * k > max_points:
            return None
        latency = (latency[:, None] + group.latency).ravel()
        memory = (memory[:, None] + group.memory).ravel()
        loss = (loss[:, None] + group.loss).ravel()
        sparsity = (sparsity[:, None] + group.sparsity).ravel()
        picked = np.tile(np.arange(k, dtype=np.int16), len(choice))[:, None]
        choice = np.concatenate([np.repeat(choice, k, axis=0), picked], axis=1)
        kept = keep(latency, memory, loss, sparsity)
        latency, memory, loss, sparsity, choice = (latency[kept], memory[kept], loss[kept], sparsity[kept],
                                                   choice[kept])
    return Frontier(latency, memory, loss, sparsity, choice)
