"""The simple alternative to LegoDNN: prune the whole model uniformly (L1, torch-pruning) and fine-tune it end to end.

``prune_uniformly`` removes the same share of output channels from every prunable layer (torch-pruning's
``MetaPruner`` with L1 filter importance; channels coupled by residual adds are pruned together), except the
layers whose channels reach the model's outputs (class scores, box regressions, heatmaps, keypoint coordinates;
found by trying, see :func:`output_layer_names`), so the pruned model keeps the teacher's output shapes. ``prune_to_bytes`` searches the
sparsity that fits a parameter budget.
"""
from __future__ import annotations

import copy
from typing import Any, Callable

import torch
import torch_pruning as tp
from torch import nn

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)


def parameter_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers (what a configuration's weight bytes count)."""
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


def _shapes(outputs: Any) -> list[tuple[int, ...]]:
    return [tuple(t.shape) for t in torch.utils._pytree.tree_leaves(outputs) if isinstance(t, torch.Tensor)]


def output_layer_names(model: nn.Module, inputs: torch.Tensor,
                       forward_fn: Callable[[nn.Module, Any], Any]) -> set[str]:
    """Layers whose output channels reach the model's outputs (or that the traced path never runs).

    Found by trying: on a copy, one channel of each layer's pruning group is removed and the forward repeated; a
    group that changes the shape of an output, or breaks the forward (a head reshaping channels), holds output layers (a class or box conv, a keypoint linear, or the
    last residual stage when the path ends at the backbone's features).
    """
    def fresh():
        probe = copy.deepcopy(model).eval()
        graph = tp.DependencyGraph().build_dependency(probe, example_inputs=inputs, forward_fn=forward_fn)
        with torch.no_grad():
            return probe, graph, _shapes(forward_fn(probe, inputs))

    probe, graph, shapes = fresh()
    outputs: set[str] = set()
    for name in [n for n, m in model.named_modules() if isinstance(m, _LAYERS)]:
        module = probe.get_submodule(name)
        handler = tp.prune_linear_out_channels if isinstance(module, nn.Linear) else tp.prune_conv_out_channels
        channels = module.out_features if isinstance(module, nn.Linear) else module.out_channels
        if module not in graph.module2node or channels <= 1:
            outputs.add(name)
            continue
        names = {m: n for n, m in probe.named_modules()}
        group = graph.get_pruning_group(module, handler, idxs=[0])
        layers = [names[dep.target.module] for dep, _ in group
                  if graph.is_out_channel_pruning_fn(dep.handler) and dep.target.module in names]
        group.prune()
        try:
            with torch.no_grad():
                new = _shapes(forward_fn(probe, inputs))
        except RuntimeError:  # e.g. a head reshaping its channels into keypoints: an output, and a broken probe
            outputs.update(layers)
            probe, graph, shapes = fresh()
            continue
        if new != shapes:
            outputs.update(layers)
            shapes = new
    return outputs


def prune_uniformly(model: nn.Module, inputs: torch.Tensor, forward_fn: Callable[[nn.Module, Any], Any],
                    sparsity: float, outputs: set[str] | None = None) -> nn.Module:
    """Prunes ``sparsity`` of the output channels of every prunable layer of ``model`` in place; returns it.

    ``outputs`` (from :func:`output_layer_names`, computed if not given) are left whole.
    """
    model.eval()
    if sparsity <= 0:
        return model
    outputs = output_layer_names(model, inputs, forward_fn) if outputs is None else outputs
    drop_training_only_heads(model, inputs, forward_fn)
    pruner = tp.pruner.MetaPruner(
        model, inputs, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=sparsity,
        ignored_layers=[m for name, m in model.named_modules() if name in outputs], forward_fn=forward_fn)
    pruner.step()
    return model


def drop_training_only_heads(model: nn.Module, inputs: torch.Tensor, forward_fn: Callable[[nn.Module, Any], Any]) -> list[str]:
    """Removes the model's auxiliary children that the inference path never runs and that the model declares optional.

    Such a child (mmseg's ``auxiliary_head``: ``model.with_auxiliary_head``) only adds a loss in training; it reads
    features the pruning changes, which the traced path cannot see, so it is dropped from the pruned model (which then
    fine-tunes on the main task loss; the deployed model never had it). Returns the names dropped.
    """
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=inputs, forward_fn=forward_fn)
    dropped = []
    for name, child in list(model.named_children()):
        layers = [m for m in child.modules() if isinstance(m, _LAYERS)]
        if (name.startswith('auxiliary') and layers and not any(m in graph.module2node for m in layers)
                and hasattr(model, f'with_{name}')):
            setattr(model, name, None)
            dropped.append(name)
    return dropped


def prune_to_bytes(teacher: nn.Module, inputs: torch.Tensor, forward_fn: Callable[[nn.Module, Any], Any],
                   budget_bytes: float, steps: int = 7) -> tuple[nn.Module, float]:
    """The least pruned uniform copy of ``teacher`` within ``budget_bytes`` (bisection on the sparsity).

    Returns:
        The pruned copy and its sparsity. Raises ``ValueError`` if even sparsity 0.95 does not fit.
    """
    if parameter_bytes(teacher) <= budget_bytes:
        return copy.deepcopy(teacher), 0.0
    low, high = 0.0, 0.95
    outputs = output_layer_names(teacher, inputs, forward_fn)
    best = prune_uniformly(copy.deepcopy(teacher), inputs, forward_fn, high, outputs)
    if parameter_bytes(best) > budget_bytes:
        raise ValueError(f'uniform pruning at {high} still takes {parameter_bytes(best)} bytes > {budget_bytes:.0f}')
    best_sparsity = high
    for _ in range(steps):
        middle = (low + high) / 2
        pruned = prune_uniformly(copy.deepcopy(teacher), inputs, forward_fn, middle, outputs)
        if parameter_bytes(pruned) <= budget_bytes:
            best, best_sparsity, high = pruned, middle, middle
        else:
            low = middle
    return best, best_sparsity
