"""Exact search for problems whose frontier is too large to build: breadth-first branch and bound.

The blocks are assigned one at a time; every partial configuration (a "state") is extended by each option of the
next block and kept only while it can still win:

* each resource alone can still fit (the cheapest completion of that resource is within its budget);
* its lower bound on the final drop does not exceed the incumbent's, or it might still tie the incumbent with
  a lower total sparsity (the tie-break every solver applies). The bound is the state's drop plus the LP
  relaxation of the remaining blocks under one surrogate constraint ``u1*latency + u2*memory <= what is left``
  (either budget alone, or both combined with the Lagrangian multipliers of the root), which any configuration
  within both budgets satisfies. Per block the LP walks the lower convex hull of its options from the one with
  the least drop toward less resource; over the remaining blocks it takes the hull segments cheapest per unit
  saved first, so the bound of every state is one interpolation in a precomputed piecewise-linear function;
* no other state dominates it (at most as slow, as large, and at least as good), filtered when states pile up.

The multipliers come from subgradient ascent on the Lagrangian dual. The first incumbent is the LP's own solution
rounded (its hull segments taken whole until both budgets hold) and improved one block at a time: a few vectorized
steps, where a beam search over the ~30 layers costs as much as the exact pass itself. Only when the exact pass then
keeps too many states does a beam search (ranked by the same bound) look for a better incumbent and the pass
restart. None of this affects exactness, only how much is pruned.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .frontier import KEY_DECIMALS, OptionGroup, build_frontier, key_order, pareto_indices
from .incumbent import lp_path, rounded_incumbent
from .problem import budget_slack, tie_slack

__all__ = ['branch_and_bound', 'SearchData', 'SearchTooLarge', 'block_budget', 'pareto_one_resource']

#: States above which the dominance filter runs on a layer (below it, the bound alone prunes cheaply).
DOMINANCE_FROM = 20000
#: The same with one budget only: the filter is then one vectorized pass (see :func:`pareto_one_resource`).
DOMINANCE_FROM_ONE_RESOURCE = 1000


def pareto_one_resource(resource: np.ndarray, latency: np.ndarray, memory: np.ndarray, loss: np.ndarray,
                        sparsity: np.ndarray) -> np.ndarray:
    """Indices of the states that can still win with one budget (on ``resource``), in key order.

    With one budget the other resource cannot make a state win: a state with a strictly better key that uses at
    most as much of the budgeted resource fits wherever this one fits. Among states of equal (rounded) key the
    tie-break is (latency, then memory): one that comes first in that order and uses at most as much of the
    budgeted resource wins every completion the other could win (the completions add the same to both), so of
    equal keys only those using strictly less of it than every state before them in key order are kept (with a
    latency budget, one per key). Denoised drops make many keys equal (zero drops), so this keeps the layers of
    several models' joint search small.
    """
    order = key_order(latency, memory, loss, sparsity)
    used = resource[order]
    key_loss, key_sparsity = np.round(loss[order], KEY_DECIMALS), np.round(sparsity[order], KEY_DECIMALS)
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = (key_loss[1:] != key_loss[:-1]) | (key_sparsity[1:] != key_sparsity[:-1])
    group = np.cumsum(starts) - 1
    least = np.minimum.accumulate(np.minimum.reduceat(used, np.flatnonzero(starts)))
    before = np.concatenate([[math.inf], least[:-1]])  # least use among the strictly better keys
    # The least use before each state within its own key (a segmented running minimum, exact on integer ranks).
    rank = np.unique(used, return_inverse=True)[1].astype(np.int64).ravel()
    shift = group.astype(np.int64) * (int(rank.max(initial=0)) + 1)
    running = np.minimum.accumulate(rank - shift) + shift
    within = np.concatenate([[np.iinfo(np.int64).max], running[:-1]])
    within[starts] = np.iinfo(np.int64).max
    return order[(used < before[group]) & (rank < within)]


class SearchTooLarge(RuntimeError):
    """The search would keep more states than allowed; the caller falls back to another exact solver."""


class _Padded:
    """The groups as (blocks x options) arrays, short groups padded with copies of their last option."""

    def __init__(self, groups: Sequence[OptionGroup]) -> None:
        width = max(len(g) for g in groups)
        pad = [np.minimum(np.arange(width), len(g) - 1) for g in groups]
        self.count = np.array([len(g) for g in groups])
        self.latency = np.stack([g.latency[p] for g, p in zip(groups, pad)])
        self.memory = np.stack([g.memory[p] for g, p in zip(groups, pad)])
        self.loss = np.stack([g.loss[p] for g, p in zip(groups, pad)])
        self.sparsity = np.stack([g.sparsity[p] for g, p in zip(groups, pad)])

        def suffix(values: np.ndarray) -> np.ndarray:  # sum over blocks k.. of the per-block minimum
            return np.concatenate([np.cumsum(values.min(axis=1)[::-1])[::-1], [0.0]])

        self.rest_latency = suffix(self.latency)
        self.rest_memory = suffix(self.memory)


def _dual(p: _Padded, multipliers: np.ndarray, budgets: np.ndarray) -> Tuple[float, np.ndarray]:
    """The Lagrangian dual at ``multipliers`` (per unit of the budget-normalized resources) and a subgradient."""
    scaled = multipliers / budgets
    cost = p.loss + scaled[0] * p.latency + scaled[1] * p.memory
    pick = cost.argmin(axis=1)
    rows = np.arange(len(pick))
    used = np.array([p.latency[rows, pick].sum(), p.memory[rows, pick].sum()]) / budgets
    return float(cost[rows, pick].sum() - multipliers.sum()), used - 1.0


def _multipliers(p: _Padded, budgets: np.ndarray, iterations: int = 20) -> np.ndarray:
    """Subgradient ascent with diminishing steps on the dual; the best multipliers found."""
    best = current = np.zeros(2)
    best_value = _dual(p, best, budgets)[0]
    spread = float(p.loss.max() - p.loss.min()) * len(p.loss) or 1.0
    for it in range(iterations):
        value, gradient = _dual(p, current, budgets)
        if value > best_value:
            best, best_value = current.copy(), value
        norm = float(gradient @ gradient)
        if norm == 0.0:
            break
        current = np.maximum(0.0, current + spread / (it + 1) / norm * gradient)
    return best


class _Layers:
    """States of the search and the back-pointers that rebuild a configuration."""

    def __init__(self) -> None:
        self.parents: List[np.ndarray] = []
        self.options: List[np.ndarray] = []

    def push(self, parents: np.ndarray, options: np.ndarray) -> None:
        self.parents.append(parents)
        self.options.append(options)

    def selection(self, state: int) -> List[int]:
        picked = []
        for parents, options in zip(reversed(self.parents), reversed(self.options)):
            picked.append(int(options[state]))
            state = int(parents[state])
        return picked[::-1]


def _hull_segments(cost: List[float], loss: List[float]) -> Tuple[int, List[Tuple[float, float, int]]]:
    """One block's LP: the least-drop option and the hull segments (cost saved, drop added, option reached) from it
    toward less cost, cheapest per unit saved first."""
    start = min(range(len(cost)), key=lambda i: (loss[i], cost[i]))
    segments, at = [], start
    while True:
        best, best_slope = None, math.inf
        for i in range(len(cost)):
            if cost[i] < cost[at]:
                slope = (loss[i] - loss[at]) / (cost[at] - cost[i])
                if slope < best_slope or (slope == best_slope and cost[i] < cost[best]):
                    best, best_slope = i, slope
        if best is None:
            return start, segments
        segments.append((cost[at] - cost[best], loss[best] - loss[at], best))
        at = best


class _SurrogateBound:
    """Per first remaining block ``k``, the LP minimum of ``objective`` (the drop, or the sparsity for the
    tie-break) over blocks ``k..`` as a function of the surrogate cost left."""

    def __init__(self, p: _Padded, weights: np.ndarray, objective: np.ndarray) -> None:
        cost = weights[0] * p.latency + weights[1] * p.memory
        blocks = len(cost)
        self.weights = weights
        self.cost = cost
        self.base = np.zeros(blocks + 1)  # drop of the least-drop options of blocks k..
        self.start = np.zeros(blocks + 1)  # their cost
        self.saved: List[np.ndarray] = [np.zeros(1)] * (blocks + 1)
        self.added: List[np.ndarray] = [np.zeros(1)] * (blocks + 1)
        slopes, saved, added = np.zeros(0), np.zeros(0), np.zeros(0)
        block, reached = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        self.start_options = np.zeros(blocks, dtype=np.int64)
        for k in reversed(range(blocks)):
            count = int(p.count[k])
            start, segments = _hull_segments(cost[k, :count].tolist(), objective[k, :count].tolist())
            self.start_options[k] = start
            if segments:
                ds, dl, to = np.array(segments).T
                slopes, saved, added = (np.concatenate([slopes, dl / ds]), np.concatenate([saved, ds]),
                                        np.concatenate([added, dl]))
                block = np.concatenate([block, np.full(len(segments), k)])
                reached = np.concatenate([reached, to.astype(np.int64)])
                order = np.argsort(slopes, kind='stable')  # a block's own segments keep their (convex) order
                slopes, saved, added, block, reached = (slopes[order], saved[order], added[order], block[order],
                                                        reached[order])
            self.base[k] = self.base[k + 1] + objective[k, start]
            self.start[k] = self.start[k + 1] + cost[k, start]
            self.saved[k] = np.concatenate([[0.0], np.cumsum(saved)])
            self.added[k] = np.concatenate([[0.0], np.cumsum(added)])
        self.segment_block, self.segment_option = block, reached  # of all blocks (k = 0), in the LP's order

    def __call__(self, k: int, left: np.ndarray) -> np.ndarray:
        """Lower bound on the objective of blocks ``k..`` with surrogate cost ``left`` (``inf``: cannot fit)."""
        need = np.maximum(self.start[k] - left, 0.0)
        saved = self.saved[k]
        bound = self.base[k] + np.interp(need, saved, self.added[k])
        tolerance = 1e-9 * max(abs(self.start[k]), 1e-300)
        return np.where(need > saved[-1] + tolerance, math.inf, bound)


class _Relaxation:
    """One resource relaxation: the LP bounds of the drop and of the sparsity under ``weights . (latency, memory)``."""

    def __init__(self, p: _Padded, weights: np.ndarray) -> None:
        self.weights = weights
        self._path: Optional[tuple] = None
        self.loss = _SurrogateBound(p, weights, p.loss)
        self.sparsity = _SurrogateBound(p, weights, p.sparsity)

    def left(self, latency_left: float, memory_left: float) -> float:
        return sum(w * left for w, left in zip(self.weights, (latency_left, memory_left)) if w)

    def rounded(self, p: _Padded, latency_left: float, memory_left: float) -> Optional[Tuple[float, float, List[int]]]:
        """This relaxation's LP solution rounded and improved (:func:`.incumbent.rounded_incumbent`)."""
        if self._path is None:
            self._path = lp_path(p, self.loss)
        return rounded_incumbent(p, self.loss, self._path, latency_left, memory_left)


