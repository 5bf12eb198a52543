"""Budget sources of ``mmlego.OnlineScalingHook`` (fixed, a sweep, a callable, a JSON/YAML schedule over time) and
budget messages."""
from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..scaling_optimizer.budget import BUDGET_KEYS, format_budget, parse_budget

__all__ = ['BudgetSource', 'load_schedule', 'infeasible_message']


def load_schedule(path: str | Path) -> list[tuple[float, dict[str, float | None]]]:
    """Reads a budget schedule file (JSON or YAML): a list of ``{"time_s", "latency_ms", "memory_mb"}``.

    Returns:
        ``(time_s, budget)`` pairs sorted by time.

    Raises:
        ValueError: The file is missing, unreadable, not a non-empty list of entries, or an entry is malformed.
    """
    from mmengine.fileio import load
    path = Path(path)
    if not path.is_file():
        raise ValueError(f'budget schedule {path} does not exist; pass a JSON/YAML file holding a list of '
                         '{"time_s": ..., "latency_ms": ..., "memory_mb": ...}')
    try:
        data = load(str(path), file_format='yaml' if path.suffix.lower() in ('.yml', '.yaml') else 'json')
    except Exception as error:  # noqa: BLE001 - any parse error becomes one clear message
        raise ValueError(f'budget schedule {path} cannot be read ({type(error).__name__}: {error}); it must be '
                         'JSON (.json) or YAML (.yml/.yaml)') from error
    if not isinstance(data, list) or not data:
        raise ValueError(f'budget schedule {path} must hold a non-empty list of '
                         '{"time_s": ..., "latency_ms": ..., "memory_mb": ...} entries')
    schedule = []
    for index, entry in enumerate(data):
        where = f'budget schedule {path}, entry {index}'
        if not isinstance(entry, Mapping) or 'time_s' not in entry:
            raise ValueError(f'{where} must be a dict with "time_s" (seconds since the start) and "latency_ms" '
                             f'and/or "memory_mb", got {entry!r}')
        time_s = entry['time_s']
        if not isinstance(time_s, numbers.Real) or isinstance(time_s, bool) or not math.isfinite(time_s) \
                or time_s < 0:
            raise ValueError(f'{where}: time_s must be a finite number >= 0, got {time_s!r}')
        unknown = sorted(str(key) for key in entry if key != 'time_s' and key not in BUDGET_KEYS)
        if unknown:
            raise ValueError(f'{where} has unknown keys {unknown}; the valid keys are "time_s", "latency_ms" and '
                             '"memory_mb"')
        schedule.append((float(time_s), parse_budget({k: v for k, v in entry.items() if k != 'time_s'}, where)))
    schedule.sort(key=lambda item: item[0])
    return schedule


def infeasible_message(budget, model) -> str:
    """Names the smallest achievable memory and latency of ``model`` (estimates) for a budget below them."""
    limits = model.budget_range()
    low_mb, low_ms = limits['min_memory_bytes'] / 2 ** 20, limits['min_latency_ms']
    return (f'budget {format_budget(budget)} is infeasible: the smallest configuration needs {low_mb:.2f} MB and '
            f'{low_ms:.2f} ms (estimates), the full model {limits["max_memory_bytes"] / 2 ** 20:.2f} MB and '
            f'{limits["max_latency_ms"]:.2f} ms; raise the budget to at least memory={low_mb:.2f}MB,'
            f'latency={low_ms:.2f}ms')


class BudgetSource:
    """Where a scaling hook's budget comes from, validated on construction (a callable's values when polled).

    Args:
        budget: A budget dict or ``'memory=20MB,latency=30ms'`` string (fixed), a list of them (a sweep: one per
            epoch, cycling), a callable returning one (None keeps the current budget), the path of a JSON/YAML
            schedule (:func:`load_schedule`), or None (no budget).
    """

    def __init__(self, budget: Any = None) -> None:
        self.source = budget
        self.fixed = self.sweep = self.callable = self.schedule = None
        if budget is None:
            pass
        elif isinstance(budget, Mapping):
            self.fixed = parse_budget(budget)
        elif isinstance(budget, str) and '=' in budget and not Path(budget).is_file():
            self.fixed = parse_budget(budget)  # 'memory=20MB,latency=30ms'
        elif isinstance(budget, (str, Path)):
            self.schedule = load_schedule(budget)
        elif callable(budget):
            self.callable = budget
        elif isinstance(budget, Sequence) and not isinstance(budget, (bytes, bytearray)):
            if not budget:
                raise ValueError('a budget list needs at least one budget dict (latency_ms and/or memory_mb)')
            self.sweep = [parse_budget(item, f'budget list item {i}') for i, item in enumerate(budget)]
        else:
            raise ValueError(f'budget must be a dict (latency_ms / memory_mb), a list of dicts, a callable returning '
                             f'one, or the path of a JSON/YAML schedule file; got {budget!r}')

    @property
    def active(self) -> bool:
        """Whether there is a budget."""
        return any(x is not None for x in (self.fixed, self.sweep, self.callable, self.schedule))

    @property
    def changes_over_time(self) -> bool:
        """Whether budgets come from a callable or a schedule (polled during an epoch, through hysteresis)."""
        return self.callable is not None or self.schedule is not None

    def poll(self, epoch: int, epoch_start: bool, elapsed: Callable[[], float]) -> dict[str, float | None] | None:
        """The budget in force now (None: keep the current configuration).

        Args:
            epoch: Epochs begun since this source was set, minus one (a sweep's index).
            epoch_start: Whether this is the poll before an epoch (a sweep moves only then).
            elapsed: Seconds since the hook started (a schedule's clock).
        """
        if self.fixed is not None:
            return self.fixed
        if self.sweep is not None:
            return self.sweep[epoch % len(self.sweep)] if epoch_start else None
        if self.callable is not None:
            value = self.callable()
            return None if value is None else parse_budget(value, 'the budget returned by the callable')
        if self.schedule is not None:
            now, current = elapsed(), None
            for time_s, budget in self.schedule:
                if time_s <= now:
                    current = budget
            return current
        return None
