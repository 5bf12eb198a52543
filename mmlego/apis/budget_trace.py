"""Replaying a shared budget trace over several models (``tools/replay_budget_trace.py``): table and timeline.

Each step of the trace sets the shared budget; the :class:`~mmlego.runtime.MultiModelRuntime` re-solves when it
changed and switches the blocks that differ. Then every model is measured as it now runs: the median latency of
its tensor path and its metric on the report split (the config's test set), next to the optimizer's estimates.
"""
from __future__ import annotations

import copy
import csv
import io
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Sequence

from mmengine.logging import print_log

__all__ = ['ModelProbe', 'replay_trace', 'write_trace', 'check_trace_feasible']

_MB = 2 ** 20


@contextmanager
def _scope(name: str | None):
    from mmengine.registry import DefaultScope
    if name is None:
        yield
        return
    with DefaultScope.overwrite_default_scope(name):
        yield


class ModelProbe:
    """Measures one model of a runtime as it runs: tensor-path latency and report-split metric.

    Args:
        model: The LegoDNN model (``model.cfg`` holds its config).
        latency_repeats: Timed forwards per measurement (median, after ``latency_warmup`` untimed); 0: skipped.
        latency_warmup: Untimed forwards before timing.
        max_batches: Report-split batches evaluated per step (None: all); 0 skips the metric.
    """

    def __init__(self, model, latency_repeats: int = 10, latency_warmup: int = 2,
                 max_batches: int | None = None) -> None:
        from mmengine.evaluator import Evaluator
        from mmengine.runner import Runner

        from ..models.tensor_path import example_batch
        self.model, self.cfg = model, model.cfg
        self.latency_repeats, self.latency_warmup, self.max_batches = latency_repeats, latency_warmup, max_batches
        self.scope = self.cfg.get('default_scope')
        with _scope(self.scope):
            self.example = example_batch(self.cfg, model.architecture, batch_size=1, split='test')
            self.loader = self.evaluator = None
            if max_batches != 0:
                loader_cfg = copy.deepcopy(self.cfg.test_dataloader)
                loader_cfg.update(num_workers=0, persistent_workers=False)
                self.loader = Runner.build_dataloader(loader_cfg)
                self.evaluator = Evaluator(copy.deepcopy(self.cfg.test_evaluator))
                self.evaluator.dataset_meta = getattr(self.loader.dataset, 'metainfo', None)

    def latency_ms(self) -> float | None:
        """Median wall time of one tensor-path forward of the running configuration."""
        if not self.latency_repeats:
            return None
        return self.model.measure_latency_ms(self.example, self.latency_warmup, self.latency_repeats)

    def metric(self) -> float | None:
        """The bank's metric (``profiles.metric_name``) on the report split, or None when skipped."""
        if self.loader is None:
            return None
        from ..engine.task_metrics import evaluate_model
        with _scope(self.scope):
            metrics = evaluate_model(self.model, self.loader, self.evaluator, max_batches=self.max_batches)
        name = self.model.bank.profiles.metric_name
        if name not in metrics:
            raise KeyError(f'the test evaluator reports {sorted(metrics)}, not the bank\'s metric {name!r}; use the '
                           'test_evaluator the bank was profiled with')
        return float(metrics[name])


def check_trace_feasible(runtime, trace: Sequence[tuple[float, dict]]) -> None:
    """Refuses a trace with a step below the smallest joint configuration, before anything runs.

    Raises:
        InfeasibleBudgetError: Names the first such step and the smallest joint configuration.
    """
    from ..scaling_optimizer import budget_range
    from ..scaling_optimizer.budget import InfeasibleBudgetError
    limits = budget_range(runtime.problems())
    for index, (time_s, budget) in enumerate(trace):
        budget = runtime.absolute_budget(budget)
        if (budget['memory_mb'] is not None and budget['memory_mb'] * _MB < limits['min_memory_bytes']) or \
                (budget['latency_ms'] is not None and budget['latency_ms'] < limits['min_latency_ms']):
            raise InfeasibleBudgetError(f'trace step {index} (time {time_s:g} s): '
                                        f'{runtime.smallest_message(budget)}; or pass --allow-infeasible to run '
                                        'the smallest configuration there')


