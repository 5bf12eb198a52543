"""LegoDNN stage 4: accuracy drop, memory, FLOPs and latency of every descendant; portable latency tables."""
from .accuracy import DEFAULT_REFERENCES, profile_accuracy, reference_sparsity
from .cost import LatencyTable, count_flops, measure_latency, memory_bytes, profile_costs, profile_model
from .latency import check_latency_model, profile_latency
from .memory import process_rss_bytes, resident_device_bytes

__all__ = ['DEFAULT_REFERENCES', 'LatencyTable', 'check_latency_model', 'count_flops', 'measure_latency',
           'memory_bytes', 'process_rss_bytes', 'profile_accuracy', 'profile_costs', 'profile_latency',
           'profile_model', 'reference_sparsity', 'resident_device_bytes']
