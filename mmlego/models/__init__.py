"""OpenMMLab glue over the LegoDNN core: the tensor path of a task model."""
from .tensor_path import TENSOR_PATHS, build_model, example_batch, trace_tensor_path

__all__ = ['TENSOR_PATHS', 'build_model', 'example_batch', 'trace_tensor_path']
