"""Online correction of latency estimates from the forwards a model serves (LegoDNN's latency estimation).

Every served forward at the profiled input size gives one observation: the measured time of the running blocks
over what their profiles say. The median of the last ``window`` observations is the ratio by which
the device now runs slower (> 1, e.g. another process takes a core) or faster than when it was profiled; every
latency the optimizer sees is multiplied by it. A median of a short window follows a change of load within
``window // 2 + 1`` forwards and ignores single outliers (a page fault, a preempted forward).
"""
from __future__ import annotations

import collections
import math
import statistics


class LatencyCorrection:
    """A robust running ratio of measured to estimated latency.

    Args:
        window: Observations kept (the median is taken over them).
        min_observations: Observations needed before the ratio leaves 1.0.
    """

    def __init__(self, window: int = 5, min_observations: int = 3) -> None:
        if window < 1 or not 1 <= min_observations <= window:
            raise ValueError(f'need window >= 1 and 1 <= min_observations <= window, got window={window}, '
                             f'min_observations={min_observations}')
        self.window = window
        self.min_observations = min_observations
        self._ratios: collections.deque[float] = collections.deque(maxlen=window)
        self.observations = 0

    def observe(self, measured_ms: float, estimated_ms: float) -> None:
        """Adds one forward (ignored when either time is not a positive finite number)."""
        if estimated_ms > 0 and measured_ms > 0 and math.isfinite(measured_ms) and math.isfinite(estimated_ms):
            self._ratios.append(measured_ms / estimated_ms)
            self.observations += 1

    @property
    def ratio(self) -> float:
        """Measured / estimated latency now (1.0 until ``min_observations`` forwards were seen)."""
        if len(self._ratios) < self.min_observations:
            return 1.0
        return float(statistics.median(self._ratios))

    def reset(self) -> None:
        """Forgets every observation (e.g. after the bank's latencies were re-profiled)."""
        self._ratios.clear()
        self.observations = 0
