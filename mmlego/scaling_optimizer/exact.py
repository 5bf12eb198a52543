"""The default exact solver: structure prepared once per set of problems, then a budget answered by lookup.

The online problem of a bank changes only its budgets. :class:`PreparedProblems` therefore does the work that does
not depend on them once: per block it drops the options another option of the same block dominates, and it builds
the frontier of non-dominated configurations (:mod:`.frontier`) when that stays small (real banks: tens to a few
thousand points). A budget is then a vectorized lookup. When the frontier would be too large (many blocks, or
several models under one budget), each budget is solved by branch and bound with LP bounds
(:mod:`.branch_and_bound`); if even that would keep too many states, by the PuLP/CBC reference. Every answer is
exact, with the tolerances and the tie-break of :mod:`.problem`.
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict
from typing import List, Optional, Sequence, Union

import numpy as np

from .branch_and_bound import SearchData, SearchTooLarge, block_budget, branch_and_bound, pareto_one_resource
from .frontier import Frontier, OptionGroup, build_frontier, pareto_indices
from .problem import (ModelProblem, ScalingResult, Selection, as_problem_list, check_budget, fits,
                      infeasible_result, make_result, totals)

__all__ = ['ExactSolver', 'PreparedProblems']


class PreparedProblems:
    """Problems sharing one budget, prepared for many budgets (see the module docstring).

    Args:
        problems: One model, or several sharing the budgets (unique names).
        max_frontier: Largest number of candidate configurations one merge of the frontier may create; above it
            no frontier is built and every budget is searched (default: 50,000 for one model, 200,000 for
            several; a merge costs about a microsecond per candidate, once).
        max_states: States per block beyond which the search gives up and the budget goes to PuLP/CBC.

    Raises:
        ValueError: For invalid or duplicate problems.
    """

    def __init__(self, problems: Union[ModelProblem, Sequence[ModelProblem]], max_frontier: Optional[int] = None,
                 max_states: int = 200_000) -> None:
        self.problems: List[ModelProblem] = as_problem_list(problems)
        if max_frontier is None:  # several models: their joint search is the hard case, worth a larger frontier
            max_frontier = 50_000 if len(self.problems) == 1 else 200_000
        self.max_frontier = max_frontier
        self.max_states = max_states
        self.groups: List[OptionGroup] = []
        self.owner: List[int] = []  # group -> index of its model
        for m, problem in enumerate(self.problems):
            for options in problem.blocks.values():
                group = OptionGroup(latency=np.array([o.latency_ms for o in options], dtype=float),
                                    memory=np.array([o.memory_bytes for o in options], dtype=float),
                                    loss=np.array([problem.weight * o.accuracy_drop for o in options], dtype=float),
                                    sparsity=np.array([o.sparsity for o in options], dtype=float),
                                    index=np.arange(len(options)))
                self.groups.append(group.take(np.sort(pareto_indices(group.latency, group.memory, group.loss,
                                                                     group.sparsity))))
                self.owner.append(m)
        self.frame_latency = math.fsum(p.frame_latency_ms for p in self.problems)
        self.frame_memory = sum(p.frame_memory_bytes for p in self.problems)
        self.min_latency = math.fsum([self.frame_latency] + [float(g.latency.min()) for g in self.groups])
        self.min_memory = self.frame_memory + sum(int(g.memory.min()) for g in self.groups)
        self._frontier: Optional[Frontier] = None
        self._frontier_tried = False
        self._alone: dict = {}  # 'latency' / 'memory' -> the frontier for that budget alone (None: too large)
        self._search_data: Optional[tuple] = None  # (SearchData, positions -> per-block positions)

    @property
    def frontier(self) -> Optional[Frontier]:
        """The frontier of non-dominated configurations, built on first use; ``None`` if too large."""
        if not self._frontier_tried:
            self._frontier = build_frontier(self.groups, self.max_frontier)
            self._frontier_tried = True
        return self._frontier

    def frontier_alone(self, resource: str) -> Optional[Frontier]:
        """The frontier for a ``'latency'`` or ``'memory'`` budget alone, built on first use; ``None`` if too
        large. Far smaller than :attr:`frontier` (a staircase of the budgeted resource against the key, see
        :func:`~.branch_and_bound.pareto_one_resource`), so it is built where that one is not."""
        if resource not in self._alone:
            def keep(latency, memory, loss, sparsity):
                used = latency if resource == 'latency' else memory
                return pareto_one_resource(used, latency, memory, loss, sparsity)
            self._alone[resource] = build_frontier(self.groups, self.max_frontier, keep)
        return self._alone[resource]

    def ready(self) -> 'PreparedProblems':
        """Does all the budget-independent work now: the frontier, or where it is too large the search's merged
        groups and LP bounds (otherwise the first :meth:`solve` that needs them builds them)."""
        if self.frontier is None and self._search_data is None:
            self.frontier_alone('latency')
            self.frontier_alone('memory')
            self._search_data = self._prepare_search()
        return self

    def _prepare_search(self) -> tuple:
        """The search's groups: with several models, each model's own frontier (a few hundred configurations
        at most for real banks) is one group, so the search has one layer per model; else the blocks."""
        if len(self.problems) > 1:
            frontiers, start = [], 0
            for m in range(len(self.problems)):
                count = self.owner.count(m)
                frontier = build_frontier(self.groups[start:start + count], self.max_frontier)
                frontiers.append(frontier)
                start += count
            if all(f is not None for f in frontiers):
                groups = [f.as_group() for f in frontiers]

                def expand(positions: Sequence[int]) -> List[int]:
                    return [int(i) for f, position in zip(frontiers, positions) for i in f.choice[position]]
                return SearchData(groups), expand
        return SearchData(self.groups), list

    def _lookup(self, frontier: Frontier, lefts: tuple, budgets: tuple):
        """The best point of ``frontier`` within the block budgets ``lefts`` whose exact totals fit ``budgets``:
        per block its position; None if no point is within them; False if the float sums and the exact totals
        disagree at the edge for every candidate (left to the caller)."""
        candidates = frontier.candidates(*lefts)
        if not len(candidates):
            return None
        for point in candidates:
            positions = [int(i) for i in frontier.choice[point]]
            if self._fits(self._selection(positions), *budgets):  # exact totals decide, not the float sums
                return positions
        return False

    def _search(self, latency_ms: Optional[float], memory_bytes: Optional[float], latency_left: float,
                memory_left: float) -> Optional[List[int]]:
        """Without the joint frontier: per block the position of the chosen option, None if none fits.

        Each finite budget alone is looked up first in its own frontier (:meth:`frontier_alone`, where it was
        small enough to build): the best configuration under one budget that also fits the other is the best
        under both (the configurations within both are a subset, and the tie-break is the same). Branch and bound
        runs only when no such answer settles it.

        Raises:
            SearchTooLarge: The search would keep too many states.
        """
        for resource, budget, left in (('latency', latency_ms, latency_left), ('memory', memory_bytes, memory_left)):
            frontier = self.frontier_alone(resource)
            if frontier is None or not math.isfinite(left):
                continue
            alone = (budget, None) if resource == 'latency' else (None, budget)
            positions = self._lookup(frontier, (left, math.inf) if resource == 'latency' else (math.inf, left),
                                     alone)
            if positions is None:  # nothing fits even this budget alone
                return None
            if positions is not False and self._fits(self._selection(positions), latency_ms, memory_bytes):
                return positions  # the best under this budget alone fits the other one too
        search, expand = self.ready()._search_data
        positions = branch_and_bound(search, latency_left, memory_left, max_states=self.max_states)
        return expand(positions) if positions is not None else None

    def _selection(self, positions: Sequence[int]) -> Selection:
        """Per model, per block, the option index of per-group positions in the filtered groups."""
        selection: Selection = [[] for _ in self.problems]
        for m, group, position in zip(self.owner, self.groups, positions):
            selection[m].append(int(group.index[position]))
        return selection

    def _fits(self, selection: Selection, latency_ms: Optional[float], memory_bytes: Optional[float]) -> bool:
        return all(map(fits, totals(self.problems, selection), (latency_ms, memory_bytes)))

    def solve(self, latency_ms: Optional[float] = None, memory_bytes: Optional[float] = None) -> ScalingResult:
        """The best configuration within the budgets; see :func:`~mmlego.scaling_optimizer.solve`.

        Raises:
            ValueError: For a negative, NaN or non-numeric budget.
        """
        start = time.perf_counter()
        latency_ms = check_budget(latency_ms, 'latency_ms')
        memory_bytes = check_budget(memory_bytes, 'memory_bytes')
        if not (fits(self.min_latency, latency_ms) and fits(self.min_memory, memory_bytes)):
            return infeasible_result(self.problems, latency_ms, memory_bytes, ExactSolver.name, start)
        latency_left = block_budget(latency_ms, self.frame_latency)
        memory_left = block_budget(memory_bytes, self.frame_memory)
        frontier = self.frontier
        if frontier is not None:
            positions = self._lookup(frontier, (latency_left, memory_left), (latency_ms, memory_bytes))
            if positions is None:
                return infeasible_result(self.problems, latency_ms, memory_bytes, ExactSolver.name, start)
            if positions is not False:
                return make_result(self.problems, self._selection(positions), 'optimal', ExactSolver.name, start)
        else:
            unconstrained = self._selection([int(np.lexsort((g.sparsity, g.loss))[0]) for g in self.groups])
            if self._fits(unconstrained, latency_ms, memory_bytes):
                return make_result(self.problems, unconstrained, 'optimal', ExactSolver.name, start)
            try:
                positions = self._search(latency_ms, memory_bytes, latency_left, memory_left)
            except SearchTooLarge:
                positions = None
            else:
                if positions is None:
                    return infeasible_result(self.problems, latency_ms, memory_bytes, ExactSolver.name, start)
                selection = self._selection(positions)
                if self._fits(selection, latency_ms, memory_bytes):
                    return make_result(self.problems, selection, 'optimal', ExactSolver.name, start)
        # The search gave up, or rounding in the float sums put its answer a hair over a budget: the reference.
        from .pulp_solver import PulpSolver  # only on this rare path: serving needs no pulp
        result = PulpSolver().solve(self.problems, latency_ms, memory_bytes)
        result.solver = f'{ExactSolver.name}/{result.solver}'
        return result


def _content_key(problems: Sequence[ModelProblem]) -> tuple:
    """A hashable key of everything a solve and its result depend on (names, weights, frames, the metric estimate
    and every option)."""
    values, shape = [], []
    for problem in problems:
        values += [problem.weight, problem.frame_latency_ms, problem.frame_memory_bytes, problem.teacher_metric,
                   problem.drop_interaction]
        shape.append((problem.name, tuple(problem.blocks)))
        for options in problem.blocks.values():
            shape.append(len(options))
            for o in options:
                values += [o.sparsity, o.accuracy_drop, o.latency_ms, o.memory_bytes]
    return tuple(shape), np.asarray(values, dtype=float).tobytes()


class ExactSolver:
    """Exact and fast: the problems are prepared once (cached by content) and each budget answered from them.

    Args:
        max_frontier: See :class:`PreparedProblems`.
        max_states: See :class:`PreparedProblems`.
        cache_size: Prepared problem sets kept (least recently used are dropped; shared by all instances).
    """
    name = 'exact'
    _cache: 'OrderedDict[tuple, PreparedProblems]' = OrderedDict()

    def __init__(self, max_frontier: Optional[int] = None, max_states: int = 200_000, cache_size: int = 16) -> None:
        self.max_frontier = max_frontier
        self.max_states = max_states
        self.cache_size = cache_size

    def __repr__(self) -> str:
        return f'{type(self).__name__}(max_frontier={self.max_frontier}, max_states={self.max_states})'

    def prepare(self, problems: Union[ModelProblem, Sequence[ModelProblem]]) -> PreparedProblems:
        """The prepared form of ``problems`` (from the cache when the same content was prepared before)."""
        problems = as_problem_list(problems)
        key = (self.max_frontier, self.max_states, _content_key(problems))
        prepared = self._cache.get(key)
        if prepared is None:
            prepared = PreparedProblems(problems, self.max_frontier, self.max_states)
            self._cache[key] = prepared
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return prepared

    def solve(self, problems: Union[ModelProblem, Sequence[ModelProblem]], latency_ms: Optional[float],
              memory_bytes: Optional[float]) -> ScalingResult:
        """Solve exactly; see :func:`~mmlego.scaling_optimizer.solve` for the arguments and the result."""
        start = time.perf_counter()
        result = self.prepare(problems).solve(latency_ms, memory_bytes)
        result.solve_time_s = time.perf_counter() - start
        return result