def replay_trace(runtime, trace: Sequence[tuple[float, dict]], probes: dict[str, ModelProbe],
                 on_step: Callable[[dict], None] | None = None) -> list[dict[str, Any]]:
    """Runs the trace: per step set the budget (re-solve and switch only when it changed), then measure.

    Args:
        runtime: The :class:`~mmlego.runtime.MultiModelRuntime`.
        trace: ``(time_s, budget)`` pairs, e.g. from :func:`mmlego.engine.budget_schedule.load_schedule`.
        probes: ``name -> ModelProbe`` for every model of the runtime.
        on_step: Called with each row (e.g. to log it).

    Returns:
        One row per step (see :data:`write_trace` for the columns).
    """
    from ..utils.progress import progress
    rows, previous = [], None
    for index, (time_s, budget) in enumerate(progress(trace, 'budget trace')):
        budget = runtime.absolute_budget(budget)
        solved = budget != previous
        if solved:
            result = runtime.scale(**budget, on_infeasible='smallest')
            previous = budget
        else:
            runtime.last_changed = {}
            result = runtime.last_result
        row: dict[str, Any] = dict(step=index, time_s=time_s, budget_memory_mb=budget['memory_mb'],
                                   budget_latency_ms=budget['latency_ms'], status=result.status,
                                   solved=solved, solve_ms=result.solve_time_s * 1000 if solved else 0.0,
                                   switched_blocks=sum(len(c) for c in runtime.last_changed.values()))
        measured_total = 0.0
        for name, probe in probes.items():
            measured = probe.latency_ms()
            metric = probe.metric()
            teacher = runtime.models[name].bank.profiles.teacher_metric
            measured_total = None if measured is None or measured_total is None else measured_total + measured
            row.update({f'{name}/memory_mb': result.memory_bytes[name] / _MB,
                        f'{name}/estimated_latency_ms': result.latency_ms[name],
                        f'{name}/measured_latency_ms': measured,
                        f'{name}/estimated_metric': result.estimated_metric[name],
                        f'{name}/measured_metric': metric,
                        f'{name}/teacher_metric': teacher,
                        f'{name}/sparsities': ';'.join(f'{b}={s:g}' for b, s in result.choice(name).items())})
        row.update(memory_mb=result.total_memory_bytes / _MB, estimated_latency_ms=result.total_latency_ms,
                   measured_latency_ms=measured_total)
        rows.append(row)
        if on_step is not None:
            on_step(row)
    return rows


def _plot(rows: Sequence[dict[str, Any]], names: Sequence[str], path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    times = [row['time_s'] for row in rows]
    # Steps hold until the next one: the last step is drawn for one more (median) interval so it shows.
    gaps = sorted(b - a for a, b in zip(times, times[1:])) or [1.0]
    end = times[-1] + (gaps[len(gaps) // 2] or 1.0)
    fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    for ax, key, unit in ((axes[0], 'memory_mb', 'memory (MB)'), (axes[1], 'latency_ms', 'latency (ms)')):
        field = 'memory_mb' if key == 'memory_mb' else 'estimated_latency_ms'
        stacks = [[row[f'{name}/{field}'] for row in rows] + [rows[-1][f'{name}/{field}']] for name in names]
        ax.stackplot(times + [end], *stacks, labels=[f'{name} (estimate)' for name in names], alpha=0.6, step='post')
        budgets = [row[f'budget_{key}'] for row in rows]
        if any(b is not None for b in budgets):
            ax.step(times + [end], [math.nan if b is None else b for b in budgets + budgets[-1:]], 'k-', where='post',
                    label='budget')
        if key == 'latency_ms' and any(row['measured_latency_ms'] is not None for row in rows):
            ax.plot(times, [row['measured_latency_ms'] for row in rows], 'rs-', label='measured total (median)')
        ax.set_ylabel(unit)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc='upper right')
    for name, color in zip(names, plt.rcParams['axes.prop_cycle'].by_key()['color']):
        teacher = rows[0][f'{name}/teacher_metric'] or 1.0
        axes[2].step(times + [end], [row[f'{name}/estimated_metric'] / teacher for row in rows + rows[-1:]], '--',
                     where='post',
                     color=color, label=f'{name} estimated')
        measured = [row[f'{name}/measured_metric'] for row in rows]
        if any(m is not None for m in measured):
            axes[2].plot(times, [math.nan if m is None else m / teacher for m in measured], 's-', color=color,
                         label=f'{name} measured (report split)')
    axes[2].set_ylabel('metric / teacher (profiling split)')
    axes[2].set_xlabel('time (s)')
    axes[2].grid(True, alpha=0.3)
    axes[2].legend(fontsize=8, loc='lower right')
    fig.suptitle(f'shared budget trace over {", ".join(names)}', fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_trace(rows: Sequence[dict[str, Any]], names: Sequence[str], info: dict[str, Any],
                out: str | Path) -> list[Path]:
    """Writes ``trace.csv`` (one row per step: the budget, status, solve time, switched blocks, totals and per
    model ``<name>/memory_mb``, ``estimated_latency_ms``, ``measured_latency_ms``, ``estimated_metric``,
    ``measured_metric``, ``sparsities``), ``trace.json`` and ``trace.png`` (the timeline) into ``out``."""
    from ..utils.atomic_io import atomic_write_json, atomic_write_text
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / 'trace.csv', text.getvalue())
    atomic_write_json(out / 'trace.json', dict(info, rows=list(rows)))
    _plot(rows, names, out / 'trace.png')
    print_log(f'budget trace: {len(rows)} steps written to {out}', logger='current')
    return [out / 'trace.csv', out / 'trace.json', out / 'trace.png']

