"""OpenMMLab glue over the LegoDNN core: the tensor path of a task model."""
from .legodnn import LegoDNN
from .tensor_path import TENSOR_PATHS, build_model, example_batch, trace_tensor_path

__all__ = ['LegoDNN', 'TENSOR_PATHS', 'build_model', 'example_batch', 'trace_tensor_path']
