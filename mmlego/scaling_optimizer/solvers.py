"""Solvers of the scaling problem: the exact ILP through pulp (LegoDNN's, the reference, in :mod:`.pulp_solver`)
and an exhaustive one.

The default, ``'exact'``, lives in :mod:`.exact` (prepared once per problem set, then frontier lookup or branch
and bound); this module holds the references and :func:`solve`.

The problem is a multiple-choice knapsack with up to two resources. With a binary ``x[m, b, s]`` per model ``m``,
block ``b`` and option ``s``::

    maximise   sum_m weight_m * (teacher_m - sum_{b,s} drop[m,b,s] * x[m,b,s])
    subject to sum_s x[m,b,s] = 1                                  for every block
               sum_m frame_latency_m + sum_{m,b,s} latency[m,b,s] * x[m,b,s] <= latency budget   (if given)
               sum_m frame_memory_m + sum_{m,b,s} memory[m,b,s] * x[m,b,s]   <= memory budget    (if given)

Ties (weighted drops within ``TIE_TOL``, see :mod:`.problem`) go to the lowest total sparsity, lexicographically:
the optimum is never traded for lower sparsity. Brute force compares (drop, sparsity) per configuration; the ILP
is re-solved once with its drop fixed at the optimum (plus the tie tolerance) and the total sparsity minimized.
"""
from __future__ import annotations

import itertools
import math
import time
from typing import Callable, Dict, Optional, Protocol, Sequence, Union, runtime_checkable

from .exact import ExactSolver
from .problem import (ModelProblem, ScalingResult, Selection, as_problem_list, check_budget, fits, infeasible_result,
                      make_result, tie_slack)

__all__ = ['Solver', 'ExactSolver', 'BruteForceSolver', 'SOLVERS', 'solve']


@runtime_checkable
class Solver(Protocol):
    """What :func:`solve` accepts as a solver: a ``name`` and a ``solve`` method."""
    name: str

    def solve(self, problems: Sequence[ModelProblem], latency_ms: Optional[float],
              memory_bytes: Optional[float]) -> ScalingResult:
        """Choose one option per block of every model within the budgets (``None``: unconstrained)."""
        ...


def _prepare(problems, latency_ms, memory_bytes) -> tuple:
    return (as_problem_list(problems), check_budget(latency_ms, 'latency_ms'),
            check_budget(memory_bytes, 'memory_bytes'))


class BruteForceSolver:
    """Exhaustive reference solver: tries every combination of options (for tests and tiny problems).

    Args:
        max_combinations: Largest number of combinations it agrees to enumerate.

    Raises:
        ValueError: From :meth:`solve`, if the problems have more combinations than ``max_combinations``.
    """
    name = 'brute_force'

    def __init__(self, max_combinations: int = 200_000) -> None:
        if not isinstance(max_combinations, int) or max_combinations < 1:
            raise ValueError(f'max_combinations must be an int >= 1, got {max_combinations!r}')
        self.max_combinations = max_combinations

    def __repr__(self) -> str:
        return f'{type(self).__name__}(max_combinations={self.max_combinations})'

    def solve(self, problems: Union[ModelProblem, Sequence[ModelProblem]], latency_ms: Optional[float],
              memory_bytes: Optional[float]) -> ScalingResult:
        """Solve by enumeration; see :func:`solve` for the arguments, the result and the infeasible case.

        Raises:
            ValueError: For invalid problems or budgets, or more than ``max_combinations`` combinations.
        """
        start = time.perf_counter()
        problems, latency_ms, memory_bytes = _prepare(problems, latency_ms, memory_bytes)
        blocks = [(m, options) for m, p in enumerate(problems) for options in p.blocks.values()]
        count = math.prod(len(options) for _, options in blocks)
        if count > self.max_combinations:
            raise ValueError(f'{count} combinations exceed max_combinations={self.max_combinations}; use '
                             "solver='pulp' for problems of this size")
        frame_latency = [p.frame_latency_ms for p in problems]
        frame_memory = sum(p.frame_memory_bytes for p in problems)
        latency = [[o.latency_ms for o in options] for _, options in blocks]
        memory = [[o.memory_bytes for o in options] for _, options in blocks]
        loss = [[problems[m].weight * o.accuracy_drop for o in options] for m, options in blocks]
        sparsity = [[o.sparsity for o in options] for _, options in blocks]
        best, best_loss, best_sparsity = None, math.inf, math.inf
        for combo in itertools.product(*(range(len(options)) for _, options in blocks)):
            total_latency = math.fsum(frame_latency + [latency[k][i] for k, i in enumerate(combo)])
            total_memory = frame_memory + sum(memory[k][i] for k, i in enumerate(combo))
            if not (fits(total_latency, latency_ms) and fits(total_memory, memory_bytes)):
                continue
            combo_loss = math.fsum(loss[k][i] for k, i in enumerate(combo))
            combo_sparsity = math.fsum(sparsity[k][i] for k, i in enumerate(combo))
            if best is None or combo_loss < best_loss - tie_slack(best_loss) or (
                    combo_loss <= best_loss + tie_slack(best_loss) and combo_sparsity < best_sparsity):
                best, best_loss, best_sparsity = combo, combo_loss, combo_sparsity
        if best is None:
            return infeasible_result(problems, latency_ms, memory_bytes, self.name, start)
        selection: Selection = [[] for _ in problems]
        for (m, _), i in zip(blocks, best):
            selection[m].append(i)
        return make_result(problems, selection, 'optimal', self.name, start)


