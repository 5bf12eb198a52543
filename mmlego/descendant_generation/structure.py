"""A descendant's structure as data: what pruning changed, and rebuilding it without torch-pruning.

Pruning changes the shapes of some tensors and a few plain attributes of the modules holding them (a conv's
``in_channels``/``out_channels``/``groups``, a batch norm's ``num_features``, a group norm's ``num_channels``, a
linear layer's ``in_features``/``out_features``...). :func:`record_structure` records exactly those attributes per
module, by comparing every plain (JSON-representable) attribute of the pruned block with the teacher's, so it covers
whatever torch-pruning touched without a list of module types. Tensor shapes need no record: they are in the
safetensors header. :func:`build_block` rebuilds the descendant from the teacher's block: a structural copy whose
tensors are never copied (placeholders on the meta device), the recorded attributes, then the given tensors.
"""
from __future__ import annotations

import copy
import itertools
from typing import Any, Mapping

import torch
from torch import nn

from ..block_extraction import BlockSpec
from ..block_extraction.block_module import BlockModule

_PLAIN = (bool, int, float, str, type(None))
_MISSING = object()


def _plain(value: Any) -> Any:
    """``value`` in JSON form (tuples become lists); TypeError for anything that is not plain data."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    raise TypeError(type(value).__name__)


def plain_attributes(module: nn.Module) -> dict[str, Any]:
    """The module's own plain attributes (numbers, strings, None and sequences of them), in JSON form."""
    attributes = {}
    for key, value in vars(module).items():
        if key == 'training':
            continue
        try:
            attributes[key] = _plain(value)
        except TypeError:
            continue  # parameters, submodules, hooks...: not structure of this kind
    return attributes


def record_structure(teacher: BlockModule, pruned: BlockModule) -> dict[str, dict[str, Any]]:
    """Model module name -> the plain attributes whose value in ``pruned`` differs from ``teacher``'s (JSON form).

    Args:
        teacher: The teacher's block (or an unpruned copy of it).
        pruned: The same block after pruning.
    """
    teacher_modules = dict(teacher.named_modules())
    structure: dict[str, dict[str, Any]] = {}
    for local, module in pruned.named_modules():
        if not local.startswith('layers.') or local not in teacher_modules:
            continue
        before = plain_attributes(teacher_modules[local])
        changed = {key: value for key, value in plain_attributes(module).items()
                   if before.get(key, _MISSING) != value}
        if changed:
            structure[pruned.model_name(local)] = changed
    return structure


def _like(template: Any, value: Any) -> Any:
    """``value`` (JSON form) with the tuples of ``template`` (the attribute it replaces) restored."""
    if isinstance(value, list) and isinstance(template, tuple):
        inner = template if len(template) == len(value) else (None,) * len(value)
        return tuple(_like(t, v) for t, v in zip(inner, value))
    return value


def apply_structure(block: BlockModule, structure: Mapping[str, Mapping[str, Any]]) -> BlockModule:
    """Sets the recorded attributes on ``block``'s modules (in place; returns it).

    Raises:
        ValueError: A recorded module does not exist in the block.
    """
    for name, attributes in structure.items():
        try:
            module = block.module_by_model_name(name)
        except (KeyError, AttributeError, IndexError, ValueError) as error:
            raise ValueError(f'the stored structure names {name}, which the block does not have') from error
        for key, value in attributes.items():
            setattr(module, key, _like(getattr(module, key, None), value))
    return block


def structure_copy(model: nn.Module, spec: BlockSpec) -> BlockModule:
    """A copy of the teacher's block whose parameters and buffers are placeholders on the meta device.

    Nothing of the teacher's tensors is copied; ties (one tensor in two places) are kept.
    """
    modules = [model.get_submodule(member) for member in spec.members]
    memo: dict[int, Any] = {}
    for tensor in itertools.chain.from_iterable(itertools.chain(m.parameters(), m.buffers()) for m in modules):
        if id(tensor) not in memo:
            meta = torch.empty_like(tensor, device='meta')
            memo[id(tensor)] = (nn.Parameter(meta, requires_grad=tensor.requires_grad)
                                if isinstance(tensor, nn.Parameter) else meta)
    return BlockModule(spec.members, copy.deepcopy(modules, memo), spec.wiring)


def tensor_names(module: nn.Module) -> list[str]:
    """Names of every parameter and buffer, persistent or not, every place a tied tensor appears."""
    return [f'{prefix}.{key}' if prefix else key
            for prefix, sub in module.named_modules(remove_duplicate=False)
            for key, value in itertools.chain(sub._parameters.items(), sub._buffers.items()) if value is not None]


