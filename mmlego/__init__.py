"""mmlego: LegoDNN block-grained scaling for OpenMMLab 2.x models.

Importing the package registers its modules in mmlego's registries (see :mod:`mmlego.registry`), so both
``default_scope='mmlego'`` and ``custom_imports=dict(imports=['mmlego'])`` work in configs.
"""
from .version import __version__
from . import registry  # noqa: F401
from . import models  # noqa: F401
from . import engine  # noqa: F401

__all__ = ['__version__']
