"""LegoDNN stage 2: descendant blocks, pruned physically at several sparsities, keeping the block's I/O shapes.

What loads a bank (:class:`Descendant`, :class:`PruningPlan`, :func:`build_block`) is imported eagerly; what prunes
(:func:`prune_block`, :func:`generate_descendants`...) imports torch-pruning, so it is imported on first use: a
runtime that only serves banks never loads it (:mod:`mmlego.runtime`).
"""
from importlib import import_module
from typing import Any

from .descendant import DEFAULT_SPARSITIES, Descendant, PruningPlan, check_sparsities
from .structure import build_block, module_tensors, record_structure

_PRUNING_NAMES = {'apply_plan': 'pruning', 'prune_block': 'pruning',
                  'generate_descendants': 'generation', 'rebuild_descendant': 'generation'}


def __getattr__(name: str) -> Any:
    if name in _PRUNING_NAMES:
        return getattr(import_module(f'.{_PRUNING_NAMES[name]}', __name__), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = ['DEFAULT_SPARSITIES', 'Descendant', 'PruningPlan', 'apply_plan', 'build_block', 'check_sparsities',
           'generate_descendants', 'module_tensors', 'prune_block', 'rebuild_descendant', 'record_structure']
