"""Descendant blocks: L1 filter pruning with channel dependencies, recorded as a replayable plan.

torch-pruning's dependency graph finds every layer whose channels are tied to a pruned conv's filters (batch norms,
the next convs' input channels, depthwise convs, concat branches) and removes them physically. The plan it
executes is recorded as the kept channel indices per layer and dimension, in the teacher's numbering, so a
descendant's structure can be replayed on the teacher (:func:`apply_plan`). The attributes pruning changed are
recorded too (``PruningPlan.structure``): a bank rebuilds its descendants from them and its tensor file alone,
without running torch-pruning (:mod:`mmlego.descendant_generation.structure`); nothing has to be pickled.
"""
from __future__ import annotations

import copy
import logging


import torch
import torch_pruning as tp
from mmengine.logging import print_log
from torch import nn

from ..block_extraction import BlockSpec, is_conv
from ..block_extraction.block_module import BlockModule
from .descendant import PruningPlan

_DIMS = {'prune_out_channels': 'out', 'prune_in_channels': 'in'}


class _FilterL1(tp.importance.MagnitudeImportance):
    """L1 norm of the filters of the first conv in a group whose output channels are pruned (LegoDNN's criterion;
    a linear layer's rows are its filters, scored by torch-pruning's own L1).

    torch-pruning's ``MagnitudeImportance(group_reduction='first')`` takes the first layer it scores, and it does not
    score a depthwise conv's output channels: a group rooted at a depthwise conv was ranked by the batch norm after
    it. Groups without such a conv fall back to torch-pruning's behaviour.
    """

    _OUT = (tp.pruner.function.prune_conv_out_channels, tp.pruner.function.prune_depthwise_conv_out_channels)

    def __init__(self) -> None:
        super().__init__(p=1, group_reduction='first', normalizer=None)

    @torch.no_grad()
    def __call__(self, group):
        for i, (dep, idxs) in enumerate(group):
            layer, root_idxs = dep.layer, group[i].root_idxs
            if (isinstance(layer, nn.modules.conv._ConvNd) and dep.pruning_fn in self._OUT
                    and not any(r is None for r in root_idxs)):
                weight = layer.weight.data.transpose(0, 1) if layer.transposed else layer.weight.data
                local = weight[idxs].flatten(1).abs().sum(1).float()
                return torch.zeros_like(local).scatter_(0, torch.tensor(root_idxs, device=local.device), local)
        return super().__call__(group)


def _pruning_function(module: nn.Module, dim: str):
    pruner = tp.pruner.function.PrunerBox.get(tp.ops.module2type(module))
    if pruner is None:
        raise ValueError(f'torch-pruning has no pruning function for {type(module).__name__}')
    return pruner.prune_out_channels if dim == 'out' else pruner.prune_in_channels


def _channel_count(module: nn.Module, dim: str) -> int:
    pruner = tp.pruner.function.PrunerBox[tp.ops.module2type(module)]
    count = pruner.get_out_channels(module) if dim == 'out' else pruner.get_in_channels(module)
    if count is None:
        raise ValueError(f'cannot read the {dim} channels of {type(module).__name__}')
    return int(count)


class _EntryChannels(nn.Module):
    """The block behind a batch norm that gives its input a node of known channels in torch-pruning's graph.

    torch-pruning traces through autograd, so a block input that no op inside produced has no node: where it joins a
    channel concatenation (PSPNet's pyramid puts its input first), the concat's channel offsets cannot be inferred and
    the branches' channels were removed at the wrong positions. The norm is never a pruning root (only convs are) and
    never touched by a group that prunes the block's own convs (the block input's channels are kept); it is not part
    of the block: only its place in the graph matters here, not its output.
    """

    # By input rank; rank 3 is left alone: (N, C, L) for a Conv1d, but (N, L, C) for a Linear over tokens.
    _NORMS = {2: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}

    def __init__(self, block: BlockModule, input_shape) -> None:
        super().__init__()
        self.block = block
        norm = self._NORMS.get(len(input_shape))
        self.entry = norm(input_shape[1]).to(next(block.parameters()).device).eval() if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.entry(x))


