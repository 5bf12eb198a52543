"""Latency headroom: how far below a latency budget to aim, from how wrong recent predictions were and how far the
device's speed moved lately.

The online correction predicts a new configuration's latency before it runs: its options' own factors where they
ran before, priors where not, and the load of now. Each prediction misses by some error (options never served, a
machine whose speed moves between the solve and the forwards): a configuration estimated right at its budget
measures over it about half the time. :class:`LatencyHeadroom` records, for each configuration switched in, its
predicted latency against what the correction says of it once its own forwards were learned from, and answers
a headroom: an upper quantile of those relative errors, so that a budget is aimed at ``budget / (1 + headroom)``.
A machine whose predictions hold (errors near zero) gets none and keeps the largest configuration that fits.

The second part is the **phase spread**: some machines (shared VMs) change speed in phases lasting from half a
second to seconds with nothing else running; the online correction follows them within a few forwards, so a
configuration solved in a fast phase fits its budget there and misses it by the phases' ratio in the next slow one.
:meth:`LatencyHeadroom.observe_load` keeps the correction's load factor after each learned forward for
``spread_horizon_s`` seconds; the spread is an upper quantile of those loads over the load now, minus 1: how much
slower than now the device ran lately. It is 0 in the slowest phase (the correction already describes it) and
reacts at once to a lasting slowdown (the load now is the highest), and it releases ``spread_horizon_s`` after the
device got faster for good. The headroom learned (``'auto'``) is the larger of the two. The spread is off by default
(``spread_horizon_s=0``): on the 2-vCPU VM it was measured on, budgets were missed as often with it as without (4 of
81 and 3 of 76 over eight few-ms models, README "Headroom"), its misses coming from changes faster than the
correction's window, which no headroom learned after the fact sees; it is for devices whose slow phases outlast it.
"""
from __future__ import annotations

import collections
import math
import statistics
import time
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # the solver's result type only; the estimation does not depend on the optimizer
    from ..scaling_optimizer import ScalingResult


