"""Several LegoDNN models under one device budget (LegoDNN's multi-DNN setting).

A detector, a segmentor and a pose model that run one after another on one device share its memory and its
latency: their weight bytes add up, and so do their latencies per round. :class:`MultiModelRuntime` owns the models
(each keeps its own bank and switcher), solves them jointly when the shared budget changes, and switches only the
blocks whose descendant changed.

Metrics of different tasks are not comparable (mAP, mIoU, PCK, top-1). By default each model's drop counts relative
to its teacher (weight ``1 / teacher_metric``: losing 0.05 of a 0.5 mAP weighs as much as 0.1 of a 1.0 top-1);
explicit ``weights`` override that.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..latency_estimation import solve_under_headroom
from ..scaling_optimizer import ModelProblem, ScalingResult, solve
from ..scaling_optimizer.budget import InfeasibleBudgetError, format_budget, is_relative, parse_budget, \
    resolve_budget

__all__ = ['MultiModelRuntime', 'model_names']

_MB = 2 ** 20


def model_names(models: Mapping[str, Any] | Sequence[Any]) -> dict[str, Any]:
    """``name -> model``: a mapping as given, a sequence named by each model's config file (``model.cfg``).

    Raises:
        ValueError: Two models share a name, the same model object is given twice, or there is no model.
    """
    if isinstance(models, Mapping):
        named = dict(models)
    else:
        named = {}
        for index, model in enumerate(models):
            cfg = getattr(model, 'cfg', None)
            filename = getattr(cfg, 'filename', None)
            name = Path(filename).stem if filename else f'model{index}'
            if name in named:
                raise ValueError(f'two models share the name {name!r} (both built from {filename or "no config"}); '
                                 'pass a dict name -> model to name them')
            named[name] = model
    if not named:
        raise ValueError('no model given: pass a dict name -> LegoDNN model (or a list of them)')
    seen: dict[int, str] = {}
    for name, model in named.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f'model names must be non-empty strings, got {name!r}')
        if not (hasattr(model, 'bank') and hasattr(model, 'switch')):
            raise TypeError(f'model {name!r} is a {type(model).__name__}, not an mmlego.LegoDNN (build it with '
                            'mmlego.apis.init_lego_model)')
        if id(model) in seen:
            raise ValueError(f'models {seen[id(model)]!r} and {name!r} are the same object: one model has one '
                             'configuration; build a second model to run it twice')
        seen[id(model)] = name
    return named


class MultiModelRuntime:
    """Several :class:`~mmlego.models.LegoDNN` models scaled jointly under one shared budget.

    Args:
        models: ``name -> model`` (or a list, named by their config files); each with a bank attached.
        weights: ``name -> weight`` of its metric drop in the joint objective. Default: ``1 / teacher_metric`` per
            model (each model's metric relative to its teacher). Models not named keep the default.
        solver: The scaling optimizer's solver (``'exact'``, ``'pulp'`` or ``'brute_force'``).

    Raises:
        ValueError: Shared names, unknown names in ``weights``, a weight that is not a number >= 0, or a teacher
            metric <= 0 without an explicit weight.
        RuntimeError: A model has no bank.
    """

    def __init__(self, models: Mapping[str, Any] | Sequence[Any], weights: Mapping[str, float] | None = None,
                 solver: str = 'exact') -> None:
        self.models = model_names(models)
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(self.models))
        if unknown:
            raise ValueError(f'weights name unknown models {unknown}; the models are {sorted(self.models)}')
        self.weights: dict[str, float] = {}
        for name, model in self.models.items():
            teacher_metric = model._require_bank().profiles.teacher_metric
            weight = weights.get(name)
            if weight is None:
                if teacher_metric is None or not teacher_metric > 0:
                    raise ValueError(f'model {name!r} has teacher metric {teacher_metric!r}: its metric cannot be '
                                     'taken relative to the teacher; pass weights={name: w} explicitly')
                weight = 1.0 / teacher_metric
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
                    or weight < 0:
                raise ValueError(f'the weight of model {name!r} must be a finite number >= 0, got {weight!r}')
            self.weights[name] = float(weight)
        self.solver = solver
        self.budget: dict[str, float | None] | None = None
        self.last_result: ScalingResult | None = None
        self.last_changed: dict[str, list[str]] = {}
        self.last_headroom = 0.0  # the latency headroom the last scale() aimed under the shared budget with

    # -- the joint problem -----------------------------------------------------------------------------------
    def problems(self, corrected: bool = True) -> list[ModelProblem]:
        """One problem per model, latencies scaled by its ``latency_scale`` (and online correction)."""
        return [model.problem(name=name, weight=self.weights[name], corrected=corrected)
                for name, model in self.models.items()]

    def full_estimate(self) -> dict[str, float]:
        """Total latency (profiled, no online correction) and memory of every model at its teacher."""
        estimates = [model.full_model_estimate() for model in self.models.values()]
        return dict(latency_ms=math.fsum(e['latency_ms'] for e in estimates),
                    memory_mb=sum(e['memory_bytes'] for e in estimates) / _MB)

    def absolute_budget(self, budget: Mapping[str, Any] | str) -> dict[str, float | None]:
        """``budget`` parsed, shares (``'60%'``) taken of the teachers' total."""
        budget = parse_budget(budget)
        if is_relative(budget):
            full = self.full_estimate()
            budget = resolve_budget(budget, full['latency_ms'], full['memory_mb'])
        return budget

    def estimate(self) -> dict[str, Any]:
        """The running configuration: per model its estimates (``model.estimate()``), and the totals."""
        per_model = {name: model.estimate() for name, model in self.models.items()}
        return dict(models=per_model, latency_ms=math.fsum(e['latency_ms'] for e in per_model.values()),
                    memory_mb=sum(e['memory_bytes'] for e in per_model.values()) / _MB)

    def smallest_message(self, budget: Mapping[str, Any]) -> str:
        """Names the smallest joint configuration for a budget it does not meet."""
        from ..scaling_optimizer import budget_range
        problems = self.problems()
        limits = budget_range(problems)
        parts = []
        for problem in problems:
            one = budget_range(problem)
            parts.append(f'{problem.name} {one["min_memory_bytes"] / _MB:.2f} MB / {one["min_latency_ms"]:.2f} ms')
        return (f'shared budget {format_budget(budget)} is infeasible: the smallest joint configuration needs '
                f'{limits["min_memory_bytes"] / _MB:.2f} MB and {limits["min_latency_ms"]:.2f} ms (estimates; '
                f'{", ".join(parts)}); raise the budget or run fewer models')

    # -- scaling ---------------------------------------------------------------------------------------------
    def scale(self, latency_ms: float | str | None = None, memory_mb: float | str | None = None,
              on_infeasible: str = 'error') -> ScalingResult:
        """Solves every model jointly for a shared budget and switches the blocks that changed.

        Args:
            latency_ms: Limit on the summed latency of one forward of each model (ms, ``'30ms'``, ``'60%'`` of the
                teachers' total, or None); aimed at under the largest of the models' ``latency_headroom``
                (:attr:`last_headroom`; the limit itself when nothing fits under it).
            memory_mb: Limit on the summed weight bytes (MB, ``'20MB'``, ``'60%'``, or None).
            on_infeasible: ``'error'``: a budget below the smallest joint configuration raises (nothing switched);
                ``'smallest'``: run the smallest joint configuration (``result.status == 'infeasible'``).

        Returns:
            The optimizer's result (``choices`` per model name).

        Raises:
            InfeasibleBudgetError: The budget is below the smallest joint configuration (named in the message).
            ValueError: A limit that is not one, or an unknown ``on_infeasible``.
        """
        if on_infeasible not in ('error', 'smallest'):
            raise ValueError(f"on_infeasible must be 'error' or 'smallest', got {on_infeasible!r}")
        budget = self.absolute_budget(dict(latency_ms=latency_ms, memory_mb=memory_mb))
        memory = None if budget['memory_mb'] is None else budget['memory_mb'] * _MB
        problems = self.problems()
        # The models' largest latency headroom (each learned from its own predictions, see LegoDNN.scale).
        result, headroom = solve_under_headroom(
            lambda target: solve(problems, latency_ms=target, memory_bytes=memory, solver=self.solver),
            budget['latency_ms'], max(model.headroom.value for model in self.models.values()))
        if result.status == 'infeasible' and on_infeasible == 'error':
            raise InfeasibleBudgetError(self.smallest_message(budget))
        self.last_changed = {name: model.switch(result.choice(name)) for name, model in self.models.items()}
        for name, model in self.models.items():
            if self.last_changed[name] and model.correction is not None:
                model.headroom.predicted(result.latency_ms[name])
        self.budget, self.last_result, self.last_headroom = budget, result, headroom
        return result

    def rescale_if_needed(self, tolerance: float = 0.02) -> ScalingResult | None:
        """Re-solves the last budget when the online latency correction put the running total over it.

        Returns:
            The new result, or None when the running configuration still fits (or no latency budget is set).
        """
        if self.budget is None or self.budget['latency_ms'] is None:
            return None
        if self.estimate()['latency_ms'] <= self.budget['latency_ms'] * (1 + tolerance):
            return None
        infeasible = self.last_result is not None and self.last_result.status == 'infeasible'
        return self.scale(**self.budget, on_infeasible='smallest' if infeasible else 'error')

    def summary(self, result: ScalingResult | None = None) -> dict[str, Any]:
        """Per model: selection, estimated metric (absolute and relative to its teacher), latency, memory."""
        result = result or self.last_result
        if result is None:
            raise RuntimeError('nothing scaled yet: call scale() first')
        models = {}
        for name, model in self.models.items():
            teacher = model.bank.profiles.teacher_metric
            metric = result.estimated_metric[name]
            models[name] = dict(selection=dict(model.selection), metric=metric,
                                relative_metric=metric / teacher if teacher else None,
                                metric_name=model.bank.profiles.metric_name, teacher_metric=teacher,
                                latency_ms=result.latency_ms[name], memory_mb=result.memory_bytes[name] / _MB,
                                changed_blocks=list(self.last_changed.get(name, [])))
        return dict(status=result.status, models=models, latency_ms=result.total_latency_ms,
                    memory_mb=result.total_memory_bytes / _MB, solve_time_s=result.solve_time_s, result=result)
