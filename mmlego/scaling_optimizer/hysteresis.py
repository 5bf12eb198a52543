"""When a changing budget should re-solve: never run over it, never oscillate on a flat or noisy-flat one.

The rule (for budgets that change over time: a device monitor or a schedule):

- the running configuration's estimates (latency with the online correction) exceed a limit of the new budget:
  re-solve (**downscale**), always;
- a limit rose by more than ``hysteresis`` (relative) over the budget the running configuration was solved for, or
  was lifted: re-solve (**upscale**): a larger configuration may fit;
- otherwise **keep** the running configuration. It fits, and if the budget tightened it is still the optimum
  (the feasible set shrank around it); a rise within ``hysteresis`` may leave some accuracy unused until the
  budget rises further.

A budget signal whose noise spans less than ``hysteresis`` (peak to peak) cannot make it switch back and forth: a
downscale happens only when the running configuration stops fitting, and after it the budget must rise by more than
``hysteresis`` over the lower budget before the next upscale. Set ``hysteresis`` above the peak-to-peak noise of
the budget source; 0 re-solves on every rise.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping

from .budget import BUDGET_KEYS

#: Default relative rise of a limit needed before an upscale.
DEFAULT_HYSTERESIS = 0.1
_UNITS = {'latency_ms': 'ms', 'memory_mb': 'MB'}


@dataclasses.dataclass
class Decision:
    """What to do with a new budget: ``action`` is ``'rescale'`` or ``'keep'``; ``reason`` says why."""
    action: str
    reason: str

    @property
    def rescale(self) -> bool:
        """Whether the optimizer should run."""
        return self.action == 'rescale'


def decide(running: Mapping[str, float], solved: Mapping[str, float | None] | None,
           budget: Mapping[str, float | None], hysteresis: float = DEFAULT_HYSTERESIS,
           smallest: bool = False) -> Decision:
    """Whether a new (absolute) budget needs a re-solve.

    Args:
        running: Estimates of the running configuration: ``latency_ms`` (online-corrected) and ``memory_mb``.
        solved: The budget the running configuration was solved for (None: nothing solved yet).
        budget: The new budget (``latency_ms`` / ``memory_mb``; None: no limit).
        hysteresis: Relative rise of a limit that triggers an upscale.
        smallest: The running configuration is the smallest one (the last budget was infeasible): a budget that
            does not rise above the solved one cannot be met better, so it keeps.

    Raises:
        ValueError: ``hysteresis`` is negative or not finite.
    """
    if not (isinstance(hysteresis, (int, float)) and math.isfinite(hysteresis) and hysteresis >= 0):
        raise ValueError(f'hysteresis must be a finite number >= 0 (a relative rise, e.g. 0.1), got {hysteresis!r}')
    if solved is None:
        return Decision('rescale', 'first budget')
    over = [f'{key.split("_")[0]} {running[key]:.2f} > {budget[key]:.2f} {_UNITS[key]}' for key in BUDGET_KEYS
            if budget.get(key) is not None and running[key] > budget[key]]
    rose = []
    for key in BUDGET_KEYS:
        old, new = solved.get(key), budget.get(key)
        if old is not None and new is None:
            rose.append(f'{key.split("_")[0]} limit lifted')
        elif old is not None and new > old * (1 + hysteresis):
            rose.append(f'{key.split("_")[0]} +{new / old - 1:.0%} > hysteresis {hysteresis:.0%}')
    if over and not (smallest and not rose):
        return Decision('rescale', 'downscale: running over budget (' + '; '.join(over) + ')')
    if over:
        return Decision('keep', 'already the smallest configuration (' + '; '.join(over) + ')')
    if rose:
        return Decision('rescale', 'upscale: budget rose (' + '; '.join(rose) + ')')
    changes = [f'{key.split("_")[0]} {budget[key] / solved[key] - 1:+.1%}' for key in BUDGET_KEYS
               if budget.get(key) is not None and solved.get(key)]
    return Decision('keep', 'running configuration fits' + (' (' + ', '.join(changes) + f' vs solved; '
                                                             f'hysteresis {hysteresis:.0%})' if changes else ''))
