"""Data model of LegoDNN's online scaling problem and the helpers every solver shares.

A model is split into blocks; each block has several options (the original block and its descendants at some
sparsities), each with an estimated accuracy drop, a latency and a memory footprint. Scaling picks one option per
block. For a model ``m`` with chosen options ``o_b``::

    metric(m)  = teacher_metric - (D + drop_interaction * D**2),  D = sum_b accuracy_drop(o_b)
    latency(m) = frame_latency_ms + sum_b latency_ms(o_b)
    memory(m)  = frame_memory_bytes + sum_b memory_bytes(o_b)

``drop_interaction`` (>= 0; 0 is LegoDNN's additive estimate) accounts for compound damage: drops measured one block
at a time add up to less than the damage of many pruned blocks together (fitted to the reference composites by
accuracy profiling). The estimate is an increasing function of ``D``, so for one model the configuration with the
smallest ``D`` is also the one with the best estimated metric: the solvers minimize the (weighted) sum of the drops,
for several models under one budget too (their objective stays LegoDNN's additive one).

Several models may share one budget (LegoDNN's multi-DNN runtime: they run one after another on one device), so
the constraints bound the totals over models and the objective is the weighted sum of the models' metrics.

Budgets are compared with a tolerance: a total counts as within ``budget`` when
``total <= budget + REL_TOL * max(|budget|, 1)`` (relative, and 1e-9 absolute for budgets below 1), so rounding
in the sums never decides feasibility and all solvers agree.

Ties: configurations whose weighted drops differ by at most ``TIE_TOL * max(|drop|, 1)`` are equally good, and
every solver then picks the one with the lowest total sparsity (a lexicographic second objective). Denoised drops
are often exactly zero for several sparsities of a block, so without a budget the teacher (every block at its
lowest sparsity) is chosen rather than whichever zero-drop descendant a solver happens to find first.
"""
from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Union

__all__ = ['BlockOption', 'ModelProblem', 'ScalingResult', 'budget_range', 'REL_TOL', 'TIE_TOL']

#: Relative tolerance with which a total still counts as within its budget.
REL_TOL = 1e-9

#: Relative tolerance within which two weighted drops are a tie (broken toward lower sparsity).
TIE_TOL = 1e-9

#: Per model, per block (in ``blocks`` order), the index of the chosen option.
Selection = List[List[int]]


@dataclass(frozen=True)
class BlockOption:
    """One way to run a block: the original block or a descendant pruned to ``sparsity``.

    Attributes:
        sparsity: Fraction of the block's channels pruned (identifies the option inside its block).
        accuracy_drop: Estimated drop of the model's metric, in metric units, when this option is used.
        latency_ms: Estimated latency of the block, in milliseconds.
        memory_bytes: Estimated memory footprint of the block, in bytes.
    """
    sparsity: float
    accuracy_drop: float
    latency_ms: float
    memory_bytes: int


