"""How a graph-level block's members are wired: the ops between them, recorded from the traced graph and replayed.

A module-aligned block runs as ``members[-1](...members[0](x))``. A fan-out block (:mod:`.fan_out`), e.g.
DeepLabv3's ASPP, has members that read one tensor side by side and parameter-free ops between them that the model's
own code runs (mmseg's ``ASPPHead`` resizes the image pool and concatenates the five branches before its
bottleneck). In the live model those ops stay the model's own; the standalone block (descendant generation,
retraining, timing) replays them from the traced graph as a list of steps, JSON-ready for a bank's manifest::

    {'input_shape': [1, 128, 16, 16], 'output': 'conv2d_28',
     'steps': [{'name': 'relu__19', 'member': 0, 'input': 'input'},
               {'name': 'upsample_bilinear2d', 'op': 'aten.upsample_bilinear2d.vec',
                'args': [{'ref': 'relu__19'}, [16, 16], False, None], 'kwargs': {}}, ...]}

Only ATen ops with scalar, list or tensor-reference arguments are recorded (no tensors of their own: a glue op that
reads a weight belongs to a member). Sizes are those of the trace; a list equal to the traced input's spatial size
follows the actual input's (``F.interpolate(..., size=x.shape[2:])``, the usual case), others stay as traced.
"""
from __future__ import annotations

import numbers
from typing import Any, Mapping, Sequence

import torch

INPUT = 'input'


class UnreplayableOp(ValueError):
    """A glue op whose arguments cannot be recorded (a tensor constant, a dtype, ...)."""


def _encode(value: Any, names: Mapping[Any, str]) -> Any:
    if isinstance(value, torch.fx.Node):
        if value not in names:
            raise UnreplayableOp(f'reads {value.name}, which is not computed inside the block')
        return {'ref': names[value]}
    if isinstance(value, (list, tuple)):
        return [_encode(item, names) for item in value]
    if value is None or isinstance(value, (bool, str)) or isinstance(value, numbers.Real):
        return value
    raise UnreplayableOp(f'takes a {type(value).__name__} argument ({value!r})')


def glue_step(node: torch.fx.Node, names: Mapping[Any, str]) -> dict[str, Any]:
    """The replayable record of one parameter-free op of the traced graph.

    Raises:
        UnreplayableOp: an argument is neither a tensor computed inside the block nor a plain constant.
    """
    try:
        return dict(name=node.name, op=str(node.target), args=_encode(list(node.args), names),
                    kwargs={key: _encode(value, names) for key, value in node.kwargs.items()})
    except UnreplayableOp as error:
        raise UnreplayableOp(f'{node.target} {error}') from None


def resolve_op(qualified: str) -> Any:
    """``'aten.cat.default'`` -> ``torch.ops.aten.cat.default``.

    Raises:
        ValueError: no such op in this torch.
    """
    parts = qualified.split('.')
    if len(parts) != 3:
        raise ValueError(f'a wiring op is namespace.op.overload, got {qualified!r}')
    try:
        namespace, packet, overload = parts
        return getattr(getattr(getattr(torch.ops, namespace), packet), overload)
    except (AttributeError, RuntimeError) as error:
        raise ValueError(f'the block wiring uses {qualified!r}, which this torch does not have; the bank was '
                         'made with another torch version, rebuild it') from error


def check_wiring(wiring: Mapping[str, Any], num_members: int) -> None:
    """Validates a wiring record (from a manifest): steps, member indices, references, ops.

    Raises:
        ValueError: what is malformed.
    """
    known = {INPUT}
    members = set()
    for step in wiring.get('steps', ()):
        if 'member' in step:
            index = step['member']
            if not isinstance(index, int) or not 0 <= index < num_members or index in members:
                raise ValueError(f'block wiring calls member {index!r} (the block has {num_members}, each once)')
            members.add(index)
            if step.get('input') not in known:
                raise ValueError(f'block wiring feeds member {index} {step.get("input")!r}, computed nowhere before')
        else:
            resolve_op(step['op'])
            missing = (_refs(step.get('args', [])) | _refs(step.get('kwargs', {}))) - known
            if missing:
                raise ValueError(f'block wiring op {step["op"]} reads {sorted(missing)}, computed nowhere before')
        known.add(step['name'])
    if len(members) != num_members or wiring.get('output') not in known:
        raise ValueError(f'block wiring must call each of its {num_members} members once and name its output')


def _refs(value: Any) -> set[str]:
    if isinstance(value, dict):
        return {value['ref']} if 'ref' in value else set().union(*map(_refs, value.values()))
    if isinstance(value, list):
        return set().union(*map(_refs, value)) if value else set()
    return set()


def _decode(value: Any, values: Mapping[str, Any], sizes: tuple[list[int], list[int]] | None) -> Any:
    if isinstance(value, dict):
        return values[value['ref']]
    if isinstance(value, list):
        if sizes is not None and value == sizes[0]:
            return list(sizes[1])
        return [_decode(item, values, sizes) for item in value]
    return value


def run_wiring(wiring: Mapping[str, Any], layers: Sequence[torch.nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Runs a fan-out block: each member on its recorded input, each glue op replayed."""
    traced = list(wiring['input_shape'][2:])
    actual = list(x.shape[2:])
    sizes = (traced, actual) if traced and traced != actual else None
    values: dict[str, Any] = {INPUT: x}
    for step in wiring['steps']:
        if 'member' in step:
            values[step['name']] = layers[step['member']](values[step['input']])
        else:
            kwargs = {key: _decode(value, values, sizes) for key, value in step['kwargs'].items()}
            values[step['name']] = resolve_op(step['op'])(*_decode(step['args'], values, sizes), **kwargs)
    return values[wiring['output']]
