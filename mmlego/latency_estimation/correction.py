"""Online correction of latency estimates from the forwards a model serves (LegoDNN's latency estimation).

Every served forward at the profiled input size gives one observation per running block: its measured time over
its profile. Two factors explain them (:class:`LatencyCorrection`):

- a **load** factor shared by every block: how much slower (> 1, e.g. another process takes a core) or faster
  the device runs now than when the options seen so far were learned;
- a **per-option** factor (block, sparsity): how that descendant runs against its profile at that load. A
  device's ratio to the profiles differs between configurations (a pruned block may run relatively faster than
  the teacher's), so one ratio learned on the running configuration misses the next one by that difference.

An option's corrected latency is ``load x its factor x its profile``; an option never served takes the median
factor of the options of its sparsity that were (else of all; 1.0 before any). The frame outside the blocks has
its own factor where whole forwards are timed too (:meth:`LatencyCorrection.observe_frame`: the forward minus its
blocks); before that, :attr:`LatencyCorrection.ratio` (the blocks served last) is the best guess for it. Medians over the last ``window``
observations follow a change of load within ``window // 2 + 1`` forwards and ignore single outliers (a page
fault, a preempted forward); an option keeps what it learned while other configurations run.
"""
from __future__ import annotations

import collections
import math
import statistics
from typing import Iterable, Mapping


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
        self._options: dict[tuple[str, float], collections.deque[float]] = {}
        self._frames: collections.deque[float] = collections.deque(maxlen=window)
        self._running_factor = 1.0
        self.observations = 0
        self._summary: tuple | None = None  # (observations, known factors, per-sparsity priors, overall prior)

    # -- observations ----------------------------------------------------------------------------------------
    def observe(self, measured_ms: float, estimated_ms: float) -> None:
        """Adds one forward known only as a whole (a load observation; ignored unless both are positive finite)."""
        if _valid(measured_ms, estimated_ms):
            self._loads.append(measured_ms / estimated_ms / self._running_factor)
            self.observations += 1

    def observe_blocks(self, times: Mapping[tuple[str, float], tuple[float, float]]) -> None:
        """Adds one forward timed per block.

        Args:
            times: ``(block, sparsity)`` -> (measured ms, profiled ms) of every running block.
                Entries that are not positive finite numbers are ignored.
        """
        times = {key: pair for key, pair in times.items() if _valid(*pair)}
        if not times:
            return
        # The load: how much slower the options seen before run now than their factors say (the new ones are
        # learned relative to it); if all are new, they are taken to run as their priors say (relatives()).
        seen = [key for key in times if key in self._options]
        factors = {key: self._median(key) for key in seen} if seen else self.relatives(times)
        seen = seen or list(times)
        expected = math.fsum(factors[key] * times[key][1] for key in seen)
        load = math.fsum(times[key][0] for key in seen) / expected
        self._loads.append(load)
        for key, (measured, profiled) in times.items():
            self._options.setdefault(key, collections.deque(maxlen=self.window)).append(measured / profiled / load)
        self._running_factor = (math.fsum(self._median(key) * profiled for key, (_, profiled) in times.items())
                                / math.fsum(profiled for _, profiled in times.values()))
        self.observations += 1

    def observe_frame(self, measured_ms: float, profiled_ms: float) -> None:
        """Adds the frame's time in the forward whose blocks :meth:`observe_blocks` saw last.

        Args:
            measured_ms: The whole forward's wall time minus its blocks' (as the estimate counts them, i.e. times
                their calibration); clamped at 0.
            profiled_ms: The frame's profiled latency (ignored unless positive finite, and before any blocks).
        """
        if not (self._loads and profiled_ms > 0 and math.isfinite(profiled_ms) and math.isfinite(measured_ms)):
            return
        self._frames.append(max(measured_ms, 0.0) / profiled_ms / self._loads[-1])

    # -- factors ---------------------------------------------------------------------------------------------
    def _median(self, key: tuple[str, float]) -> float:
        return float(statistics.median(self._options[key])) if key in self._options else 1.0

    @property
    def load(self) -> float:
        """The load factor now (1.0 until ``min_observations`` forwards were seen)."""
        if len(self._loads) < self.min_observations:
            return 1.0
        return float(statistics.median(self._loads))

    def relatives(self, keys: Iterable[tuple[str, float]]) -> dict[tuple[str, float], float]:
        """The own factors (measured / profiled latency over the load) of options ``(block, sparsity)``.

        An option served ``min_observations`` times has its own; another takes the median of those of its
        sparsity (pruning shifts a descendant's time against its profile alike across blocks), else of all, else 1.0.
        """
        if self._summary is None or self._summary[0] != self.observations:  # once per observed forward
            known = {key: float(statistics.median(values)) for key, values in self._options.items()
                     if len(values) >= self.min_observations}
            by_sparsity: dict[float, list[float]] = {}
            for (_, sparsity), value in known.items():
                by_sparsity.setdefault(sparsity, []).append(value)
            overall = float(statistics.median(known.values())) if known else 1.0
            prior = {sparsity: float(statistics.median(values)) for sparsity, values in by_sparsity.items()}
            self._summary = (self.observations, known, prior, overall)
        _, known, prior, overall = self._summary
        return {key: known[key] if key in known else prior.get(key[1], overall) for key in keys}

    @property
    def frame(self) -> float | None:
        """The frame's own factor over the load (None until ``min_observations`` whole forwards were timed)."""
        if len(self._frames) < self.min_observations:
            return None
        return float(statistics.median(self._frames))

    def factor(self, key: tuple[str, float]) -> float:
        """Measured / profiled latency of an option ``(block, sparsity)`` now: the load times its own factor
        (:meth:`relatives`)."""
        return self.load * self.relatives([key])[key]

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
        self._frames.clear()
        self._running_factor = 1.0
        self.observations = 0
        self._summary = None