def _pulp_solver(**kwargs) -> Solver:
    from .pulp_solver import PulpSolver  # pulp only when asked for: the runtime serves without it
    return PulpSolver(**kwargs)


#: Solver factories (classes, or the pulp solver's lazy constructor) by the name :func:`solve` accepts.
SOLVERS: Dict[str, Callable[..., Solver]] = {'exact': ExactSolver, 'pulp': _pulp_solver,
                                             'brute_force': BruteForceSolver}


def _get_solver(solver: Union[str, Solver]) -> Solver:
    if isinstance(solver, str):
        if solver not in SOLVERS:
            raise ValueError(f'unknown solver {solver!r}; known solvers: {sorted(SOLVERS)}')
        return SOLVERS[solver]()
    if not callable(getattr(solver, 'solve', None)):
        raise ValueError(f'solver must be one of {sorted(SOLVERS)} or an object with a solve(problems, '
                         f'latency_ms, memory_bytes) method, got {solver!r}')
    return solver


def solve(problems: Union[ModelProblem, Sequence[ModelProblem]], latency_ms: Optional[float] = None,
          memory_bytes: Optional[float] = None, solver: Union[str, Solver] = 'exact') -> ScalingResult:
    """Choose one option per block of every model, maximising the (weighted) estimated metric within budgets.

    Models given together share the budgets: their latencies add up (they run one after another on one device)
    and so do their memories. A total counts as within its budget up to a relative tolerance of 1e-9
    (:data:`~mmlego.scaling_optimizer.problem.REL_TOL`). Among configurations of the same (weighted) drop, up to
    :data:`~mmlego.scaling_optimizer.problem.TIE_TOL`, the one with the lowest total sparsity is chosen: without
    a budget, a bank whose drops are all >= 0 runs its teacher.

    If no configuration fits, the budget is not loosened: the result has status ``'infeasible'`` and holds the
    smallest configuration, with its estimates: per block the option with the least memory (ties broken by
    latency, then by accuracy drop) when the memory budget is violated or both budgets are, or the least latency
    (ties by memory, then drop) when only the latency budget is. Infeasibility is decided exactly and cheaply
    before solving by comparing each budget with the minimal achievable total of its resource (the sum of the
    per-block minima, as blocks are chosen independently); when both budgets are given and each fits alone but
    no configuration meets both, the solver itself reports infeasibility and the memory-first configuration is
    returned.

    Args:
        problems: One model, or several sharing the budgets (unique names).
        latency_ms: Budget on the total latency in ms; ``None`` (or ``inf``) for no constraint.
        memory_bytes: Budget on the total memory in bytes; ``None`` (or ``inf``) for no constraint.
        solver: A name from :data:`SOLVERS` (``'exact'``: prepared once per problem set, then frontier lookup or
            branch and bound, default; ``'pulp'``: the ILP solved by CBC, LegoDNN's formulation and the
            reference; ``'brute_force'``: enumeration) or a solver object.

    Returns:
        The :class:`ScalingResult`.

    Raises:
        ValueError: For a negative, NaN or non-numeric budget, invalid or duplicate problems, or an unknown
            solver name.
    """
    return _get_solver(solver).solve(problems, latency_ms, memory_bytes)