def prune_block(block: BlockModule, spec: BlockSpec, sparsity: float) -> PruningPlan:
    """Prunes ``block`` in place at ``sparsity`` and returns the plan that was executed.

    Every prunable conv of ``spec`` loses ``sparsity`` of its filters, those with the smallest L1 norm; the
    protected output convs keep theirs, so the block's output shape is unchanged. If torch-pruning cannot prune
    the block (an op it does not support) or the pruned block no longer runs with the block's input and output
    shapes, the block is restored whole and the plan says why.

    Args:
        block: A copy of the teacher's block (modified in place).
        spec: The block's spec (shapes, prunable convs).
        sparsity: In [0, 1).

    Returns:
        The executed plan.
    """
    if not 0 <= sparsity < 1:
        raise ValueError(f'sparsity must be in [0, 1), got {sparsity}')
    plan = PruningPlan(sparsity=sparsity)
    if sparsity == 0:
        return plan
    names = {id(module): block.model_name(name) for name, module in block.named_modules()
             if name.startswith('layers.')}
    prunable = {block.module_by_model_name(name) for name in spec.prunable_convs}
    ignored = [module for module in block.modules() if is_conv(module) and module not in prunable]
    example = torch.randn(*spec.input_shape, device=next(block.parameters()).device)
    kept: dict[tuple[str, str], list[int]] = {}
    snapshot, was_training = copy.deepcopy(block.layers), block.training
    block.eval()  # tracing and the check below must not update batch-norm statistics
    try:
        pruner = tp.pruner.BasePruner(_EntryChannels(block, spec.input_shape), example, importance=_FilterL1(),
                                      pruning_ratio=sparsity,
                                      ignored_layers=ignored, global_pruning=False,
                                      root_module_types=[nn.modules.conv._ConvNd, nn.Linear])
        for group in pruner.step(interactive=True):
            for dep, idxs in group:
                module = dep.target.module
                dim = _DIMS.get(getattr(dep.handler, '__name__', ''))
                if dim is None or id(module) not in names or not isinstance(module, nn.Module):
                    continue
                key = (names[id(module)], dim)
                if key not in kept:
                    kept[key] = list(range(_channel_count(module, dim)))
                removed = set(int(i) for i in idxs)
                kept[key] = [c for position, c in enumerate(kept[key]) if position not in removed]
            group.prune()
        with torch.no_grad():
            output = block(example)
        if list(output.shape) != list(spec.output_shape):
            raise RuntimeError(f'the pruned block outputs {list(output.shape)}, not {list(spec.output_shape)}')
    except Exception as error:  # torch-pruning raises assorted errors on unsupported ops
        block.layers = snapshot  # undo the groups pruned before the failure
        reason = f'torch-pruning failed: {type(error).__name__}: {error}'
        print_log(f'block {spec.name} left unpruned at sparsity {sparsity}: {reason}', logger='current',
                  level=logging.WARNING)
        return PruningPlan(sparsity=sparsity, unpruned_reason=reason)
    finally:
        block.train(was_training)
    for (name, dim), channels in kept.items():
        entry = plan.channels.setdefault(name, {})
        entry[dim] = channels
    if not plan.channels:
        plan.unpruned_reason = 'no channel of the prunable convs could be removed at this sparsity'
    return plan


def plan_totals(block: BlockModule, plan: PruningPlan) -> None:
    """Adds the teacher's channel counts (``out_total``/``in_total``) to ``plan``; call on the unpruned block."""
    for name, entry in plan.channels.items():
        module = block.module_by_model_name(name)
        for dim in ('out', 'in'):
            if dim in entry:
                entry[f'{dim}_total'] = _channel_count(module, dim)


def apply_plan(block: BlockModule, plan: PruningPlan) -> BlockModule:
    """Rebuilds a descendant's structure from a copy of the teacher's block (in place; returns it).

    The weights that remain are the teacher's kept channels; load retrained tensors afterwards.

    Raises:
        ValueError: The plan does not fit the block (another teacher, or a corrupted manifest).
    """
    for name, entry in plan.channels.items():
        try:
            module = block.module_by_model_name(name)
        except (KeyError, AttributeError, IndexError) as error:
            raise ValueError(f'pruning plan names {name}, which the block does not have') from error
        for dim in ('out', 'in'):
            if dim not in entry:
                continue
            total = _channel_count(module, dim)
            if entry.get(f'{dim}_total', total) != total:
                raise ValueError(f'pruning plan expects {entry[f"{dim}_total"]} {dim} channels in {name}, the '
                                 f'block has {total}: the plan belongs to another teacher')
            keep = set(entry[dim])
            if not keep <= set(range(total)):
                raise ValueError(f'pruning plan keeps channel indices outside {name}\'s {total} {dim} channels')
            removed = [c for c in range(total) if c not in keep]
            if removed:
                _pruning_function(module, dim)(module, removed)
    return block
