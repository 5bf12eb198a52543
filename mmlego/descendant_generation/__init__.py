"""LegoDNN stage 2: descendant blocks, pruned physically at several sparsities, keeping the block's I/O shapes."""
from .generation import Descendant, check_sparsities, generate_descendants, rebuild_descendant
from .pruning import DEFAULT_SPARSITIES, PruningPlan, apply_plan, prune_block
from .structure import build_block, module_tensors, record_structure

__all__ = ['DEFAULT_SPARSITIES', 'Descendant', 'PruningPlan', 'apply_plan', 'build_block', 'check_sparsities',
           'generate_descendants', 'module_tensors', 'prune_block', 'rebuild_descendant', 'record_structure']
