"""Generate every block's descendants at the requested sparsities."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from ..block_extraction import BlockSpec
from ..block_extraction.block_module import block_module_of
from ..utils.progress import progress
from .descendant import DEFAULT_SPARSITIES, Descendant, PruningPlan, check_sparsities
from .pruning import apply_plan, plan_totals, prune_block
from .structure import record_structure


def generate_descendants(model: nn.Module,
                         blocks: Sequence[BlockSpec],
                         sparsities: Sequence[float] = DEFAULT_SPARSITIES,
                         show_progress: bool = True) -> dict[str, dict[float, Descendant]]:
    """Prunes every block of ``model`` at every sparsity.

    Args:
        model: The teacher (left untouched; blocks are copied).
        blocks: Blocks from :func:`mmlego.block_extraction.extract_blocks`.
        sparsities: Increasing, starting with 0.0.
        show_progress: Show a progress bar.

    Returns:
        Block name -> sparsity -> descendant.
    """
    sparsities = check_sparsities(sparsities)
    result: dict[str, dict[float, Descendant]] = {}
    for spec in progress(blocks, 'descendants', enabled=show_progress):
        result[spec.name] = {}
        teacher_block = block_module_of(model, spec, copy_modules=False)  # read only: channel counts, attributes
        for sparsity in sparsities:
            module = block_module_of(model, spec)
            module.eval()
            plan = prune_block(module, spec, sparsity)
            if plan.unpruned_reason:  # a failed attempt may have pruned part of the copy
                module = block_module_of(model, spec).eval()
            plan_totals(teacher_block, plan)
            if plan.channels:
                plan.structure = record_structure(teacher_block, module)
            result[spec.name][sparsity] = Descendant(spec=spec, plan=plan, module=module)
    return result


def rebuild_descendant(model: nn.Module, spec: BlockSpec, plan: PruningPlan) -> Descendant:
    """A descendant's structure rebuilt from the teacher and a plan (weights: the teacher's kept channels)."""
    module = apply_plan(block_module_of(model, spec), plan)
    module.eval()
    return Descendant(spec=spec, plan=plan, module=module)
