"""Modules a path runs beyond its traceable part, traced one by one and merged into the part's graph.

A two-stage detector's ``mode='tensor'`` runs its RoI head on the proposals NMS selects: data-dependent code that
``torch.export`` cannot trace, so its path (:func:`mmlego.models.tensor_path.tensor_with_samples`) names a traceable
part, ``extract_feat``, and runs the rest eagerly. A module that eager run reaches beyond the part, called once on
one tensor and holding at least two convs (e.g. mmdet's box head, whose shared fcs hold 22% of the quarter-width
Faster R-CNN's bytes), is traced alone on the input it got there; its ops join the graph as one more region, so
block detection treats it like any other module and its blocks go into the live model by name as every block does.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from mmengine.logging import print_log
from torch import nn

from .graph import ForwardFn, ModelGraph, is_conv


def off_path_roots(graph: ModelGraph) -> list[str]:
    """Largest modules outside the traced part that the eager run called once with one tensor, holding >= 2 convs
    (none of their submodules ran in the traced part), in the model's module order."""
    model = graph.model
    traced = set(graph.module_nodes)
    roots: list[str] = []
    for name, module in model.named_modules():
        calls = graph.calls.get(id(module))
        if (not name or calls is None or calls.count != 1 or not calls.single_tensor_arg
                or calls.input_shape is None or any(name.startswith(root + '.') for root in roots)):
            continue
        subs = list(module.modules())
        if any(id(sub) in traced for sub in subs) or sum(map(is_conv, subs)) < 2:
            continue
        if any(id(sub) not in graph.calls for sub in subs if is_conv(sub)):
            continue  # a conv the run never reached: not this module's tensor path
        roots.append(name)
    return roots


def _first_inputs(model: nn.Module, names: Sequence[str], forward_fn: ForwardFn,
                  inputs: Sequence[Any]) -> dict[str, torch.Tensor]:
    """The tensor each named module got in one eager run of the path (cloned: later ops may work in place). A second
    run, after :func:`.graph.record_calls` found the roots: keeping every module's input there would hold a whole
    forward's activations."""
    captured: dict[str, torch.Tensor] = {}
    handles = [model.get_submodule(name).register_forward_pre_hook(
        lambda module, args, name=name: captured.setdefault(name, args[0].detach().clone())) for name in names]
    try:
        with torch.no_grad():
            forward_fn(model, *inputs)
    finally:
        for handle in handles:
            handle.remove()
    return captured


def merge_graph(graph: ModelGraph, other: ModelGraph) -> None:
    """Appends ``other`` (a trace of the same model, on other inputs) to ``graph``; nodes of two programs are
    distinct objects, module ids are the model's, so the dictionaries merge by union."""
    offset = len(graph.nodes)
    for node in other.nodes:
        graph.index[node] = offset + other.index[node]
        graph.nodes.append(node)
    for target, source in ((graph.inputs, other.inputs), (graph.users, other.users),
                           (graph.weight_users, other.weight_users), (graph.node_modules, other.node_modules),
                           (graph.conv_nodes, other.conv_nodes)):
        target.update(source)
    for module_id, nodes in other.module_nodes.items():
        graph.module_nodes.setdefault(module_id, set()).update(nodes)


def trace_off_path(graph: ModelGraph, forward_fn: ForwardFn, inputs: Sequence[Any]) -> list[str]:
    """Traces every off-path root alone (:func:`off_path_roots`) on the input the path gave it and merges it into
    ``graph``; the eager calls recorded over the whole path stay the graph's. Returns the roots traced; a root that
    does not trace is logged and left in the frame."""
    from .graph import trace_model
    model = graph.model
    roots = off_path_roots(graph)
    captured = _first_inputs(model, roots, forward_fn, inputs) if roots else {}
    traced = []
    for name in roots:
        try:
            sub = trace_model(model, (captured[name],), lambda m, x, name=name: m.get_submodule(name)(x))
        except (RuntimeError, KeyError) as error:
            print_log(f'{name} runs beyond the traced part of the path and does not trace alone ({error}); it stays '
                      'in the frame', logger='current')
            continue
        merge_graph(graph, sub)
        traced.append(name)
    if traced:
        print_log(f'traced beyond the path\'s traceable part: {", ".join(traced)}', logger='current')
    return traced
