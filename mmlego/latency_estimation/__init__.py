"""LegoDNN's latency estimation: blocks timed inside the running model, and the online correction of estimates.

:class:`BlockTimer` times every block where it runs, inside the model's own forward (offline profiling uses it
to measure what each descendant costs in the composite; online, the :class:`mmlego.LegoDNN` wrapper keeps it on
the forwards it serves). :class:`LatencyCorrection` turns those measurements into robust ratios of measured to
profiled latency (a load factor shared by every block, and one factor per descendant), which correct every estimate
the scaling optimizer is fed; :class:`LatencyHeadroom` learns from their recent misses how far under a latency
budget to aim.
"""
from .block_timer import BlockTimer, BlockTiming
from .correction import LatencyCorrection
from .headroom import LatencyHeadroom, solve_under_headroom

__all__ = ['BlockTimer', 'BlockTiming', 'LatencyCorrection', 'LatencyHeadroom', 'solve_under_headroom']
