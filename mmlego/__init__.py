"""mmlego: LegoDNN block-grained scaling for OpenMMLab 2.x models.

Importing the package makes the ``mmlego`` registry scope known (:mod:`mmlego.registry`); each registry imports the
modules that fill it on first use, so ``default_scope='mmlego'``, ``mmlego.``-prefixed types and
``custom_imports=dict(imports=['mmlego'])`` all work, and a process that only serves (:mod:`mmlego.runtime`) never
imports the training stack.
"""
from .version import __version__
from . import registry  # noqa: F401

__all__ = ['__version__']
