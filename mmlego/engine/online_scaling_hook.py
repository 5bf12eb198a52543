"""``mmlego.OnlineScalingHook``: LegoDNN's online scaling during val/test, from a fixed, swept or changing budget.

Before every val/test epoch (and, for budgets that change over time, every ``interval`` iterations) the hook reads
its budget source; when the budget changed it re-solves the scaling problem of the model's block bank and
switches blocks through :meth:`mmlego.LegoDNN.scale` (a budget that changes over time only when the running
configuration no longer fits or the budget rose by more than ``hysteresis``: no oscillation on a noisy budget,
see :mod:`mmlego.scaling_optimizer.hysteresis`; each decision is logged with its reason). After every iteration it asks the
model whether its online latency correction (the blocks timed in the forwards it serves) moved the running
configuration over a latency budget, and re-solves if so (:meth:`mmlego.LegoDNN.rescale_if_needed`). It logs the
chosen sparsities with the estimated metric, latency and memory, and after the epoch the measurements next to the
estimates: the metric (the evaluator's, on the split the loop runs), the resident bytes of tensors on the compute
device and the process RSS, and, with ``latency_repeats > 0``, the median latency of timed forwards of the
tensor path the estimates describe. Every configuration that ran is kept in
:attr:`OnlineScalingHook.records` for tools (``tools/test.py --sweep`` writes them as a table).

Budget sources:

- ``dict(latency_ms=..., memory_mb=...)`` (either key may be left out) or ``'memory=20MB,latency=30ms'``: a fixed
  budget. Limits are numbers (ms / MB), strings with a unit, or shares of the full model such as ``'60%'``
  (:mod:`mmlego.scaling_optimizer.budget`, the parser the CLI and :meth:`mmlego.LegoDNN.scale` use too);
- a list of such dicts: one per val/test epoch, cycling (a sweep);
- a callable returning such a dict (a device monitor), polled before each epoch and every ``interval``
  iterations; returning ``None`` keeps the current budget;
- a path to a JSON or YAML file holding a list of ``{"time_s": t, "latency_ms": ..., "memory_mb": ...}``: a
  schedule over the seconds elapsed since the hook started (its ``before_run``); the entry with the largest
  ``time_s <= elapsed`` applies, and before the first entry's time the model keeps its current blocks.

Example config::

    custom_hooks = [dict(type='mmlego.OnlineScalingHook', budget=dict(memory_mb=20.0))]
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from ..registry import HOOKS
from ..scaling_optimizer.budget import InfeasibleBudgetError, format_budget, parse_budget
from ..scaling_optimizer.hysteresis import DEFAULT_HYSTERESIS, decide
from .budget_schedule import BudgetSource, infeasible_message, load_schedule
from .scaling_measurements import example_inputs, measure_memory_mb, settle_latency, warm_up
from .scaling_records import SCALAR_KEYS, chosen_lines, measured_line, new_record

__all__ = ['OnlineScalingHook', 'load_schedule', 'parse_budget']

_MB = 2 ** 20


@HOOKS.register_module()
class OnlineScalingHook(Hook):
    """Scales an ``mmlego.LegoDNN`` model to a budget during val/test (see the module docstring for sources).

    Args:
        budget: A budget (dict or ``'key=value,...'`` string), a list of them (one per val/test epoch, cycling), a
            callable returning one, or the path of a JSON/YAML schedule file. ``None``: inactive until :meth:`set_budget` is called.
        interval: Poll a callable or schedule every ``interval`` val/test iterations (also before each epoch).
        log_measured: Measure after each epoch (metric from the evaluator, memory of the live architecture, and
            latency if ``latency_repeats > 0``) and log it next to the estimates.
        latency_repeats: Timed runs of the tensor path on one example batch per epoch (0: latency not measured).
        latency_warmup: Untimed runs before them; then the online correction's window of untimed forwards,
            served like any other, so the corrected estimate read after them describes the measurement's conditions.
        latency_settle: After a latency budget is solved before an epoch, up to this many re-solves: the new
            configuration serves a correction window of forwards on an example batch (after ``latency_warmup``
            untimed ones) and, with ``latency_repeats``, is measured (timed forwards teach the correction too), then
            :meth:`mmlego.LegoDNN.rescale_if_needed`; the configuration the epoch runs was always served a window
            (and measured). When the re-solves run out on a configuration measured over the budget, the best
            configuration measured within it during settling runs instead (measured again; the record's
            ``settle_fallback``). The correction in force when a budget is
            solved knows only the options that ran before, and a device's ratio to the profiles differs between
            options (a sweep's test batches, not of the profiled size, teach it nothing); the epoch then runs a
            configuration whose options were measured to hold now. 0: off (forwards the epoch serves at
            the profiled size correct it, through :meth:`mmlego.LegoDNN.rescale_if_needed`).
        rescale_tolerance: Re-solve when the corrected latency estimate of the running configuration exceeds the
            latency budget by more than this (relative).
        rescale_drift: Re-solve when the online latency correction moved by more than this since the last solve.
        solver: The scaling optimizer's solver: ``'exact'`` (default), ``'pulp'``
            (LegoDNN's ILP through CBC) or ``'brute_force'``.
        on_infeasible: A budget below the smallest configuration: ``'warn'`` (default: run the smallest, as a
            device must) or ``'error'`` (raise :class:`~mmlego.scaling_optimizer.budget.InfeasibleBudgetError`
            naming the smallest achievable memory and latency, e.g. for an evaluation that must meet its budget).
        hysteresis: For a callable or schedule source: re-solve on a changed budget only when the running
            configuration no longer fits it, or a limit rose by more than this (relative) over the budget it was
            solved for (:mod:`mmlego.scaling_optimizer.hysteresis`; set it above the budget's peak-to-peak noise).
        clock: Seconds as a float (for schedules; default :func:`time.monotonic`, injectable for tests).

    Attributes:
        records: One dict per configuration run: ``epoch``, ``mode`` (val/test), ``budget``, ``status``,
            ``choice`` (block -> sparsity), ``estimated_metric``, ``measured_metric``, ``metric_name``,
            ``profiled_latency_ms`` (the profiles' estimate, no online correction), ``estimated_latency_ms`` (with
            the correction in force when solved), ``corrected_latency_ms`` (with the correction learned from the
            forwards served before the latency measurement: the epoch's, then the warm-up ones, never the timed
            ones), ``latency_ratio`` (corrected / profiled), ``measured_latency_ms``,
            ``estimated_memory_mb`` (the configuration's weight bytes: frame + chosen descendants),
            ``resident_memory_mb`` (tensors on the compute device), ``rss_mb`` (the process), ``resolved``
            (whether the optimizer ran for it), ``settle_solves`` (re-solves of ``latency_settle``),
            ``settled_corrected_latency_ms`` and ``settled_measured_latency_ms`` (with ``latency_repeats``, a
            settled latency budget's configuration estimated and measured right after settling, before the epoch:
            where it was chosen; ``settle_fallback`` when settling ran out of re-solves and fell back to a
            configuration measured within the budget), ``rescaled_solves``, ``rescaled_choice``,
            ``rescaled_status`` (``infeasible`` when under the correction learned then no configuration fits,
            ``fallback`` when settling fell back to a configuration measured within the budget),
            ``rescaled_corrected_latency_ms`` and
            ``rescaled_measured_latency_ms`` (the configuration the correction re-solved to after the epoch's latency
            measurement, settled and measured, if it did), ``latency_headroom`` (how far under the latency budget the
            solve aimed, :attr:`mmlego.LegoDNN.last_headroom`) and ``reason`` (``budget``, ``latency correction`` or the hysteresis rule's
            up/downscale reason).
        decisions: For a callable or schedule source, one dict per budget change: ``time_s``, ``budget``,
            ``action`` (``rescale`` / ``keep``), ``reason`` and the ``running`` configuration's estimates.
        num_solves: How many times the optimizer ran.
    """

    priority = 'NORMAL'

    def __init__(self, budget: Any = None, interval: int = 1, log_measured: bool = True, latency_repeats: int = 0,
                 latency_warmup: int = 1, latency_settle: int = 3, rescale_tolerance: float = 0.02,
                 rescale_drift: float = 0.1,
                 solver: str = 'exact', on_infeasible: str = 'warn', hysteresis: float = DEFAULT_HYSTERESIS,
                 clock: Callable[[], float] | None = None) -> None:
        decide(dict(latency_ms=0.0, memory_mb=0.0), None, {}, hysteresis)  # validates hysteresis
        self.hysteresis = hysteresis
        if on_infeasible not in ('warn', 'error'):
            raise ValueError(f"on_infeasible must be 'warn' or 'error', got {on_infeasible!r}")
        self.on_infeasible = on_infeasible
        if not isinstance(interval, int) or isinstance(interval, bool) or interval < 1:
            raise ValueError(f'interval must be an integer >= 1 (val/test iterations), got {interval!r}')
        if not isinstance(latency_repeats, int) or latency_repeats < 0:
            raise ValueError(f'latency_repeats must be an integer >= 0, got {latency_repeats!r}')
        if not isinstance(latency_settle, int) or isinstance(latency_settle, bool) or latency_settle < 0:
            raise ValueError(f'latency_settle must be an integer >= 0 (rounds), got {latency_settle!r}')
        self.latency_settle = latency_settle
        self.interval = interval
        self.log_measured = log_measured
        self.latency_repeats = latency_repeats
        self.latency_warmup = max(0, int(latency_warmup))
        self.rescale_tolerance = rescale_tolerance
        self.rescale_drift = rescale_drift
        self.solver = solver
        self.clock = clock or time.monotonic
        self.records: list[dict[str, Any]] = []
        self.decisions: list[dict[str, Any]] = []
        self.num_solves = 0
        self._start: float | None = None
        self._epochs = 0  # val/test epochs begun
        self._sweep_start = 0
        self._epoch_records: list[dict[str, Any]] = []
        self._polled_budget: dict[str, float | None] | None = None
        self._current_budget: dict[str, float | None] | None = None
        self._last_result = None
        self._example = None
        self.set_budget(budget)

    # -- the budget source -----------------------------------------------------------------------------------
    def set_budget(self, budget: Any) -> None:
        """Replaces the budget source (validated now; a callable's values are validated when polled)."""
        self._source = BudgetSource(budget)
        self._polled_budget = None  # a new source is solved at its next poll
        self._sweep_start = self._epochs  # the next epoch runs a sweep's first budget

    @property
    def budget_source(self) -> Any:
        """The budget source as last given to :meth:`set_budget`."""
        return self._source.source

    @property
    def active(self) -> bool:
        """Whether a budget source is set."""
        return self._source.active

    def elapsed(self) -> float:
        """Seconds since the hook started (its first ``before_run``, or the first poll)."""
        now = self.clock()
        if self._start is None:
            self._start = now
        return now - self._start

    def _poll(self, epoch_start: bool) -> dict[str, float | None] | None:
        """The budget in force now (None: keep the current configuration)."""
        return self._source.poll(self._epochs - 1 - self._sweep_start, epoch_start, self.elapsed)

    # -- the model -------------------------------------------------------------------------------------------
    @staticmethod
    def _wrapper(runner):
        model = runner.model
        model = model.module if is_model_wrapper(model) else model
        if not (hasattr(model, 'scale') and hasattr(model, 'bank')):
            raise RuntimeError(f'OnlineScalingHook needs an mmlego.LegoDNN model (model=dict(type="mmlego.LegoDNN", '
                               f'architecture=<the teacher model>)), got {type(model).__name__}')
        if model.bank is None and hasattr(model, 'load_configured_bank'):
            model.load_configured_bank()
        if model.bank is None:
            raise RuntimeError('OnlineScalingHook: the LegoDNN model has no block bank; pass the bank directory '
                               '(tools/test.py CONFIG BANK_DIR), set model.bank=<work_dir>/bank in the config, or '
                               'call model.attach_bank(...) first')
        return model

    def _example_batch(self, runner, model):
        if self._example is None:
            self._example = example_inputs(runner, model)
        return self._example

    def _warm_up(self, runner, model) -> None:
        warm_up(model, self._example_batch(runner, model), self.latency_warmup)

    def _measure_latency_ms(self, runner, model) -> float:
        return model.measure_latency_ms(self._example_batch(runner, model), warmup=0, repeats=self.latency_repeats)

    # -- scaling ---------------------------------------------------------------------------------------------
    def _apply(self, runner, mode: str, epoch_start: bool) -> None:
        if not self.active:
            return
        model = self._wrapper(runner)
        budget = self._poll(epoch_start)
        reason = None
        if budget is not None and budget != self._polled_budget:
            self._polled_budget = budget
            reason = self._decide(runner, model, budget, mode)
        if reason is not None:
            result = model.scale(latency_ms=budget['latency_ms'], memory_mb=budget['memory_mb'],
                                 solver=self.solver)
            self.num_solves += 1
            self._last_result = result
            self._current_budget = model.budget  # shares of the full model ('60%') resolved
            if result.status == 'infeasible' and self.on_infeasible == 'error':
                raise InfeasibleBudgetError(infeasible_message(budget, model))
            settled = self._settle(runner, model) if epoch_start else {}
            self._new_record(runner, model, mode, resolved=True, reason=reason, settled=settled)
        elif epoch_start and self._last_result is not None:
            self._new_record(runner, model, mode, resolved=False)

    def _decide(self, runner, model, budget: dict, mode: str) -> str | None:
        """Why to re-solve for a new budget (None: keep the running configuration); every decision is logged.

        A callable's or schedule's budget goes through :mod:`mmlego.scaling_optimizer.hysteresis`; others are solved.
        """
        if self._last_result is None or not self._source.changes_over_time:
            return 'budget'
        budget = model.absolute_budget(budget)
        estimate = model.estimate()
        running = dict(latency_ms=estimate['latency_ms'], memory_mb=estimate['memory_bytes'] / _MB)
        decision = decide(running, self._current_budget, budget, self.hysteresis,
                          smallest=self._last_result.status == 'infeasible')
        self.decisions.append(dict(time_s=self.elapsed(), budget=dict(budget), action=decision.action,
                                   reason=decision.reason, running=running))
        if not decision.rescale:
            runner.logger.info(f'OnlineScalingHook [{mode} epoch {self._epochs - 1}]: budget '
                               f'{format_budget(budget)} -> keep: {decision.reason}')
            return None
        return decision.reason

    def _settle(self, runner, model) -> dict[str, Any]:
        """Settles the configuration just chosen under the latency budget (:func:`settle_latency`); returns the
        record's ``settle_solves`` and ``settled_*`` fields."""
        if (model.correction is None or not self.latency_settle
                or (self._current_budget or {}).get('latency_ms') is None):
            return dict(settle_solves=0)
        measure = self.log_measured and self.latency_repeats > 0
        fields, result = settle_latency(
            model, lambda: self._warm_up(runner, model),
            (lambda: self._measure_latency_ms(runner, model)) if measure else None,
            self._current_budget['latency_ms'], self.latency_settle, self.rescale_drift)
        self.num_solves += fields['settle_solves']
        if result is not None:
            self._last_result = result
        return fields

    def _check_latency(self, runner, mode: str) -> None:
        """Re-solves when the online latency correction moved the running configuration (see the model)."""
        if self._last_result is None:
            return
        model = self._wrapper(runner)
        result = model.rescale_if_needed(self.rescale_tolerance, self.rescale_drift)
        if result is not None:
            self.num_solves += 1
            self._last_result = result
            self._new_record(runner, model, mode, resolved=True, reason='latency correction')

    def _rescale_after_epoch(self, runner, model, mode: str) -> dict[str, Any]:
        """After the epoch's measurement window, what serving does after any forward: when the correction learned
        there (the device may change speed during an epoch whose batches need not teach it) finds the running
        configuration over its latency budget or moved, re-solve, settle and measure the new configuration: the
        ``rescaled_*`` fields of the epoch's last record (whose own measurement, that of the metric's configuration,
        stays); the next epoch starts from it."""
        if (self._current_budget or {}).get('latency_ms') is None:
            return {}
        result = model.rescale_if_needed(self.rescale_tolerance, self.rescale_drift)
        if result is None:
            return {}
        self.num_solves += 1
        self._last_result = result
        settled = self._settle(runner, model)
        if 'settled_measured_latency_ms' not in settled:  # latency_settle=0: measured as chosen
            self._warm_up(runner, model)
            settled.update(settled_corrected_latency_ms=model.estimate()['latency_ms'],
                           settled_measured_latency_ms=self._measure_latency_ms(runner, model))
        # the status the configuration left running was chosen with: 'infeasible' when, under the correction
        # learned now, not even the fastest configuration fits the budget (the device runs slower than it can meet);
        # 'fallback' when settling ran out of re-solves and fell back to one measured within the budget
        fields = dict(rescaled_solves=1 + settled['settle_solves'], rescaled_choice=dict(model.selection),
                      rescaled_status='fallback' if settled.get('settle_fallback') else self._last_result.status,
                      rescaled_corrected_latency_ms=settled['settled_corrected_latency_ms'],
                      rescaled_measured_latency_ms=settled['settled_measured_latency_ms'])
        runner.logger.info(
            f'OnlineScalingHook [{mode} epoch {self._epochs - 1}]: the online correction re-solved after the epoch '
            f'({fields["rescaled_solves"]}x) -> {fields["rescaled_status"]}; latency measured '
            f'{fields["rescaled_measured_latency_ms"]:.2f} ms vs corrected estimate '
            f'{fields["rescaled_corrected_latency_ms"]:.2f} ms (the next epoch starts from it)')
        return fields

    def _new_record(self, runner, model, mode: str, resolved: bool, reason: str = 'budget',
                    settled: Mapping[str, Any] | None = None) -> None:
        record = new_record(model, self._last_result, self._epochs - 1, mode, self._current_budget, resolved,
                            reason, settled)
        self.records.append(record)
        self._epoch_records.append(record)
        if resolved:
            for line in chosen_lines(record):
                runner.logger.info(line)

    def _finish_epoch(self, runner, mode: str, metrics: Mapping[str, Any] | None) -> None:
        records, self._epoch_records = self._epoch_records, []
        if not records or not self.log_measured:
            return
        model = self._wrapper(runner)
        from .task_metrics import bank_metric
        name, measured = bank_metric(metrics, records[-1]['metric_name'])
        name = name or records[-1]['metric_name']
        for record in records:
            record['measured_metric'] = measured
            record['measured_metric_name'] = name
        last = records[-1]
        if self.latency_repeats > 0:
            self._warm_up(runner, model)  # the correction read next follows the measurement's conditions
        last['corrected_latency_ms'] = model.estimate()['latency_ms']
        last['latency_ratio'] = last['corrected_latency_ms'] / last['profiled_latency_ms']
        last['resident_memory_mb'], last['rss_mb'] = measure_memory_mb(model)
        if self.latency_repeats > 0:
            last['measured_latency_ms'] = self._measure_latency_ms(runner, model)
            last.update(self._rescale_after_epoch(runner, model, mode))
        runner.logger.info(measured_line(last, name, len(records)))
        for key in SCALAR_KEYS:
            if last[key] is not None:
                runner.message_hub.update_scalar(f'{mode}/legodnn_{key}', last[key])

    # -- mmengine hook points --------------------------------------------------------------------------------
    def before_run(self, runner) -> None:
        """Prepares a runner built without ``mmlego.LegoRunner`` (checkpoints, ``{work_dir}``, teacher check)."""
        from .runner import prepare_runner
        prepare_runner(runner)
        if self._start is None:
            self._start = self.clock()

    def _before_epoch(self, runner, mode: str) -> None:
        self._epochs += 1
        self._epoch_records = []
        self._apply(runner, mode, epoch_start=True)

    def _before_iter(self, runner, mode: str, batch_idx: int) -> None:
        if batch_idx > 0 and batch_idx % self.interval == 0 and self._source.changes_over_time:
            self._apply(runner, mode, epoch_start=False)

    def before_val_epoch(self, runner) -> None:
        self._before_epoch(runner, 'val')

    def before_test_epoch(self, runner) -> None:
        self._before_epoch(runner, 'test')

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._check_latency(runner, 'val')

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._check_latency(runner, 'test')

    def before_val_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._before_iter(runner, 'val', batch_idx)

    def before_test_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._before_iter(runner, 'test', batch_idx)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._finish_epoch(runner, 'val', metrics)

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._finish_epoch(runner, 'test', metrics)
