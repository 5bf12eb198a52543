"""What else the machine did while a benchmark ran: the share of CPU time the hypervisor stole (Linux /proc/stat).

On a shared virtual machine the host takes CPU time from the guest ("steal"); wall-clock latencies then drift by as
much, whatever the estimator. Benchmarks record the steal share of their run next to their figures.
"""
from __future__ import annotations


def cpu_times() -> list[int] | None:
    """The aggregate ``cpu`` line of /proc/stat (user nice system idle iowait irq softirq steal ...), or None."""
    try:
        with open('/proc/stat') as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    return [int(x) for x in fields[1:]] if fields and fields[0] == 'cpu' else None


def steal_share(before: list[int] | None, after: list[int] | None) -> float | None:
    """Stolen / total CPU time between two :func:`cpu_times` samples (None where /proc/stat is missing)."""
    if not before or not after or len(before) < 8 or len(after) < 8:
        return None
    # guest time is already counted in user time: total over the first 8 fields
    total = sum(after[:8]) - sum(before[:8])
    return (after[7] - before[7]) / total if total > 0 else None
