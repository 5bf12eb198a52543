"""Utilities shared by mmlego's tools and packages."""
from .checkpoint import allow_mmengine_checkpoints, load_checkpoint, scope_runner_checkpoint_loading

__all__ = ['allow_mmengine_checkpoints', 'load_checkpoint', 'scope_runner_checkpoint_loading']
