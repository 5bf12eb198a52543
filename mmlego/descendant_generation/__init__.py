"""LegoDNN stage 2: descendant blocks, pruned physically at several sparsities, keeping the block's I/O shapes."""
from .generation import Descendant, check_sparsities, generate_descendants, rebuild_descendant
from .pruning import DEFAULT_SPARSITIES, PruningPlan, apply_plan, prune_block

__all__ = ['DEFAULT_SPARSITIES', 'Descendant', 'PruningPlan', 'apply_plan', 'check_sparsities',
           'generate_descendants', 'prune_block', 'rebuild_descendant']
