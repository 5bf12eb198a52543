"""What a descendant is, without the code that makes one: its pruning plan and its module (no torch-pruning here,
so a runtime that only loads banks never imports it)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from ..block_extraction import BlockSpec
from ..block_extraction.block_module import BlockModule

DEFAULT_SPARSITIES = (0.0, 0.2, 0.4, 0.6, 0.8)


@dataclass
class PruningPlan:
    """Kept channels per layer of one descendant, in the teacher's numbering.

    Attributes:
        sparsity: Fraction of filters removed from every prunable conv.
        channels: Model module name -> ``{'out': kept, 'in': kept}`` (only the pruned dimensions), with
            ``'out_total'``/``'in_total'`` the teacher's sizes.
        unpruned_reason: Why nothing was pruned although ``sparsity > 0`` (None otherwise).
        structure: Model module name -> the plain attributes pruning changed (``out_channels``, ``num_features``...,
            see :func:`mmlego.descendant_generation.structure.record_structure`): with the tensor shapes of a bank
            file, what rebuilds the descendant from the teacher's block without torch-pruning.
    """

    sparsity: float
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)
    unpruned_reason: str | None = None
    structure: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dict(sparsity=self.sparsity, channels=self.channels, unpruned_reason=self.unpruned_reason,
                    structure=self.structure)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> 'PruningPlan':
        """Inverse of :meth:`to_dict`."""
        return cls(sparsity=float(data['sparsity']), channels=dict(data.get('channels') or {}),
                   unpruned_reason=data.get('unpruned_reason'), structure=dict(data.get('structure') or {}))


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
