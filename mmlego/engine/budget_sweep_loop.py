"""``mmlego.BudgetSweepLoop``: a test loop that evaluates a LegoDNN model at several budgets in one run.

Use it as a config's ``test_cfg`` (``tools/test.py --sweep N`` sets it)::

    test_cfg = dict(type='mmlego.BudgetSweepLoop', num_budgets=5, sweep_by='memory')

Each budget is one test epoch: the ``mmlego.OnlineScalingHook`` of the config (one with default settings is added
if there is none) scales the model to it, the evaluator measures the metric, and the hook measures memory and
latency. The loop returns the metrics of every budget prefixed ``sweep{i}/`` (also written to the message hub as
``test/sweep{i}/...`` scalars, and to the visualizer's backends as ``sweep/...`` with the budget index as the step:
``vis_data/scalars.json`` with the local backend, curves in TensorBoard), and writes the table and plots of
:func:`mmlego.apis.sweep.write_sweep` (``sweep.csv``, ``sweep.json``, PNGs) into ``out_dir``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from mmengine.dist import is_main_process
from mmengine.model import is_model_wrapper
from mmengine.runner import TestLoop

from ..registry import LOOPS
from ..utils.random_state import same_random_numbers
from .online_scaling_hook import OnlineScalingHook

_MB = 2 ** 20
#: Row fields of every budget written as scalars (``sweep{i}/legodnn_<key>`` and ``sweep/legodnn_<key>`` by step).
SWEEP_SCALARS = ('budget_memory_mb', 'budget_latency_ms', 'estimated_metric', 'measured_metric', 'estimated_drop',
                 'estimated_memory_mb', 'resident_memory_mb', 'corrected_latency_ms', 'measured_latency_ms',
                 'interleaved_latency_ms')


@LOOPS.register_module()
class BudgetSweepLoop(TestLoop):
    """Evaluates ``num_budgets`` budgets from the smallest configuration to the full model (or given ones).

    Args:
        runner: The runner.
        dataloader: The test dataloader.
        evaluator: The test evaluator.
        num_budgets: How many budgets, evenly spaced over the achievable range (>= 2).
        sweep_by: ``'memory'`` or ``'latency'``: the limit the sweep varies (the other is unconstrained).
        budgets: Explicit budgets instead (dicts or ``'key=value'`` strings, see
            :mod:`mmlego.scaling_optimizer.budget`); overrides ``num_budgets`` and ``sweep_by``.
        out_dir: Where the table and plots go (default ``work_dir/sweep``; None-like ``''`` writes nothing).
        fp16: Run the forwards in autocast (as mmengine's TestLoop).
        eval_seed: Every budget's evaluation draws the same random numbers from this seed (a model that samples
            at inference, as mmaction2's TRN head, is compared across budgets with the same draws); None: as the
            process's generators run.
        interleaved_seconds: When the hook measures latency, the rows' configurations are measured once more at
            the end, in visits interleaved over at least this many seconds (``interleaved_latency_ms`` of a row:
            :func:`~mmlego.engine.scaling_measurements.interleaved_latency_ms`), as a latency profile spans
            seconds; each row's ``measured_latency_ms`` is one stretch right after its budget's solve, inside one
            of the machine's speed phases. 0: not measured.
    """

    def __init__(self, runner, dataloader, evaluator, num_budgets: int = 5, sweep_by: str = 'memory',
                 budgets: Sequence | None = None, out_dir: str | None = None, fp16: bool = False,
                 eval_seed: int | None = 0, interleaved_seconds: float = 10.0) -> None:
        super().__init__(runner, dataloader, evaluator, fp16=fp16)
        if budgets is None and (not isinstance(num_budgets, int) or isinstance(num_budgets, bool)
                                or num_budgets < 2):
            raise ValueError(f'num_budgets must be an integer >= 2 (from the smallest configuration to the full '
                             f'model), got {num_budgets!r}')
        if sweep_by not in ('memory', 'latency'):
            raise ValueError(f"sweep_by must be 'memory' or 'latency', got {sweep_by!r}")
        if budgets is not None and not budgets:
            raise ValueError('budgets must hold at least one budget (or be None to sweep num_budgets of them)')
        self.num_budgets, self.sweep_by, self.budgets = num_budgets, sweep_by, budgets
        self.out_dir = Path(runner.work_dir) / 'sweep' if out_dir is None else (Path(out_dir) if out_dir else None)
        self.rows: list[dict] = []
        self.eval_seed = eval_seed
        from ..profiling.latency import check_min_seconds
        check_min_seconds(interleaved_seconds, 'interleaved_seconds')
        self.interleaved_seconds = interleaved_seconds

    def _hook(self) -> OnlineScalingHook:
        hook = next((h for h in self.runner.hooks if isinstance(h, OnlineScalingHook)), None)
        if hook is None:
            hook = OnlineScalingHook(latency_repeats=20, latency_warmup=3)
            self.runner.register_hook(hook)
        return hook

    def sweep_budgets(self, model) -> list:
        """The budgets to evaluate: the given ones, or evenly spaced over the model's achievable range."""
        if self.budgets is not None:
            return list(self.budgets)
        limits = model.budget_range()
        if self.sweep_by == 'memory':
            low, high, key = limits['min_memory_bytes'] / _MB, limits['max_memory_bytes'] / _MB, 'memory_mb'
        else:
            low, high, key = limits['min_latency_ms'], limits['max_latency_ms'], 'latency_ms'
        values = [low + (high - low) * i / (self.num_budgets - 1) for i in range(self.num_budgets)]
        values[-1] = high  # exactly the full model despite rounding
        return [{key: value} for value in values]

    def _run_epoch(self) -> dict:
        """One test epoch, as mmengine's TestLoop runs it between ``before_test`` and ``after_test``."""
        self.runner.call_hook('before_test_epoch')
        self.runner.model.eval()
        self.test_loss.clear()
        with same_random_numbers(self.eval_seed):
            for idx, data_batch in enumerate(self.dataloader):
                self.run_iter(idx, data_batch)
        metrics = self.evaluator.evaluate(len(self.dataloader.dataset))
        self.runner.call_hook('after_test_epoch', metrics=metrics)
        return metrics

    def _report_teacher_metric(self, model, hook: OnlineScalingHook) -> float | None:
        """The teacher's metric on this loop's split: from a row that ran it, else one more epoch with it."""
        from ..apis.sweep import runs_teacher
        if all(row['measured_metric'] is None for row in self.rows):
            return None  # the evaluator gave no metric to anchor on
        teacher_rows = [row for row in self.rows if row['measured_metric'] is not None and runs_teacher(row)]
        if teacher_rows:
            return teacher_rows[-1]['measured_metric']
        self.runner.logger.info('BudgetSweepLoop: no budget ran the teacher; evaluating it once as the metric '
                                'estimates\' reference')
        hook.set_budget(None)
        model.switch({spec.name: 0.0 for spec in model.bank.blocks})
        from .task_metrics import bank_metric
        return bank_metric(self._run_epoch(), model.bank.profiles.metric_name)[1]

    def _measure_interleaved(self, model, hook: OnlineScalingHook) -> None:
        """Every row's configuration measured in interleaved visits (``interleaved_latency_ms``)."""
        from .scaling_measurements import example_inputs, interleaved_latency_ms
        if not (self.interleaved_seconds and hook.latency_repeats and self.rows):
            return
        distinct = {json.dumps(row['choice'], sort_keys=True): row['choice'] for row in self.rows}
        inputs = example_inputs(self.runner, model)
        latencies = interleaved_latency_ms(model, inputs, list(distinct.values()), self.interleaved_seconds,
                                           show_progress=is_main_process())
        measured = dict(zip(distinct, latencies))
        for row in self.rows:
            row['interleaved_latency_ms'] = measured[json.dumps(row['choice'], sort_keys=True)]

    def _publish(self, epoch_metrics: list[dict]) -> dict:
        """Every budget's metrics and row figures as ``sweep{i}/...`` results, message-hub and visualizer scalars."""
        runner, results = self.runner, {}
        for index, (metrics, row) in enumerate(zip(epoch_metrics, self.rows)):
            scalars = {key: value for key, value in metrics.items() if isinstance(value, (int, float))}
            scalars.update({f'legodnn_{key}': row[key] for key in SWEEP_SCALARS
                            if isinstance(row.get(key), (int, float))})
            results.update({f'sweep{index}/{key}': value for key, value in metrics.items()})
            results.update({f'sweep{index}/{key}': value for key, value in scalars.items()})
            for key, value in scalars.items():
                runner.message_hub.update_scalar(f'test/sweep{index}/{key}', value)
            # One step per budget: a visualizer backend (TensorBoard, local scalars.json) plots the sweep.
            runner.visualizer.add_scalars({f'sweep/{key}': value for key, value in scalars.items()}, step=index)
        return results

    def run(self) -> dict:
        """Evaluates every budget; returns ``{'sweep{i}/<metric>': value}`` over all of them."""
        from ..apis.sweep import anchor_metric_estimates, sweep_row, write_sweep
        runner = self.runner
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        hook = self._hook()
        runner.call_hook('before_test')
        model.load_configured_bank()
        if getattr(model, 'bank', None) is None:
            raise RuntimeError('BudgetSweepLoop needs a LegoDNN model with a block bank: set model.bank (the '
                               "pipeline's work_dir/bank) or pass the bank directory to tools/test.py")
        budgets = self.sweep_budgets(model)
        limits = model.budget_range()
        source = hook.budget_source
        hook.set_budget(budgets)
        epoch_metrics: list[dict] = []
        self.rows = []
        try:
            for index in range(len(budgets)):
                before = len(hook.records)
                runner.logger.info(f'BudgetSweepLoop: budget {index + 1}/{len(budgets)}')
                epoch_metrics.append(self._run_epoch())
                epoch = hook.records[before:]
                self.rows.append(sweep_row(epoch[-1], index, solve_record=epoch[0], online_resolves=len(epoch) - 1))
            report_teacher = self._report_teacher_metric(model, hook)
            self._measure_interleaved(model, hook)
        finally:
            hook.set_budget(source)
        profiles = model.bank.profiles
        anchor_metric_estimates(self.rows, profiles.teacher_metric, report_teacher)
        results = self._publish(epoch_metrics)
        if self.out_dir is not None and is_main_process():
            info = dict(config=Path(runner.cfg.filename).name if runner.cfg.filename else None,
                        bank=str(getattr(model, '_bank_dir', None)), metric_name=profiles.metric_name,
                        sweep_by=self.sweep_by, report_split='test', profiling_split='val',
                        teacher_metric=profiles.teacher_metric, report_teacher_metric=report_teacher,
                        budget_range=limits,
                        latency_device=profiles.device)
            paths = write_sweep(self.rows, info, self.out_dir)
            runner.logger.info('BudgetSweepLoop wrote ' + ', '.join(str(path) for path in paths))
        runner.call_hook('after_test')
        return results