class SearchData:
    """What the search needs of a set of groups, prepared once: padded arrays and the single-resource bounds."""

    def __init__(self, groups: Sequence[OptionGroup], max_options: int = 24) -> None:
        # Consecutive blocks merged into one group while their joint frontier stays small: fewer, wider layers
        # (the per-layer cost is mostly fixed overhead), the same LP bound (hulls add up).
        self.members: List[Tuple[int, np.ndarray]] = []  # merged group -> (first block, choice per option)
        merged: List[OptionGroup] = []
        first = 0
        while first < len(groups):
            end = first + 1
            frontier = build_frontier(groups[first:end], max_points=10 ** 9)
            while end < len(groups):
                wider = build_frontier(groups[first:end + 1], max_points=max_options * len(groups[end]))
                if wider is None or len(wider) > max_options:
                    break
                frontier, end = wider, end + 1
            merged.append(frontier.as_group())
            self.members.append((first, frontier.choice))
            first = end
        self.padded = _Padded(merged)
        self.by_latency = _Relaxation(self.padded, np.array([1.0, 0.0]))
        self.by_memory = _Relaxation(self.padded, np.array([0.0, 1.0]))

    def positions(self, merged: Sequence[int]) -> List[int]:
        """Per block, the position of its option, from the chosen option of every merged group."""
        return [int(i) for (_, choice), option in zip(self.members, merged) for i in choice[option]]

    def relaxations(self, latency_left: float, memory_left: float) -> List[_Relaxation]:
        """The bounds for a budget pair: each finite budget alone, and both combined by the root's multipliers."""
        found = []
        if math.isfinite(latency_left):
            found.append(self.by_latency)
        if math.isfinite(memory_left):
            found.append(self.by_memory)
        if len(found) == 2:
            budgets = np.maximum(np.array([latency_left, memory_left]), 1e-300)
            weights = _multipliers(self.padded, budgets) / budgets
            if np.all(weights > 0):  # with one multiplier at zero the combination is one of the two above
                found.append(_Relaxation(self.padded, weights))
        return found