def _is_finite(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0


@dataclass
class ModelProblem:
    """The options of one model's blocks, plus the cost of the part of the model outside the blocks.

    Attributes:
        name: Name of the model, unique among the problems solved together.
        teacher_metric: Metric of the unscaled (teacher) model.
        blocks: Block name -> its options, in order; sparsities must be unique within a block.
        frame_latency_ms: Latency of the model outside its blocks (the "frame"), in milliseconds.
        frame_memory_bytes: Memory of the frame, in bytes.
        weight: Weight of this model's metric in the objective of a shared budget (>= 0).
        drop_interaction: Compound-damage coefficient ``c`` of the metric estimate (>= 0, see the module docstring).

    Raises:
        ValueError: If a field is malformed; the message names the model, the block and how to fix it.
    """
    name: str
    teacher_metric: float
    blocks: Dict[str, List[BlockOption]]
    frame_latency_ms: float = 0.0
    frame_memory_bytes: int = 0
    weight: float = 1.0
    drop_interaction: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f'ModelProblem.name must be a non-empty string, got {self.name!r}')
        where = f'model {self.name!r}'
        if not _is_finite(self.teacher_metric):
            raise ValueError(f'{where}: teacher_metric must be a finite number, got {self.teacher_metric!r}')
        if not _is_finite(self.frame_latency_ms) or self.frame_latency_ms < 0:
            raise ValueError(f'{where}: frame_latency_ms must be a finite number >= 0, got '
                             f'{self.frame_latency_ms!r}; use 0.0 if the blocks cover the whole model')
        if not _is_count(self.frame_memory_bytes):
            raise ValueError(f'{where}: frame_memory_bytes must be an integer >= 0 (bytes), got '
                             f'{self.frame_memory_bytes!r}; use 0 if the blocks cover the whole model')
        if not _is_finite(self.weight) or self.weight < 0:
            raise ValueError(f'{where}: weight must be a finite number >= 0, got {self.weight!r}')
        if not _is_finite(self.drop_interaction) or self.drop_interaction < 0:
            raise ValueError(f'{where}: drop_interaction must be a finite number >= 0, got {self.drop_interaction!r}; '
                             'use 0.0 for the additive estimate')
        if not isinstance(self.blocks, dict) or not self.blocks:
            raise ValueError(f'{where}: blocks must be a non-empty dict of block name -> list of BlockOption, '
                             f'got {self.blocks!r}')
        for block, options in self.blocks.items():
            self._validate_block(where, block, options)

    def estimate(self, selection: Dict[str, float]) -> Dict[str, float]:
        """``metric``, ``latency_ms`` and ``memory_bytes`` of one descendant per block (block -> sparsity)."""
        options = [next(o for o in self.blocks[name] if o.sparsity == s) for name, s in selection.items()]
        return dict(metric=self.metric(options),
                    latency_ms=self.frame_latency_ms + sum(o.latency_ms for o in options),
                    memory_bytes=self.frame_memory_bytes + sum(o.memory_bytes for o in options))

    def metric(self, options: Sequence[BlockOption]) -> float:
        """The estimated metric with ``options`` chosen: the teacher's minus the drops' sum and its compound damage."""
        total = math.fsum(o.accuracy_drop for o in options)
        return self.teacher_metric - (total + self.drop_interaction * max(total, 0.0) ** 2)

    @staticmethod
    def _validate_block(where: str, block, options) -> None:
        if not isinstance(block, str) or not block:
            raise ValueError(f'{where}: block names must be non-empty strings, got {block!r}')
        where = f'{where}, block {block!r}'
        if isinstance(options, (str, bytes)) or not isinstance(options, Sequence) or not options:
            raise ValueError(f'{where}: needs a non-empty list of BlockOption (at least the original block at '
                             f'sparsity 0.0), got {options!r}')
        seen = set()
        for option in options:
            if not isinstance(option, BlockOption):
                raise ValueError(f'{where}: options must be BlockOption instances, got {option!r}; build them '
                                 'with BlockOption(sparsity, accuracy_drop, latency_ms, memory_bytes)')
            at = f'{where}, sparsity {option.sparsity!r}'
            if not _is_finite(option.sparsity):
                raise ValueError(f'{where}: sparsity must be a finite number, got {option.sparsity!r}')
            if option.sparsity in seen:
                raise ValueError(f'{where}: sparsity {option.sparsity!r} appears twice; keep one option per '
                                 'sparsity (e.g. the one profiled last)')
            seen.add(option.sparsity)
            if not _is_finite(option.accuracy_drop):
                raise ValueError(f'{at}: accuracy_drop must be a finite number, got {option.accuracy_drop!r}; '
                                 're-run the accuracy estimation for this block')
            if not _is_finite(option.latency_ms) or option.latency_ms < 0:
                raise ValueError(f'{at}: latency_ms must be a finite number >= 0, got {option.latency_ms!r}; '
                                 're-profile the block')
            if not _is_count(option.memory_bytes):
                raise ValueError(f'{at}: memory_bytes must be an integer >= 0 (bytes), got '
                                 f'{option.memory_bytes!r}; pass int(round(x)) for a float estimate')


