"""Generate every block's descendants at the requested sparsities."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

from torch import nn

from ..block_extraction import BlockSpec
from ..block_extraction.block_module import BlockModule, block_module_of
from ..utils.progress import progress
from .pruning import DEFAULT_SPARSITIES, PruningPlan, apply_plan, plan_totals, prune_block

logger = logging.getLogger(__name__)


@dataclass
class Descendant:
    """One pruned version of a block.

    Attributes:
        spec: The block.
        plan: How it was pruned from the teacher's block.
        module: The pruned block, standalone (sparsity 0.0: an exact copy of the teacher's block).
    """

    spec: BlockSpec
    plan: PruningPlan
    module: BlockModule

    @property
    def sparsity(self) -> float:
        """The descendant's sparsity."""
        return self.plan.sparsity


def check_sparsities(sparsities: Sequence[float]) -> list[float]:
    """Validates a sparsity list: sorted, unique, in [0, 1), starting with 0.0 (the original block)."""
    values = [float(s) for s in sparsities]
    if not values or values[0] != 0.0 or any(not 0 <= s < 1 for s in values) or values != sorted(set(values)):
        raise ValueError(f'sparsities must be increasing, unique, in [0, 1) and start with 0.0 (the original '
                         f'block), got {list(sparsities)}; LegoDNN uses {list(DEFAULT_SPARSITIES)}.')
    return values


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
        teacher_block = block_module_of(model, spec)
        teacher_block.eval()
        for sparsity in sparsities:
            module = block_module_of(model, spec)
            module.eval()
            plan = prune_block(module, spec, sparsity)
            if plan.unpruned_reason:  # a failed attempt may have pruned part of the copy
                module = block_module_of(model, spec).eval()
            plan_totals(teacher_block, plan)
            result[spec.name][sparsity] = Descendant(spec=spec, plan=plan, module=module)
    return result


def rebuild_descendant(model: nn.Module, spec: BlockSpec, plan: PruningPlan) -> Descendant:
    """A descendant's structure rebuilt from the teacher and a plan (weights: the teacher's kept channels)."""
    module = apply_plan(block_module_of(model, spec), plan)
    module.eval()
    return Descendant(spec=spec, plan=plan, module=module)
