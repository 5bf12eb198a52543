"""LegoDNN stage 4: accuracy drop, memory, FLOPs and latency of every descendant; portable latency tables.

Accuracy profiling (evaluating every descendant on the task metric) is offline work: it is imported on first use,
so the runtime's latency profiling does not load it (:mod:`mmlego.runtime`).
"""
from importlib import import_module
from typing import Any

from .cost import LatencyTable, count_flops, measure_latency, memory_bytes, profile_costs, profile_model
from .latency import check_latency_model, intra_op_threads, profile_latency
from .memory import process_rss_bytes, resident_device_bytes

_ACCURACY_NAMES = ('DEFAULT_REFERENCES', 'fit_drop_interaction', 'profile_accuracy', 'reference_sparsity')


def __getattr__(name: str) -> Any:
    if name in _ACCURACY_NAMES:
        return getattr(import_module('.accuracy', __name__), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = ['DEFAULT_REFERENCES', 'LatencyTable', 'check_latency_model', 'count_flops', 'fit_drop_interaction',
           'intra_op_threads', 'measure_latency', 'memory_bytes', 'process_rss_bytes', 'profile_accuracy',
           'profile_costs', 'profile_latency', 'profile_model', 'reference_sparsity', 'resident_device_bytes']
