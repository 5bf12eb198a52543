"""The model's tensor path as a graph of ops, each op mapped back to the modules that ran it.

``torch.export.export(..., strict=False)`` traces OpenMMLab necks, heads and backbones that ``torch.fx`` cannot
(control flow on Python values, ``len``, iterating over lists of tensors), and every node carries
``nn_module_stack``: the module path that produced it. Block detection only needs that data flow plus the
module attribution, so the exported program is never executed.

An eager forward with hooks records, for every module, how it was called (count, one tensor argument or not) and
the shapes it saw: a block must be runnable standalone as ``member(x)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

ForwardFn = Callable[..., Any]
_WRAPPED = 'lego_traced_model'


class _TracedCall(nn.Module):
    """Wraps ``forward_fn(model, *inputs)`` so that ``torch.export`` sees a plain ``nn.Module``."""

    def __init__(self, model: nn.Module, forward_fn: ForwardFn) -> None:
        super().__init__()
        setattr(self, _WRAPPED, model)
        self._forward_fn = forward_fn

    def forward(self, *inputs: Any) -> Any:
        return self._forward_fn(getattr(self, _WRAPPED), *inputs)


def default_forward(model: nn.Module, *inputs: Any) -> Any:
    """Calls ``model(*inputs)``."""
    return model(*inputs)


@dataclass
class ModuleCalls:
    """How one module was called during the eager forward."""

    count: int = 0
    single_tensor_arg: bool = True
    input_shape: tuple[int, ...] | None = None
    output_shape: tuple[int, ...] | None = None
    same_shapes: bool = True  # every call saw the first call's input and output shapes


@dataclass
class ModelGraph:
    """Data flow of the traced tensor path with module attribution.

    Attributes:
        model: The traced model.
        nodes: Compute nodes in topological order (``call_function`` nodes of the exported graph).
        index: Node -> position in ``nodes``.
        inputs: Node -> the data nodes it reads (parameters, buffers and constants excluded).
        users: Node -> compute nodes reading it, plus ``'<output>'`` when it is a graph output.
        weight_users: Parameter/buffer placeholder -> compute nodes reading it (shared weights).
        node_modules: Node -> ids of the modules on its module stack (outermost first).
        module_nodes: Module id -> the nodes it ran (all calls).
        module_names: Module id -> qualified name in ``model``.
        conv_nodes: Node -> the conv module (id) that this convolution op belongs to.
        calls: Module id -> how the module was called in the eager forward.
    """

    model: nn.Module
    nodes: list[Any] = field(default_factory=list)
    index: dict[Any, int] = field(default_factory=dict)
    inputs: dict[Any, list[Any]] = field(default_factory=dict)
    users: dict[Any, set] = field(default_factory=dict)
    weight_users: dict[Any, set] = field(default_factory=dict)
    node_modules: dict[Any, list[int]] = field(default_factory=dict)
    module_nodes: dict[int, set] = field(default_factory=dict)
    module_names: dict[int, str] = field(default_factory=dict)
    conv_nodes: dict[Any, int] = field(default_factory=dict)
    calls: dict[int, ModuleCalls] = field(default_factory=dict)

    def conv_modules(self) -> list[int]:
        """Ids of the conv modules that run in the traced path, in execution order."""
        seen: dict[int, None] = {}
        for node in self.nodes:
            if node in self.conv_nodes:
                seen.setdefault(self.conv_nodes[node], None)
        return list(seen)


def is_conv(module: nn.Module) -> bool:
    """Whether LegoDNN counts ``module`` as a convolution: Conv1d/2d/3d, transposed, and ``nn.Linear`` (a 1x1
    convolution over a vector: heads' MLPs, e.g. TRN's relation MLPs, hold a large share of some models' bytes)."""
    return isinstance(module, (nn.modules.conv._ConvNd, nn.Linear))


def _shape(value: Any) -> tuple[int, ...] | None:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def record_calls(model: nn.Module, forward_fn: ForwardFn, inputs: Sequence[Any]) -> dict[int, ModuleCalls]:
    """Runs one eager forward and records how every submodule was called.

    Raises:
        RuntimeError: The forward failed (the message names its error).
    """
    calls: dict[int, ModuleCalls] = {}
    handles = []

    def pre_hook(module, args, kwargs):
        info = calls.setdefault(id(module), ModuleCalls())
        info.count += 1
        single = len(args) == 1 and isinstance(args[0], torch.Tensor) and not any(
            isinstance(v, torch.Tensor) or v is not None and not isinstance(v, (bool, int, float, str))
            for v in kwargs.values())
        info.single_tensor_arg = info.single_tensor_arg and single and not kwargs
        shape = _shape(args[0]) if args else None
        if info.count == 1:
            info.input_shape = shape
        info.same_shapes = info.same_shapes and shape == info.input_shape

    def post_hook(module, args, output):
        info = calls[id(module)]
        shape = _shape(output)
        if info.count == 1:
            info.output_shape = shape
        info.same_shapes = info.same_shapes and shape == info.output_shape

    for module in model.modules():
        handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        handles.append(module.register_forward_hook(post_hook))
    try:
        with torch.no_grad():
            forward_fn(model, *inputs)
    except Exception as error:  # the eager run of a path; one clear error type for the callers that try paths
        raise RuntimeError(f'the eager forward of the path failed ({type(error).__name__}: '
                           f'{str(error).splitlines()[0] if str(error) else ""})') from error
    finally:
        for handle in handles:
            handle.remove()
    return calls


def trace_model(model: nn.Module,
                example_inputs: Sequence[Any],
                forward_fn: ForwardFn | None = None) -> ModelGraph:
    """Traces ``forward_fn(model, *example_inputs)`` and attributes every op to its modules.

    Args:
        model: The model, in eval mode (batch norm must not update statistics while tracing).
        example_inputs: Positional inputs of ``forward_fn`` after the model.
        forward_fn: The tensor path to trace; ``model(*inputs)`` by default. For OpenMMLab models e.g.
            ``lambda m, x: m(x, mode='tensor')`` or ``lambda m, x: m.extract_feat(x)``. A path that runs code
            ``torch.export`` cannot trace names its traceable part as ``forward_fn.traced_part``: that part is
            exported, the whole path runs eagerly, and the modules it reaches beyond the part are traced one by one
            (:mod:`.off_path`).

    Returns:
        The graph.

    Raises:
        RuntimeError: ``torch.export`` could not trace the path (the message names the tracer's error).
    """
    forward_fn = forward_fn or default_forward
    traced_fn = getattr(forward_fn, 'traced_part', forward_fn)
    inputs = tuple(example_inputs)
    try:
        program = torch.export.export(_TracedCall(model, traced_fn), inputs, strict=False)
    except Exception as error:  # torch.export raises many types; re-raise one clear error
        raise RuntimeError(
            f'torch.export could not trace the model\'s tensor path ({type(error).__name__}: '
            f'{str(error).splitlines()[0] if str(error) else ""}). Pass a forward_fn that runs only tensor '
            'code (e.g. the backbone and neck: `lambda m, x: m.extract_feat(x)`).') from error

    module_names: dict[int, str] = {}
    for name, module in model.named_modules():
        module_names.setdefault(id(module), name)

    signature = program.graph_signature
    user_inputs = set(signature.user_inputs)
    graph = ModelGraph(model=model, module_names=module_names)
    weight_nodes = set()
    for node in program.graph.nodes:
        if node.op == 'placeholder' and node.name not in user_inputs:
            weight_nodes.add(node)
            graph.weight_users[node] = set()
        elif node.op == 'get_attr':
            weight_nodes.add(node)
            graph.weight_users[node] = set()

    prefix = _WRAPPED + '.'
    for node in program.graph.nodes:
        if node.op != 'call_function':
            continue
        graph.index[node] = len(graph.nodes)
        graph.nodes.append(node)
        graph.users[node] = set()
        data_inputs = []
        for arg in node.all_input_nodes:
            if arg in weight_nodes:
                graph.weight_users[arg].add(node)
            else:
                data_inputs.append(arg)
        graph.inputs[node] = data_inputs
        modules = []
        for path, _type in (node.meta.get('nn_module_stack') or {}).values():
            if not path.startswith(prefix):
                continue
            try:
                module = model.get_submodule(path[len(prefix):])
            except AttributeError:
                continue
            modules.append(id(module))
            graph.module_nodes.setdefault(id(module), set()).add(node)
        graph.node_modules[node] = modules
        target = str(node.target)
        if (modules and ('conv' in target or 'linear' in target)
                and is_conv(model.get_submodule(module_names[modules[-1]]))):
            graph.conv_nodes[node] = modules[-1]

    for node in graph.nodes:
        for arg in graph.inputs[node]:
            if arg in graph.users:
                graph.users[arg].add(node)
    for node in program.graph.nodes:
        if node.op == 'output':
            for arg in node.all_input_nodes:
                if arg in graph.users:
                    graph.users[arg].add('<output>')
    graph.calls = record_calls(model, forward_fn, inputs)
    if traced_fn is not forward_fn:
        from .off_path import trace_off_path
        trace_off_path(graph, forward_fn, inputs)
    return graph
