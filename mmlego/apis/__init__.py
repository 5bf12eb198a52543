"""mm-style inference APIs: ``init_lego_model``, ``scale_model``, ``inference_lego_model``."""
from .inference import TASK_FAMILIES, inference_lego_model, init_lego_model, scale_model, task_family

__all__ = ['TASK_FAMILIES', 'inference_lego_model', 'init_lego_model', 'scale_model', 'task_family']