def module_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """Name -> tensor of every parameter and buffer (see :func:`tensor_names`): what a bank file stores."""
    tensors = {}
    for prefix, sub in module.named_modules(remove_duplicate=False):
        for key, value in itertools.chain(sub._parameters.items(), sub._buffers.items()):
            if value is not None:
                tensors[f'{prefix}.{key}' if prefix else key] = value.detach()
    return tensors


def assign_tensors(module: nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
    """Makes ``tensors`` (name -> tensor, as :func:`module_tensors`) the module's parameters and buffers.

    The tensors are used as given (no copy): parameters become new ``nn.Parameter`` objects wrapping them (keeping
    ``requires_grad``), so a placeholder on the meta device can be replaced by a real tensor. A tensor tied into
    several places gets the tensor of its first name everywhere.
    """
    replaced: dict[int, Any] = {}
    for prefix, sub in module.named_modules(remove_duplicate=False):
        for store, is_param in ((sub._parameters, True), (sub._buffers, False)):
            for key, value in list(store.items()):
                if value is None:
                    continue
                if id(value) not in replaced:
                    tensor = tensors[f'{prefix}.{key}' if prefix else key]
                    replaced[id(value)] = (nn.Parameter(tensor, requires_grad=value.requires_grad)
                                           if is_param else tensor)
                store[key] = replaced[id(value)]


def _check_shapes(block: BlockModule, spec: BlockSpec, tensors: Mapping[str, torch.Tensor]) -> None:
    """Runs the block on the meta device with tensors of the given shapes; ValueError if it does not fit."""
    assign_tensors(block, {name: torch.empty_like(t, device='meta') for name, t in tensors.items()})
    dtype = next((t.dtype for t in tensors.values() if t.is_floating_point()), torch.float32)
    try:
        with torch.no_grad():
            output = block(torch.empty(spec.input_shape, dtype=dtype, device='meta'))
    except NotImplementedError:
        return  # an op without a meta kernel: the check is skipped, the tensors still had to match by name
    except RuntimeError as error:
        if 'meta' in str(error).lower():
            return
        raise ValueError(f'its structure does not fit its tensors: {str(error).splitlines()[0]}') from error
    if isinstance(output, torch.Tensor) and list(output.shape) != list(spec.output_shape):
        raise ValueError(f'it outputs {list(output.shape)}, the block {list(spec.output_shape)}')


def build_block(model: nn.Module, spec: BlockSpec, structure: Mapping[str, Mapping[str, Any]],
                tensors: Mapping[str, torch.Tensor]) -> BlockModule:
    """A descendant rebuilt from the teacher's block, its recorded structure and its tensors (used, not copied).

    Args:
        model: The teacher.
        spec: The block.
        structure: What :func:`record_structure` recorded for the descendant.
        tensors: Name -> tensor for every parameter and buffer of the descendant (block-local names).

    Returns:
        The descendant, in eval mode, holding ``tensors``.

    Raises:
        ValueError: The structure does not fit the teacher, or the tensors do not fit the structure.
    """
    block = apply_structure(structure_copy(model, spec), structure).eval()
    expected, given = set(tensor_names(block)), set(tensors)
    if expected != given:
        missing, unexpected = sorted(expected - given), sorted(given - expected)
        raise ValueError(f'its tensors do not match its structure (missing {missing[:4]}, unexpected '
                         f'{unexpected[:4]})')
    _check_shapes(block, spec, tensors)
    assign_tensors(block, tensors)
    _check_declared_sizes(block)
    return block


def _check_declared_sizes(block: nn.Module) -> None:
    """ValueError if a layer's recorded sizes (channels, features) differ from the tensors it now holds."""
    for name, layer in block.named_modules():
        sizes = []
        if isinstance(layer, nn.modules.conv._ConvNd):
            first, second = layer.weight.shape[0], layer.weight.shape[1] * layer.groups
            if layer.transposed:  # a transposed conv's weight is (in, out / groups, ...)
                first, second = second, first
            sizes = [('out_channels', layer.out_channels, first), ('in_channels', layer.in_channels, second)]
        elif isinstance(layer, nn.modules.batchnorm._NormBase):
            held = layer.running_mean if layer.running_mean is not None else layer.weight
            sizes = [('num_features', layer.num_features, held.shape[0] if held is not None else layer.num_features)]
        elif isinstance(layer, nn.Linear):
            sizes = [('out_features', layer.out_features, layer.weight.shape[0]),
                     ('in_features', layer.in_features, layer.weight.shape[1])]
        wrong = [f'{name}.{attr}={declared} but its tensors hold {held}' for attr, declared, held in sizes
                 if declared != held]
        if wrong:
            raise ValueError(f'its structure does not fit its tensors ({"; ".join(wrong)})')
