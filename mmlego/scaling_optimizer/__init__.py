"""LegoDNN's online scaling optimizer: pick one option (sparsity) per block within latency/memory budgets.

Example:
    >>> from mmlego.scaling_optimizer import BlockOption, ModelProblem, solve
    >>> problem = ModelProblem('net', teacher_metric=0.75, blocks={
    ...     'layer1': [BlockOption(0.0, 0.0, 4.0, 1000), BlockOption(0.5, 0.02, 2.0, 500)],
    ...     'layer2': [BlockOption(0.0, 0.0, 6.0, 2000), BlockOption(0.5, 0.05, 3.0, 1000)]})
    >>> solve(problem, latency_ms=8.0).choice()
    {'layer1': 0.5, 'layer2': 0.0}

See :func:`solve` for the model of the problem, the shared budget of several models and the infeasible case.
"""
from .budget import BUDGET_KEYS, format_budget, parse_budget, resolve_budget
from .problem import REL_TOL, TIE_TOL, BlockOption, ModelProblem, ScalingResult, budget_range
from .exact import ExactSolver, PreparedProblems
from .solvers import SOLVERS, BruteForceSolver, Solver, solve


def __getattr__(name: str):
    if name == 'PulpSolver':  # imports pulp: on first use only, the runtime serves without it
        from .pulp_solver import PulpSolver
        return PulpSolver
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = ['BlockOption', 'ModelProblem', 'ScalingResult', 'Solver', 'ExactSolver', 'PreparedProblems', 'PulpSolver',
           'BruteForceSolver', 'SOLVERS', 'solve', 'budget_range', 'REL_TOL', 'TIE_TOL',
           'BUDGET_KEYS', 'parse_budget', 'resolve_budget', 'format_budget']
