"""LegoDNN stage 4: accuracy drop, memory, FLOPs and latency of every descendant; portable latency tables."""
from .accuracy import DEFAULT_REFERENCES, profile_accuracy, reference_sparsity
from .cost import LatencyTable, count_flops, measure_latency, memory_bytes, profile_costs, profile_model

__all__ = ['DEFAULT_REFERENCES', 'LatencyTable', 'count_flops', 'measure_latency', 'memory_bytes',
           'profile_accuracy', 'profile_costs', 'profile_model', 'reference_sparsity']
