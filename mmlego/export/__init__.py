"""Export of a chosen configuration: ONNX of its tensor path (checked with onnxruntime) and a standalone
safetensors + JSON artifact that runs without the bank (:func:`load_configuration`)."""
from .artifact import ARTIFACT_FORMAT, ONNX_TOLERANCE, composite_copy, export_configuration, load_configuration
from .onnx_export import DEFAULT_OPSET, MIN_OPSET, ExportError, TensorPathModule, export_onnx, onnx_max_abs_diff

__all__ = ['ARTIFACT_FORMAT', 'DEFAULT_OPSET', 'MIN_OPSET', 'ONNX_TOLERANCE', 'ExportError', 'TensorPathModule',
           'composite_copy', 'export_configuration', 'export_onnx', 'load_configuration', 'onnx_max_abs_diff']
