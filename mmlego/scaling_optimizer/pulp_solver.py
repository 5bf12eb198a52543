"""LegoDNN's own solver: the ILP of :mod:`.solvers` built with pulp and solved by CBC, the reference.

Imported only when ``solver='pulp'`` is asked for (or :class:`PulpSolver` imported), so serving needs no pulp.
"""
from __future__ import annotations

import math
import time
from typing import List, Optional, Sequence, Union

import pulp

from .problem import (ModelProblem, ScalingResult, Selection, budget_slack, fits, infeasible_result, make_result,
                      min_drop_selection, precheck_infeasible, sparsity_total, tie_slack, totals, weighted_drop)
from .solvers import _prepare

__all__ = ['PulpSolver']


class PulpSolver:
    """Exact solver: the ILP of :mod:`.solvers`, solved by CBC (bundled with pulp) or another pulp solver.

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