def _search(data: SearchData, latency_left: float, memory_left: float, relaxations: Sequence[_Relaxation],
            incumbent: Optional[Tuple[float, float]], beam: Optional[int],
            max_states: int) -> Optional[Tuple[float, float, List[int]]]:
    """One breadth-first pass: exact (``beam=None``) or keeping the ``beam`` best-bounded states per layer."""
    p = data.padded
    lefts = [r.left(latency_left, memory_left) for r in relaxations]
    latency = memory = loss = sparsity = np.zeros(1)
    costs = [np.zeros(1) for _ in relaxations]
    layers = _Layers()
    for k in range(len(p.loss)):
        # Cheap tests on every extension first (resources alone), the bounds only on the survivors.
        count = int(p.count[k])
        fits = ((latency[:, None] + p.latency[k, :count] + p.rest_latency[k + 1] <= latency_left)
                & (memory[:, None] + p.memory[k, :count] + p.rest_memory[k + 1] <= memory_left))
        parents, options = np.nonzero(fits)
        if not len(parents):
            return None
        # The bounds on the survivors of the previous relaxation only; the sparsity's bound (the tie-break) only
        # on the states whose drop bound ties the incumbent's.
        new_loss = loss[parents] + p.loss[k, options]
        # Not the drop so far: with negative drops (a pruned block that scored above the teacher) the blocks
        # left can lower it. Only the relaxations bound the final drop.
        bound = np.full(len(parents), -math.inf)
        for j, (relaxation, left) in enumerate(zip(relaxations, lefts)):
            cost = costs[j][parents] + relaxation.loss.cost[k, options]
            bound = np.maximum(bound, new_loss + relaxation.loss(k + 1, left - cost))
            keep = np.isfinite(bound)
            if incumbent is not None:
                best_loss, best_sparsity = incumbent
                slack = tie_slack(best_loss) + 1e-12 * max(abs(best_loss), 1.0)
                keep &= bound <= best_loss + slack
                tie = np.flatnonzero(keep & (bound >= best_loss - slack))
                if len(tie):
                    tied = sparsity[parents[tie]] + p.sparsity[k, options[tie]]
                    tied = tied + relaxation.sparsity(k + 1, left - cost[tie])
                    keep[tie] = tied < best_sparsity - 1e-9
            if not keep.all():
                parents, options, new_loss, bound = parents[keep], options[keep], new_loss[keep], bound[keep]
            if not len(parents):
                return None
        if beam is not None and len(parents) > beam:  # best bound first; on equal bounds, the least resources used
            used = np.zeros(len(parents))
            for parent_total, step, left in ((latency, p.latency, latency_left), (memory, p.memory, memory_left)):
                if math.isfinite(left) and left > 0:
                    used += (parent_total[parents] + step[k, options]) / left
            new_sparsity = sparsity[parents] + p.sparsity[k, options]
            index = np.lexsort((used, new_sparsity, bound))[:beam]
            parents, options, new_loss = parents[index], options[index], new_loss[index]
        latency = latency[parents] + p.latency[k, options]
        memory = memory[parents] + p.memory[k, options]
        loss, sparsity = new_loss, sparsity[parents] + p.sparsity[k, options]
        costs = [c[parents] + r.loss.cost[k, options] for c, r in zip(costs, relaxations)]
        one_resource = math.isinf(latency_left) != math.isinf(memory_left)
        if beam is None and len(loss) > (DOMINANCE_FROM_ONE_RESOURCE if one_resource else DOMINANCE_FROM):
            if one_resource:
                budgeted = memory if math.isinf(latency_left) else latency
                kept = pareto_one_resource(budgeted, latency, memory, loss, sparsity)
            else:
                kept = pareto_indices(latency, memory, loss, sparsity)
            latency, memory, loss, sparsity = latency[kept], memory[kept], loss[kept], sparsity[kept]
            costs = [c[kept] for c in costs]
            parents, options = parents[kept], options[kept]
        if len(loss) > max_states:
            raise SearchTooLarge(f'{len(loss)} states after block {k}')
        layers.push(parents, options)
    best = int(key_order(latency, memory, loss, sparsity)[0])
    return float(loss[best]), float(sparsity[best]), layers.selection(best)


