"""Latency headroom: how far below a latency budget to aim, from how wrong recent predictions were.

The online correction predicts a new configuration's latency before it runs: its options' own factors where they
ran before, priors where not, and the load of now. Each prediction misses by some error (options never served, a
machine whose speed moves between the solve and the forwards): a configuration estimated right at its budget
measures over it about half the time. :class:`LatencyHeadroom` records, for each configuration switched in, its
predicted latency against what the correction says of it once its own forwards were learned from, and answers
a headroom: an upper quantile of those relative errors, so that a budget is aimed at ``budget / (1 + headroom)``.
A machine whose predictions hold (errors near zero) gets none and keeps the largest configuration that fits.
"""
from __future__ import annotations

import collections
import math
import statistics
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

    Attributes:
        fixed: The fixed headroom, or None when it is learned (settable, e.g. to compare both side by side).
        errors: The recent relative prediction errors.

    Raises:
        ValueError: An invalid argument.
    """

    def __init__(self, headroom: float | str = 'auto', window: int = 8, quantile: float = 0.75,
                 max_headroom: float = 0.1, min_predictions: int = 3) -> None:
        if headroom != 'auto' and (isinstance(headroom, (bool, str)) or not isinstance(headroom, (int, float))
                                   or not math.isfinite(headroom) or headroom < 0):
            raise ValueError(f"latency_headroom must be 'auto' or a fraction >= 0 (e.g. 0.05: aim 5% under the "
                             f'budget), got {headroom!r}')
        if window < 1 or not 1 <= min_predictions <= window or not 0 < quantile < 1 or not max_headroom >= 0:
            raise ValueError(f'need window >= 1, 1 <= min_predictions <= window, 0 < quantile < 1 and '
                             f'max_headroom >= 0, got window={window}, min_predictions={min_predictions}, '
                             f'quantile={quantile}, max_headroom={max_headroom}')
        self.fixed = None if headroom == 'auto' else float(headroom)
        self.quantile = quantile
        self.max_headroom = max_headroom
        self.min_predictions = min_predictions
        self.errors: collections.deque[float] = collections.deque(maxlen=window)
        self._pending: float | None = None

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

    @property
    def value(self) -> float:
        """The headroom now: the fixed one, or the learned quantile of recent errors clamped to
        ``[0, max_headroom]`` (0 before ``min_predictions`` errors)."""
        if self.fixed is not None:
            return self.fixed
        if len(self.errors) < self.min_predictions:
            return 0.0
        errors = sorted(self.errors)
        if len(errors) == 1:
            upper = errors[0]
        else:  # the inclusive quantile: within the observed errors
            upper = statistics.quantiles(errors, n=100, method='inclusive')[round(self.quantile * 100) - 1]
        return min(self.max_headroom, max(0.0, upper))

    def reset(self) -> None:
        """Forgets the errors (e.g. after the latencies were re-profiled)."""
        self.errors.clear()
        self._pending = None


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
