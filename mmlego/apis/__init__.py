"""mm-style APIs: ``init_lego_model``, ``scale_model``, ``scale_models``, ``inference_lego_model``."""
from .inference import inference_lego_model, task_family
from .init import TASK_FAMILIES, init_lego_model, scale_model, scale_models

__all__ = ['TASK_FAMILIES', 'inference_lego_model', 'init_lego_model', 'scale_model', 'scale_models', 'task_family']
