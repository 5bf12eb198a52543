"""One budget parser for every entry point: the CLI, configs (``OnlineScalingHook``), ``LegoDNN.scale`` and the APIs.

A budget limits latency (milliseconds) and/or memory (megabytes, 2**20 bytes). Each limit is given as:

- a number: ``20`` / ``20.5`` (ms or MB); ``inf`` or ``None`` means no limit;
- a string with a unit: ``'20MB'``, ``'1.5GB'``, ``'512KB'``, ``'30ms'``, ``'0.03s'`` (the unit is optional);
- a share of the full model (the teacher, all blocks at sparsity 0.0): ``'60%'``. It is resolved against the
  bank's profiled teacher (latency times the model's fixed ``latency_scale``, no online correction), so a relative
  latency budget is a fixed number of milliseconds that a slower device can exceed.

A whole budget is a mapping (``dict(latency_ms=30, memory_mb='60%')``, ``latency``/``memory`` also accepted) or the
same as text: ``'memory=20MB,latency=30ms'``.
"""
from __future__ import annotations

import math
import numbers
import re
from typing import Any, Mapping

#: The keys of a parsed budget.
BUDGET_KEYS = ('latency_ms', 'memory_mb')
_ALIASES = {'latency': 'latency_ms', 'latency_ms': 'latency_ms', 'memory': 'memory_mb', 'memory_mb': 'memory_mb'}
_UNITS = {'latency_ms': {'': 1.0, 'ms': 1.0, 's': 1000.0},
          'memory_mb': {'': 1.0, 'mb': 1.0, 'mib': 1.0, 'gb': 1024.0, 'gib': 1024.0, 'kb': 1 / 1024, 'kib': 1 / 1024}}
_NUMBER = re.compile(r'^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf)\s*([a-zA-Z%]*)\s*$')
#: How to write a budget, for error messages.
BUDGET_HELP = ("a budget is latency and/or memory: dict(latency_ms=30, memory_mb=20) or 'latency=30ms,memory=20MB'; "
               "each a number (ms / MB), a string with a unit ('20MB', '1.5GB', '30ms'), a share of the full model "
               "('60%') or None for no limit")



class InfeasibleBudgetError(ValueError):
    """A budget below the smallest configuration, where the caller asked for an error instead of the smallest."""


BudgetValue = float | str | None  # a float is absolute (ms / MB); a str is a share of the full model, e.g. '60%'


def _short(value: Any, limit: int = 60) -> str:
    """``repr`` cut to ``limit`` characters: a wrong value can be huge and the message must stay readable."""
    text = repr(value)
    return text if len(text) <= limit else f'{text[:limit]}... ({len(text)} characters)'


def parse_budget_value(value: Any, key: str, where: str = 'budget') -> BudgetValue:
    """One limit: a float in ms / MB, a share such as ``'60%'``, or None (no limit).

    Raises:
        ValueError: A boolean, NaN, a negative number, an unknown unit or anything else that is not a limit.
    """
    units = _UNITS[key]
    unit_name = 'ms' if key == 'latency_ms' else 'MB'
    wrong = (f'{where}: {key} must be a number >= 0 in {unit_name}, a string with a unit (e.g. '
             f"{'30ms' if key == 'latency_ms' else '20MB'!r}), a share of the full model (e.g. '60%') or None for "
             f'no limit, got {_short(value)}')
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
        raise ValueError(wrong)
    if isinstance(value, str):
        match = _NUMBER.match(value)
        if not match:
            raise ValueError(wrong)
        unit = match.group(2).lower()
        if unit not in units and unit != '%':
            raise ValueError(f'{where}: unknown unit {match.group(2)!r} in {key} {_short(value)}; use one of '
                             f"{sorted(u for u in units if u) + ['%']}; {BUDGET_HELP}")
        number = float(match.group(1))
        if unit == '%':
            if not math.isfinite(number) or number < 0:
                raise ValueError(f'{where}: {key} share must be a finite percentage >= 0, got {_short(value)}; '
                                 f'{BUDGET_HELP}')
            return f'{number:g}%'
        value = number * units[unit]
    value = float(value)
    if math.isnan(value) or value < 0:
        raise ValueError(wrong)
    return None if math.isinf(value) else value