@dataclass
class ScalingResult:
    """What a solver chose, and the estimates of the chosen configuration.

    Attributes:
        status: ``'optimal'``; ``'feasible'`` when a time limit stopped the solver before it proved optimality;
            or ``'infeasible'``, in which case ``choices`` is the smallest configuration (see
            :func:`mmlego.scaling_optimizer.solve`) and the estimates are its estimates.
        choices: Model name -> block name -> chosen sparsity.
        estimated_metric: Model name -> teacher metric minus the chosen options' accuracy drops
            (:meth:`ModelProblem.metric`).
        latency_ms: Model name -> estimated latency (frame plus chosen blocks).
        memory_bytes: Model name -> estimated memory (frame plus chosen blocks).
        solve_time_s: Wall time of the solve, in seconds.
        solver: Name of the solver that produced the result.
    """
    status: str
    choices: Dict[str, Dict[str, float]]
    estimated_metric: Dict[str, float]
    latency_ms: Dict[str, float]
    memory_bytes: Dict[str, int]
    solve_time_s: float
    solver: str

    @property
    def total_latency_ms(self) -> float:
        """Estimated latency of all models run one after another."""
        return math.fsum(self.latency_ms.values())

    @property
    def total_memory_bytes(self) -> int:
        """Estimated memory of all models together."""
        return sum(self.memory_bytes.values())

    def choice(self, model: Optional[str] = None) -> Dict[str, float]:
        """Block name -> chosen sparsity of one model.

        Args:
            model: Name of the model; may be omitted when the result holds a single model.

        Returns:
            The model's block name -> sparsity mapping.

        Raises:
            ValueError: If ``model`` is omitted with several models, or names no model of the result.
        """
        if model is None:
            if len(self.choices) != 1:
                raise ValueError(f'the result holds {len(self.choices)} models; pass one of '
                                 f'{sorted(self.choices)} as `model`')
            return next(iter(self.choices.values()))
        if model not in self.choices:
            raise ValueError(f'no model {model!r} in the result; known models: {sorted(self.choices)}')
        return self.choices[model]


# ----------------------------------------------------------------------------------------------------------
# Helpers shared by the solvers (not exported from the package).
# ----------------------------------------------------------------------------------------------------------

def budget_slack(budget: float) -> float:
    """How far a total may exceed ``budget`` and still count as within it."""
    return REL_TOL * max(abs(budget), 1.0)


def tie_slack(loss: float) -> float:
    """How far a weighted drop may exceed ``loss`` and still tie with it."""
    return TIE_TOL * max(abs(loss), 1.0)


def sparsity_total(problems: Sequence[ModelProblem], selection: Selection) -> float:
    """The tie-breaking objective: the sum of the chosen options' sparsities over all blocks of all models."""
    return math.fsum(options[i].sparsity for problem, picked in zip(problems, selection)
                     for options, i in zip(problem.blocks.values(), picked))


def weighted_drop(problems: Sequence[ModelProblem], selection: Selection) -> float:
    """The objective every solver minimizes: the weighted sum of the chosen options' drops."""
    return math.fsum(problem.weight * options[i].accuracy_drop for problem, picked in zip(problems, selection)
                     for options, i in zip(problem.blocks.values(), picked))


def fits(total: float, budget: Optional[float]) -> bool:
    """Whether ``total`` is within ``budget`` (``None``: unconstrained), with the tolerance of the module."""
    return budget is None or total <= budget + budget_slack(budget)


def check_budget(value, name: str) -> Optional[float]:
    """Validate a budget: ``None`` (unconstrained) or a number >= 0 (``inf`` means unconstrained).

    Raises:
        ValueError: If the budget is negative, NaN or not a number.
    """
    if value is None:
        return None
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or math.isnan(value) or value < 0:
        raise ValueError(f'{name} must be None (unconstrained) or a number >= 0, got {value!r}')
    return None if math.isinf(value) else float(value)


def as_problem_list(problems: Union[ModelProblem, Sequence[ModelProblem]]) -> List[ModelProblem]:
    """Normalise one problem or a sequence of them to a list; reject empty lists and duplicate names.

    Raises:
        ValueError: If there is no problem, an item is not a :class:`ModelProblem`, or two share a name.
    """
    items = [problems] if isinstance(problems, ModelProblem) else problems
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence) or not items:
        raise ValueError(f'expected a ModelProblem or a non-empty sequence of them, got {problems!r}')
    names = set()
    for problem in items:
        if not isinstance(problem, ModelProblem):
            raise ValueError(f'expected ModelProblem instances, got {problem!r}')
        if problem.name in names:
            raise ValueError(f'two problems are named {problem.name!r}; give every model a unique name')
        names.add(problem.name)
    return list(items)


def _pick(problems: Sequence[ModelProblem], key) -> Selection:
    """Per block, the index of the option minimising ``key(problem, option)``."""
    return [[min(range(len(options)), key=lambda i, p=p, o=options: key(p, o[i]))
             for options in p.blocks.values()] for p in problems]


def min_drop_selection(problems: Sequence[ModelProblem]) -> Selection:
    """The unconstrained optimum: per block the smallest weighted drop; ties (within :data:`TIE_TOL`) broken by
    lower sparsity, then latency, then memory."""
    selection = []
    for problem in problems:
        picked = []
        for options in problem.blocks.values():
            losses = [problem.weight * o.accuracy_drop for o in options]
            best = min(losses)
            tied = [i for i, loss in enumerate(losses) if loss <= best + tie_slack(best)]
            picked.append(min(tied, key=lambda i: (options[i].sparsity, options[i].latency_ms,
                                                   options[i].memory_bytes)))
        selection.append(picked)
    return selection


