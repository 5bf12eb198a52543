"""The online half of LegoDNN, for serving: several models under one shared budget.

:class:`MultiModelRuntime` solves LegoDNN models jointly when their shared budget changes and switches only what
changed; :func:`mmlego.apis.scale_models` is its one-call form.
"""
from .multi_model import MultiModelRuntime, model_names

__all__ = ['MultiModelRuntime', 'model_names']