def branch_and_bound(data: SearchData, latency_left: float, memory_left: float, beam: int = 8,
                     max_states: int = 200_000, retry_states: int = 500) -> Optional[List[int]]:
    """The best configuration within the block budgets (``inf``: none), or ``None`` if none fits.

    Args:
        data: The :class:`SearchData` of the groups (one per block, in a fixed order).
        latency_left: Latency budget left for the blocks (budget plus tolerance minus the frames).
        memory_left: Memory budget left for the blocks.
        beam: Width of the beam search that finds the first incumbent.
        max_states: States per layer beyond which :class:`SearchTooLarge` is raised.
        retry_states: States per layer beyond which the pass with the rounded incumbent restarts with the beam
            search's incumbent.

    Returns:
        Per group the position of the chosen option in the group, or ``None`` if no configuration fits.
    """
    relaxations = data.relaxations(latency_left, memory_left)
    # The first incumbent: the best LP rounding of the relaxations, improved block by block (microseconds). Where
    # it prunes too little (the exact pass grows past ``retry_states``), a beam search finds a better one first.
    rounded = [r.rounded(data.padded, latency_left, memory_left) for r in relaxations]
    rounded = [r for r in rounded if r is not None]
    found = min(rounded, key=_key) if rounded else None
    if found is not None:
        try:
            exact = _search(data, latency_left, memory_left, relaxations, found[:2], None,
                            min(max_states, retry_states))
        except SearchTooLarge:
            pass
        else:
            return _better(data, found, exact)
    searched = _search(data, latency_left, memory_left, relaxations, None, beam, max_states)
    if searched is not None and (found is None or _key(searched) < _key(found)):
        found = searched
    incumbent = None if found is None else found[:2]
    exact = _search(data, latency_left, memory_left, relaxations, incumbent, None, max_states)
    return _better(data, found, exact)


def _key(found: Tuple[float, float, List[int]]) -> Tuple[float, float]:
    return round(found[0], KEY_DECIMALS), round(found[1], KEY_DECIMALS)


def _better(data: SearchData, found: Optional[tuple], exact: Optional[tuple]) -> Optional[List[int]]:
    """The exact pass's answer, or the incumbent where the pass found nothing better (it prunes ties)."""
    if exact is None:
        return None if found is None else data.positions(found[2])
    if found is not None and _key(found) <= _key(exact):
        return data.positions(found[2])
    return data.positions(exact[2])


def block_budget(budget: Optional[float], frame: float) -> float:
    """A budget as left for the blocks: with the tolerance of :func:`~.problem.fits`, minus the frames."""
    if budget is None:
        return math.inf
    return budget + budget_slack(budget) - frame
