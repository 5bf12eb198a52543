"""Generate every block's descendants at the requested sparsities."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..block_extraction import BlockSpec
from ..block_extraction.block_module import BlockModule, block_module_of
from ..utils.progress import progress
from .pruning import DEFAULT_SPARSITIES, PruningPlan, apply_plan, plan_totals, prune_block
from .structure import record_structure


class Descendant:
    """One version of a block at one sparsity.

    This base class holds its module in memory (a freshly generated bank). A loaded bank holds memory-mapped
    descendants (:class:`mmlego.block_bank.storage.MappedDescendant`, materialized on demand) and, at sparsity 0.0,
    the teacher's own block modules (``teacher_owned``).

    Args:
        spec: The block.
        plan: How it was pruned from the teacher's block.
        module: The pruned block, standalone (sparsity 0.0: a copy of the teacher's block, or the teacher's own
            modules if ``teacher_owned``).
        teacher_owned: ``module`` is made of the teacher's live block modules (not a copy; never saved).
    """

    def __init__(self, spec: BlockSpec, plan: PruningPlan, module: BlockModule, teacher_owned: bool = False) -> None:
        self.spec = spec
        self.plan = plan
        self._module = module
        self.teacher_owned = teacher_owned

    def __repr__(self) -> str:
        kind = 'teacher' if self.teacher_owned else 'mapped' if self.file_backed else 'in memory'
        return f'{type(self).__name__}({self.spec.name}@{self.sparsity:g}, {kind})'

    @property
    def sparsity(self) -> float:
        """The descendant's sparsity."""
        return self.plan.sparsity

    @property
    def module(self) -> BlockModule:
        """The block module, ready to run (a file-backed descendant is materialized on its device first)."""
        return self._module

    @module.setter
    def module(self, module: BlockModule) -> None:
        self._module = module

    def get_module(self, materialize: bool = True) -> BlockModule:
        """The block module; with ``materialize=False`` as it is now (a released one holds memory-mapped tensors)."""
        return self.module if materialize else self._module

    @property
    def file_backed(self) -> bool:
        """Whether its tensors can be re-read from a bank file (then :meth:`release` frees them)."""
        return False

    @property
    def materialized(self) -> bool:
        """Whether its tensors are real copies in memory (always, unless file-backed and released)."""
        return True

    def materialize(self, device: torch.device | str | None = None) -> BlockModule:
        """The module with its tensors on ``device`` (in memory: moved there; the teacher's own: unchanged)."""
        if device is not None and not self.teacher_owned:
            self._module.to(device)
        return self._module

    def release(self) -> bool:
        """Drops the materialized tensors if they can be re-read from the file; False if there is nothing to drop."""
        return False


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