def parse_budget(budget: Mapping[str, Any] | str | None, where: str = 'budget') -> dict[str, BudgetValue]:
    """Validates a budget and returns it with both keys (``None``: no limit on that one).

    Args:
        budget: A mapping (``latency_ms``/``memory_mb``, or ``latency``/``memory``), a string
            ``'memory=20MB,latency=30ms'``, or None (no limits).
        where: Names the budget in error messages (e.g. ``'budget list item 2'``).

    Raises:
        ValueError: Unknown keys, a key given twice, or a value that is not a limit (see
            :func:`parse_budget_value`); the message says how to write a budget.
    """
    if budget is None:
        return {key: None for key in BUDGET_KEYS}
    if isinstance(budget, str):
        items = [item.strip() for item in budget.split(',') if item.strip()]
        if not items:
            raise ValueError(f'{where} is empty; {BUDGET_HELP}')
        pairs = []
        for item in items:
            key, sep, value = item.partition('=')
            if not sep:
                raise ValueError(f'{where}: cannot read {_short(item)} (expected key=value); {BUDGET_HELP}')
            pairs.append((key.strip().lower(), value.strip()))
    elif isinstance(budget, Mapping):
        pairs = list(budget.items())
    else:
        raise ValueError(f'{where} must be a dict or a string, got {_short(budget)}; {BUDGET_HELP}')
    parsed: dict[str, BudgetValue] = {key: None for key in BUDGET_KEYS}
    seen: set[str] = set()
    for key, value in pairs:
        name = _ALIASES.get(key) if isinstance(key, str) else None
        if name is None:
            raise ValueError(f'{where} has the unknown key {_short(key)}; the valid keys are "latency_ms" '
                             f'(or "latency", milliseconds) and "memory_mb" (or "memory", megabytes); {BUDGET_HELP}')
        if name in seen:
            raise ValueError(f'{where} gives {name} twice; give it once ({BUDGET_HELP})')
        seen.add(name)
        parsed[name] = parse_budget_value(value, name, where)
    return parsed


def is_relative(budget: Mapping[str, BudgetValue]) -> bool:
    """Whether any limit is a share of the full model (needs :func:`resolve_budget`)."""
    return any(isinstance(budget.get(key), str) for key in BUDGET_KEYS)


def resolve_budget(budget: Mapping[str, BudgetValue], full_latency_ms: float | None,
                   full_memory_mb: float | None) -> dict[str, float | None]:
    """Absolute limits: every share (``'60%'``) taken of the full model's latency / memory.

    Raises:
        ValueError: A share is given but the full model's value is unknown (a bank without latency profiles).
    """
    resolved: dict[str, float | None] = {}
    for key, full in (('latency_ms', full_latency_ms), ('memory_mb', full_memory_mb)):
        value = budget.get(key)
        if isinstance(value, str):
            if full is None:
                raise ValueError(f'{key}={value} is a share of the full model, whose {key} is not profiled in this '
                                 f'bank; give an absolute {key}')
            value = float(value[:-1]) / 100 * full
        resolved[key] = value
    return resolved


def format_budget(budget: Mapping[str, Any]) -> str:
    """``'latency<=30.00ms, memory<=60%'`` (``'unconstrained'`` without limits)."""
    parts = []
    for key, unit in (('latency_ms', 'ms'), ('memory_mb', 'MB')):
        value = budget.get(key)
        if value is not None:
            name = key.split('_')[0]
            parts.append(f'{name}<={value}' if isinstance(value, str) else f'{name}<={value:.2f}{unit}')
    return ', '.join(parts) or 'unconstrained'
