"""Online correction of latency estimates from the forwards a model serves (LegoDNN's latency estimation).

Every served forward at the profiled input size gives one observation per running block: its measured time over
its profile. Two factors explain them (:class:`LatencyCorrection`):

- a **load** factor shared by every block: how much slower (> 1, e.g. another process takes a core) or faster
  the device runs now than when the options seen so far were learned;
- a **per-option** factor (block, sparsity): how that descendant runs against its profile at that load. A
  device's ratio to the profiles differs between configurations (a pruned block may run relatively faster than
  the teacher's), so one ratio learned on the running configuration misses the next one by that difference.

An option's corrected latency is ``load x its factor x its profile``; an option never served (and the frame
outside the blocks) has factor 1: it runs like the options of the first configuration served. Medians over the last ``window``
observations follow a change of load within ``window // 2 + 1`` forwards and ignore single outliers (a page
fault, a preempted forward); an option keeps what it learned while other configurations run.
"""
from __future__ import annotations

import collections
import math
import statistics
from typing import Hashable, Mapping


def _valid(measured_ms: float, estimated_ms: float) -> bool:
    return estimated_ms > 0 and measured_ms > 0 and math.isfinite(measured_ms) and math.isfinite(estimated_ms)


class LatencyCorrection:
    """Robust running ratios of measured to estimated latency: a load factor and one factor per option.

    Args:
        window: Observations kept (medians are taken over them), of the load and of each option.
        min_observations: Observations needed before the load (and an option's factor) leaves its default.
    """

    def __init__(self, window: int = 5, min_observations: int = 3) -> None:
        if window < 1 or not 1 <= min_observations <= window:
            raise ValueError(f'need window >= 1 and 1 <= min_observations <= window, got window={window}, '
                             f'min_observations={min_observations}')
        self.window = window
        self.min_observations = min_observations
        self._loads: collections.deque[float] = collections.deque(maxlen=window)
        self._options: dict[Hashable, collections.deque[float]] = {}
        self._running_factor = 1.0
        self.observations = 0

    # -- observations ----------------------------------------------------------------------------------------
    def observe(self, measured_ms: float, estimated_ms: float) -> None:
        """Adds one forward known only as a whole (a load observation; ignored unless both are positive finite)."""
        if _valid(measured_ms, estimated_ms):
            self._loads.append(measured_ms / estimated_ms / self._running_factor)
            self.observations += 1

    def observe_blocks(self, times: Mapping[Hashable, tuple[float, float]]) -> None:
        """Adds one forward timed per block.

        Args:
            times: Option key (e.g. ``(block, sparsity)``) -> (measured ms, profiled ms) of every running block.
                Entries that are not positive finite numbers are ignored.
        """
        times = {key: pair for key, pair in times.items() if _valid(*pair)}
        if not times:
            return
        # The load: how much slower the options seen before run now than their factors say (the new ones are
        # learned relative to it); if all are new, they are taken to run like options never served (factor 1: as
        # LegoDNN's one ratio for the whole device would have it).
        seen = [key for key in times if key in self._options] or list(times)
        expected = math.fsum(self._median(key) * times[key][1] for key in seen)
        load = math.fsum(times[key][0] for key in seen) / expected
        self._loads.append(load)
        for key, (measured, profiled) in times.items():
            self._options.setdefault(key, collections.deque(maxlen=self.window)).append(measured / profiled / load)
        self._running_factor = (math.fsum(self._median(key) * profiled for key, (_, profiled) in times.items())
                                / math.fsum(profiled for _, profiled in times.values()))
        self.observations += 1

    # -- factors ---------------------------------------------------------------------------------------------
    def _median(self, key: Hashable) -> float:
        return float(statistics.median(self._options[key])) if key in self._options else 1.0

    @property
    def load(self) -> float:
        """The load factor now: measured / profiled latency of an option never served and of the frame (1.0
        until ``min_observations`` forwards were seen)."""
        if len(self._loads) < self.min_observations:
            return 1.0
        return float(statistics.median(self._loads))

    def relative(self, key: Hashable) -> float:
        """An option's own factor (measured / profiled latency over the load): 1.0 until it was served
        ``min_observations`` times."""
        options = self._options.get(key, ())
        return float(statistics.median(options)) if len(options) >= self.min_observations else 1.0

    def relative_factors(self) -> dict[Hashable, float]:
        """Every option's own factor that left 1.0 (served ``min_observations`` times)."""
        return {key: self.relative(key) for key, values in self._options.items()
                if len(values) >= self.min_observations}

    def factor(self, key: Hashable) -> float:
        """Measured / profiled latency of an option now: the load times its own factor."""
        return self.load * self.relative(key)

    @property
    def ratio(self) -> float:
        """Measured / profiled latency of the blocks of the configuration served last (1.0 until
        ``min_observations`` forwards were seen)."""
        if self.observations < self.min_observations:
            return 1.0
        return self.load * self._running_factor

    def reset(self) -> None:
        """Forgets every observation (e.g. after the bank's latencies were re-profiled)."""
        self._loads.clear()
        self._options.clear()
        self._running_factor = 1.0
        self.observations = 0
