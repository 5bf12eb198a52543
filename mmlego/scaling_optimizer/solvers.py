"""Solvers of the scaling problem: the exact ILP through pulp (LegoDNN's, the reference) and an exhaustive one.

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
from typing import Dict, List, Optional, Protocol, Sequence, Union, runtime_checkable

import pulp

from .exact import ExactSolver
from .problem import (ModelProblem, ScalingResult, Selection, as_problem_list, budget_slack, check_budget, fits,
                      infeasible_result, make_result, min_drop_selection, precheck_infeasible, sparsity_total,
                      tie_slack, totals, weighted_drop)

__all__ = ['Solver', 'ExactSolver', 'PulpSolver', 'BruteForceSolver', 'SOLVERS', 'solve']


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


class PulpSolver:
    """Exact solver: the ILP above, solved by CBC (bundled with pulp) or another pulp solver.

    Before building the ILP it returns the infeasible result when a budget is below the minimal achievable total
    of its resource, and the unconstrained optimum (per block the smallest drop) when that already fits. After
    solving, the chosen configuration's totals are recomputed exactly; if the solver's own feasibility tolerance
    let it exceed a budget by more than the module's tolerance, that configuration is cut off and the ILP
    re-solved. Ties are then broken toward lower sparsity by a second solve of the same ILP with the weighted drop
    bounded by the optimum (plus the tie tolerance) and the total sparsity as objective; its answer is kept only if
    its exactly recomputed drop still ties with the optimum (so the optimum never changes). With ``time_limit_s``
    each of the two solves has that limit.

    Args:
        time_limit_s: Time limit for CBC, in seconds; a solve stopped by it returns status ``'feasible'`` (best
            configuration found, optimality not proven) or raises ``RuntimeError`` if none was found.
        solver_cmd: A pulp solver to use instead of the default
            ``pulp.PULP_CBC_CMD(msg=False, gapAbs=0, gapRel=0)``; it carries its own options, so it cannot be
            combined with ``time_limit_s``.

    Raises:
        ValueError: If ``time_limit_s`` is not a positive number or is given together with ``solver_cmd``.
    """
    name = 'pulp'
    max_resolves = 20  # configurations cut off for tolerance violations before giving up

    def __init__(self, time_limit_s: Optional[float] = None,
                 solver_cmd: Optional[pulp.LpSolver] = None) -> None:
        if time_limit_s is not None and not (isinstance(time_limit_s, (int, float)) and time_limit_s > 0):
            raise ValueError(f'time_limit_s must be None or a number > 0, got {time_limit_s!r}')
        if time_limit_s is not None and solver_cmd is not None:
            raise ValueError('give either time_limit_s or solver_cmd, not both; set the time limit on the '
                             'solver_cmd itself (e.g. pulp.PULP_CBC_CMD(timeLimit=...))')
        self.time_limit_s = time_limit_s
        self.solver_cmd = solver_cmd if solver_cmd is not None else pulp.PULP_CBC_CMD(
            msg=False, gapAbs=0, gapRel=0, timeLimit=time_limit_s)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(time_limit_s={self.time_limit_s!r}, solver_cmd={self.solver_cmd.name!r})'

    def solve(self, problems: Union[ModelProblem, Sequence[ModelProblem]], latency_ms: Optional[float],
              memory_bytes: Optional[float]) -> ScalingResult:
        """Solve exactly; see :func:`solve` for the arguments, the result and the infeasible case.

        Raises:
            ValueError: For invalid problems or budgets.
            RuntimeError: If the pulp solver ends without a usable solution (e.g. the time limit struck first).
        """
        start = time.perf_counter()
        problems, latency_ms, memory_bytes = _prepare(problems, latency_ms, memory_bytes)
        infeasible = precheck_infeasible(problems, latency_ms, memory_bytes, self.name, start)
        if infeasible is not None:
            return infeasible
        selection = min_drop_selection(problems)
        if all(map(fits, totals(problems, selection), (latency_ms, memory_bytes))):
            return make_result(problems, selection, 'optimal', self.name, start)

        model, x = self._build(problems, latency_ms, memory_bytes)
        found = self._solve_within_budgets(model, x, problems, latency_ms, memory_bytes)
        if found is None:
            return infeasible_result(problems, latency_ms, memory_bytes, self.name, start)
        selection, status = found
        selection = self._break_ties(model, x, problems, latency_ms, memory_bytes, selection)
        return make_result(problems, selection, status, self.name, start)

    def _solve_within_budgets(self, model: pulp.LpProblem, x, problems: Sequence[ModelProblem],
                              latency_ms: Optional[float], memory_bytes: Optional[float]) -> Optional[tuple]:
        """Solves ``model``, cutting off answers over budget; ``(selection, status)`` or None if infeasible."""
        for _ in range(self.max_resolves + 1):
            model.solve(self.solver_cmd)
            if model.status == pulp.LpStatusInfeasible:
                return None
            if model.status != pulp.LpStatusOptimal:
                raise RuntimeError(
                    f'{self.solver_cmd.name} ended with status {pulp.LpStatus.get(model.status, model.status)!r} '
                    'and no integer solution' + (f' within time_limit_s={self.time_limit_s}; raise the limit'
                                                 if self.time_limit_s is not None else ''))
            selection = self._read(x)
            if all(map(fits, totals(problems, selection), (latency_ms, memory_bytes))):
                return selection, 'optimal' if model.sol_status == pulp.LpSolutionOptimal else 'feasible'
            chosen = [x[m][b][s] for m, picked in enumerate(selection) for b, s in enumerate(picked)]
            model += pulp.lpSum(chosen) <= len(chosen) - 1  # cut off this configuration only
        raise RuntimeError(f'{self.solver_cmd.name} kept returning configurations over budget beyond the '
                           f'relative tolerance; gave up after {self.max_resolves} re-solves')

    def _break_ties(self, model: pulp.LpProblem, x, problems: Sequence[ModelProblem],
                    latency_ms: Optional[float], memory_bytes: Optional[float], selection: Selection) -> Selection:
        """Among the configurations tied with ``selection``'s weighted drop, one of the lowest total sparsity."""
        lowest = math.fsum(min(o.sparsity for o in options) for p in problems for options in p.blocks.values())
        if sparsity_total(problems, selection) <= lowest:
            return selection  # every block already at its lowest sparsity
        best = weighted_drop(problems, selection)
        # A fresh model: after solving one whose objective was empty (every drop equal), pulp keeps a dummy
        # variable that a new objective leaves without a column, and CBC rejects the file.
        model, x = self._build(problems, latency_ms, memory_bytes)
        drop_terms, sparsity_terms = [], []
        for m, problem in enumerate(problems):
            for b, options in enumerate(problem.blocks.values()):
                min_drop = min(o.accuracy_drop for o in options)
                min_sparsity = min(o.sparsity for o in options)
                for var, o in zip(x[m][b], options):
                    drop_terms.append((problem.weight * (o.accuracy_drop - min_drop), var))
                    sparsity_terms.append((o.sparsity - min_sparsity, var))
        base = math.fsum(p.weight * min(o.accuracy_drop for o in options)
                         for p in problems for options in p.blocks.values())
        drop_terms = [(c, v) for c, v in drop_terms if c]
        if drop_terms:  # without terms every configuration ties
            model += pulp.lpSum(c * v for c, v in drop_terms) <= best - base + tie_slack(best), 'tie_accuracy_drop'
        model.setObjective(pulp.lpSum(c * v for c, v in sparsity_terms if c) + 0)
        try:
            found = self._solve_within_budgets(model, x, problems, latency_ms, memory_bytes)
        except RuntimeError:
            found = None  # e.g. the time limit struck: the first answer stands
        if found is None or weighted_drop(problems, found[0]) > best + tie_slack(best) \
                or sparsity_total(problems, found[0]) >= sparsity_total(problems, selection):
            return selection
        return found[0]

    @staticmethod
    def _build(problems: Sequence[ModelProblem], latency_ms: Optional[float],
               memory_bytes: Optional[float]) -> tuple:
        """The ILP, written in offsets from each block's cheapest option to keep the coefficients small."""
        model = pulp.LpProblem('legodnn_scaling', pulp.LpMinimize)
        x: List[List[List[pulp.LpVariable]]] = []
        loss, latency, memory = [], [], []
        base_latency = [p.frame_latency_ms for p in problems]
        base_memory = sum(p.frame_memory_bytes for p in problems)
        for m, problem in enumerate(problems):
            x.append([])
            for b, options in enumerate(problem.blocks.values()):
                variables = [pulp.LpVariable(f'x_{m}_{b}_{s}', cat=pulp.LpBinary) for s in range(len(options))]
                x[m].append(variables)
                model += pulp.lpSum(variables) == 1, f'one_option_{m}_{b}'
                min_drop = min(o.accuracy_drop for o in options)
                min_latency = min(o.latency_ms for o in options)
                min_memory = min(o.memory_bytes for o in options)
                base_latency.append(min_latency)
                base_memory += min_memory
                for var, o in zip(variables, options):
                    loss.append((problem.weight * (o.accuracy_drop - min_drop), var))
                    latency.append((o.latency_ms - min_latency, var))
                    memory.append((o.memory_bytes - min_memory, var))
        # Minimising the weighted drop maximises the weighted metric (the teachers' metrics are constants).
        model += pulp.lpSum(c * v for c, v in loss if c) + 0, 'weighted_accuracy_drop'
        for name, terms, budget, base in (('latency', latency, latency_ms, math.fsum(base_latency)),
                                          ('memory', memory, memory_bytes, base_memory)):
            terms = [(c, v) for c, v in terms if c]
            if budget is not None and terms:  # without terms the precheck already proved the constraint holds
                model += pulp.lpSum(c * v for c, v in terms) <= budget + budget_slack(budget) - base, name
        return model, x

    @staticmethod
    def _read(x: List[List[List[pulp.LpVariable]]]) -> Selection:
        selection = []
        for blocks in x:
            picked = []
            for variables in blocks:
                values = [v.value() or 0.0 for v in variables]
                best = max(range(len(values)), key=values.__getitem__)
                if values[best] < 0.5:
                    raise RuntimeError(f'the pulp solver returned a fractional choice {values}')
                picked.append(best)
            selection.append(picked)
        return selection


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


#: Solver classes by the name :func:`solve` accepts.
SOLVERS: Dict[str, type] = {'exact': ExactSolver, 'pulp': PulpSolver, 'brute_force': BruteForceSolver}


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