class LatencyHeadroom:
    """Relative latency headroom under a budget: fixed, or learned from prediction errors (``'auto'``).

    Args:
        headroom: ``'auto'`` (learned, see the module docstring) or a fixed fraction >= 0 (0: aim at the budget).
        window: Prediction errors kept (the most recent).
        quantile: The errors' quantile the learned headroom is (0.75: three of four recent predictions would have
            fit under their budget with it).
        max_headroom: Cap of the learned headroom (an outlier, e.g. a forward preempted while learning, must not
            shrink every later configuration by more).
        min_predictions: Errors needed before the learned headroom leaves 0.
        spread_horizon_s: Seconds the loads of the phase spread are kept (0, the default: no phase spread).
        spread_quantile: The loads' quantile the spread is taken at (0.9: the slow phases that took a tenth of
            the horizon count).
        max_spread: Cap of the phase spread (after a lasting load ended, the model runs at most this far under
            its budgets until the horizon passed).
        min_loads: Loads needed within the horizon before the spread leaves 0.
        clock: Seconds, monotonic (``time.monotonic``; a test's own clock).

    Attributes:
        fixed: The fixed headroom, or None when it is learned (settable, e.g. to compare both side by side).
        errors: The recent relative prediction errors.
        loads: ``(time, load)`` of the recent learned forwards (the phase spread's).

    Raises:
        ValueError: An invalid argument.
    """

    def __init__(self, headroom: float | str = 'auto', window: int = 8, quantile: float = 0.75,
                 max_headroom: float = 0.1, min_predictions: int = 3, spread_horizon_s: float = 0.0,
                 spread_quantile: float = 0.9, max_spread: float = 0.5, min_loads: int = 10,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if headroom != 'auto' and (isinstance(headroom, (bool, str)) or not isinstance(headroom, (int, float))
                                   or not math.isfinite(headroom) or headroom < 0):
            raise ValueError(f"latency_headroom must be 'auto' or a fraction >= 0 (e.g. 0.05: aim 5% under the "
                             f'budget), got {headroom!r}')
        if window < 1 or not 1 <= min_predictions <= window or not 0 < quantile < 1 or not max_headroom >= 0:
            raise ValueError(f'need window >= 1, 1 <= min_predictions <= window, 0 < quantile < 1 and '
                             f'max_headroom >= 0, got window={window}, min_predictions={min_predictions}, '
                             f'quantile={quantile}, max_headroom={max_headroom}')
        if not (spread_horizon_s >= 0 and 0 < spread_quantile < 1 and max_spread >= 0 and min_loads >= 1):
            raise ValueError(f'need spread_horizon_s >= 0, 0 < spread_quantile < 1, max_spread >= 0 and '
                             f'min_loads >= 1, got spread_horizon_s={spread_horizon_s}, spread_quantile='
                             f'{spread_quantile}, max_spread={max_spread}, min_loads={min_loads}')
        self.fixed = None if headroom == 'auto' else float(headroom)
        self.quantile = quantile
        self.max_headroom = max_headroom
        self.min_predictions = min_predictions
        self.errors: collections.deque[float] = collections.deque(maxlen=window)
        self._pending: float | None = None
        self.spread_horizon_s = float(spread_horizon_s)
        self.spread_quantile = spread_quantile
        self.max_spread = max_spread
        self.min_loads = min_loads
        self.clock = clock
        self.loads: collections.deque[tuple[float, float]] = collections.deque(maxlen=4096)

    def predicted(self, latency_ms: float) -> None:
        """A configuration was switched in, predicted at ``latency_ms`` (replaces a prediction not yet settled)."""
        self._pending = latency_ms if latency_ms > 0 and math.isfinite(latency_ms) else None

    def discard(self) -> None:
        """Forgets a prediction not yet learned (another configuration was switched in without one)."""
        self._pending = None

    @property
    def pending(self) -> bool:
        """Whether a prediction waits for its configuration's forwards."""
        return self._pending is not None

    def learned(self, latency_ms: float) -> None:
        """The correction's estimate of the predicted configuration once its forwards were learned from: records
        the prediction's relative error (positive: it ran slower than predicted)."""
        if self._pending is None or not (latency_ms > 0 and math.isfinite(latency_ms)):
            return
        self.errors.append(latency_ms / self._pending - 1.0)
        self._pending = None

    def observe_load(self, load: float) -> None:
        """The online correction's load factor after a learned forward (ignored unless positive finite)."""
        if self.spread_horizon_s and load > 0 and math.isfinite(load):
            self.loads.append((self.clock(), load))

    @property
    def prediction_headroom(self) -> float:
        """The upper quantile of recent prediction errors clamped to ``[0, max_headroom]`` (0 before
        ``min_predictions`` errors)."""
        if len(self.errors) < self.min_predictions:
            return 0.0
        return min(self.max_headroom, max(0.0, _quantile(self.errors, self.quantile)))

    @property
    def spread(self) -> float:
        """The phase spread: the ``spread_quantile`` of the loads of the last ``spread_horizon_s`` seconds over
        the latest load, minus 1, clamped to ``[0, max_spread]`` (0 before ``min_loads`` loads in the horizon)."""
        start = self.clock() - self.spread_horizon_s
        while self.loads and self.loads[0][0] < start:
            self.loads.popleft()
        if len(self.loads) < self.min_loads:
            return 0.0
        upper = _quantile([load for _, load in self.loads], self.spread_quantile)
        return min(self.max_spread, max(0.0, upper / self.loads[-1][1] - 1.0))

    @property
    def value(self) -> float:
        """The headroom now: the fixed one, or the larger of :attr:`prediction_headroom` and :attr:`spread`."""
        if self.fixed is not None:
            return self.fixed
        return max(self.prediction_headroom, self.spread)

    def reset(self) -> None:
        """Forgets the errors and loads (e.g. after the latencies were re-profiled)."""
        self.errors.clear()
        self.loads.clear()
        self._pending = None


def _quantile(values, quantile: float) -> float:
    """The inclusive quantile (within the observed values)."""
    values = sorted(values)
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method='inclusive')[round(quantile * 100) - 1]


def solve_under_headroom(solve_at: Callable[[float | None], ScalingResult], latency_ms: float | None,
                         headroom: float) -> tuple[ScalingResult, float]:
    """Solves for ``latency_ms / (1 + headroom)``, and for ``latency_ms`` itself when nothing fits under that.

    Args:
        solve_at: Solves the problem for a latency limit (None: no limit).
        latency_ms: The latency budget (None: no limit, no headroom).
        headroom: The relative headroom.

    Returns:
        The result, and the headroom it was solved with (0.0 when the budget itself was used).
    """
    if latency_ms is None or not headroom:
        return solve_at(latency_ms), 0.0
    result = solve_at(latency_ms / (1 + headroom))
    if result.status == 'infeasible':
        return solve_at(latency_ms), 0.0
    return result, headroom