def smallest_selection(problems: Sequence[ModelProblem], latency_first: bool) -> Selection:
    """The smallest configuration: per block the least memory, then latency, then drop (or latency first)."""
    if latency_first:
        return _pick(problems, lambda p, o: (o.latency_ms, o.memory_bytes, o.accuracy_drop))
    return _pick(problems, lambda p, o: (o.memory_bytes, o.latency_ms, o.accuracy_drop))


def totals(problems: Sequence[ModelProblem], selection: Selection) -> tuple:
    """Total latency and total memory over all models of ``selection``."""
    latency, memory = [], 0
    for problem, picked in zip(problems, selection):
        latency.append(problem.frame_latency_ms)
        memory += problem.frame_memory_bytes
        for options, i in zip(problem.blocks.values(), picked):
            latency.append(options[i].latency_ms)
            memory += options[i].memory_bytes
    return math.fsum(latency), memory


def make_result(problems: Sequence[ModelProblem], selection: Selection, status: str, solver: str,
                start: float) -> ScalingResult:
    """Build a :class:`ScalingResult` from option indices, filling in every estimate."""
    choices, metric, latency, memory = {}, {}, {}, {}
    for problem, picked in zip(problems, selection):
        chosen = [options[i] for options, i in zip(problem.blocks.values(), picked)]
        choices[problem.name] = {block: o.sparsity for block, o in zip(problem.blocks, chosen)}
        metric[problem.name] = problem.metric(chosen)
        latency[problem.name] = math.fsum([problem.frame_latency_ms] + [o.latency_ms for o in chosen])
        memory[problem.name] = int(problem.frame_memory_bytes + sum(o.memory_bytes for o in chosen))
    return ScalingResult(status=status, choices=choices, estimated_metric=metric, latency_ms=latency,
                         memory_bytes=memory, solve_time_s=time.perf_counter() - start, solver=solver)


def _extreme_totals(problems: Sequence[ModelProblem], pick) -> tuple:
    latency = math.fsum([p.frame_latency_ms for p in problems]
                        + [pick(o.latency_ms for o in options) for p in problems for options in p.blocks.values()])
    memory = sum(p.frame_memory_bytes + sum(pick(o.memory_bytes for o in options) for options in p.blocks.values())
                 for p in problems)
    return latency, memory


def infeasible_result(problems: Sequence[ModelProblem], latency_ms: Optional[float],
                      memory_bytes: Optional[float], solver: str, start: float) -> ScalingResult:
    """The ``'infeasible'`` result: the smallest configuration for the violated resource(s), with estimates.

    Memory first (ties by latency, then drop) when memory alone cannot fit, or when each resource fits alone but
    not both together; latency first (ties by memory, then drop) when only latency cannot fit.
    """
    min_latency, min_memory = _extreme_totals(problems, min)
    latency_first = fits(min_memory, memory_bytes) and not fits(min_latency, latency_ms)
    return make_result(problems, smallest_selection(problems, latency_first), 'infeasible', solver, start)


def precheck_infeasible(problems: Sequence[ModelProblem], latency_ms: Optional[float],
                        memory_bytes: Optional[float], solver: str, start: float) -> Optional[ScalingResult]:
    """The infeasible result if a budget is below its minimal achievable total, else ``None``.

    Per resource the minimum total is the sum of the per-block minima, so this test is exact for each resource
    alone; a budget pair that fits separately but not jointly is left to the solver.
    """
    min_latency, min_memory = _extreme_totals(problems, min)
    if fits(min_latency, latency_ms) and fits(min_memory, memory_bytes):
        return None
    return infeasible_result(problems, latency_ms, memory_bytes, solver, start)


def budget_range(problems: Union[ModelProblem, Sequence[ModelProblem]]) -> Dict[str, float]:
    """The smallest and largest achievable totals over the given models, e.g. to sweep budgets.

    Args:
        problems: One model or several sharing a budget.

    Returns:
        ``{'min_latency_ms', 'max_latency_ms', 'min_memory_bytes', 'max_memory_bytes'}``; memories are ints.
    """
    problems = as_problem_list(problems)
    min_latency, min_memory = _extreme_totals(problems, min)
    max_latency, max_memory = _extreme_totals(problems, max)
    return {'min_latency_ms': min_latency, 'max_latency_ms': max_latency,
            'min_memory_bytes': int(min_memory), 'max_memory_bytes': int(max_memory)}
