"""A block as a standalone module, and putting blocks back into the live model by name."""
from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .detection import BlockSpec
from .wiring import check_wiring, run_wiring


class BlockModule(nn.Module):
    """The members of one block run in sequence, ``layers[-1](...layers[0](x))``, or as ``wiring`` connects them.

    Module names inside are ``layers.{i}.<rest>`` for member ``i``; :meth:`model_name` and :meth:`local_name`
    translate to and from the model's own names (``backbone.layer1.0.conv1``).

    Args:
        members: Member names in the model, in execution order.
        modules: The member modules (used as given, not copied).
        wiring: A fan-out block's wiring (:mod:`.wiring`); None runs the members in sequence.

    Raises:
        ValueError: the wiring is malformed or uses an op this torch lacks.
    """

    def __init__(self, members: Sequence[str], modules: Sequence[nn.Module],
                 wiring: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if len(members) != len(modules) or not members:
            raise ValueError('BlockModule needs one module per member name (at least one).')
        if wiring is not None:
            check_wiring(wiring, len(members))
        self.members = list(members)
        self.layers = nn.ModuleList(modules)
        self.wiring = wiring

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.wiring is not None:
            return run_wiring(self.wiring, self.layers, x)
        for layer in self.layers:
            x = layer(x)
        return x

    def model_name(self, local: str) -> str:
        """``layers.0.conv1`` -> ``backbone.layer1.0.conv1``."""
        parts = local.split('.')
        member = self.members[int(parts[1])]
        rest = '.'.join(parts[2:])
        return f'{member}.{rest}' if rest else member

    def local_name(self, model_name: str) -> str:
        """Inverse of :meth:`model_name`."""
        for i, member in enumerate(self.members):
            if model_name == member:
                return f'layers.{i}'
            if model_name.startswith(member + '.'):
                return f'layers.{i}.{model_name[len(member) + 1:]}'
        raise KeyError(f'{model_name} is not inside block members {self.members}')

    def module_by_model_name(self, model_name: str) -> nn.Module:
        """The submodule that the model calls ``model_name``."""
        return self.get_submodule(self.local_name(model_name))


def block_module_of(model: nn.Module, spec: BlockSpec, copy_modules: bool = True) -> BlockModule:
    """The block's members from ``model`` as a :class:`BlockModule` (deep copies unless told otherwise)."""
    modules = [model.get_submodule(member) for member in spec.members]
    if copy_modules:
        modules = [copy.deepcopy(module) for module in modules]
    return BlockModule(spec.members, modules, spec.wiring)


def set_member(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replaces the submodule ``name`` of ``model`` (works for Sequential/ModuleList indices too)."""
    parent_name, _, attr = name.rpartition('.')
    parent = model.get_submodule(parent_name) if parent_name else model
    if attr not in parent._modules:
        raise KeyError(f'{name} is not a submodule of the model')
    parent._modules[attr] = module


def put_block(model: nn.Module, block: BlockModule) -> None:
    """Puts every member of ``block`` into ``model`` by name (the block's modules are used, not copied)."""
    for name, module in zip(block.members, block.layers):
        set_member(model, name, module)
