"""Automatic LegoDNN block detection.

A block is a contiguous piece of the traced graph with one input and one output tensor, holding between 2 and
``max(2, floor(max_ratio * #convs))`` convolutions, with every skip connection closed inside it, every module it
uses used only inside it, and at least one prunable conv once the output convs are protected (walking back from
the block output through non-conv ops, the first conv on every path keeps its filters, so the output shape is
kept; so does a conv whose output is joined channel-wise with the block input, e.g. by a residual add).
One exception to "used only inside": a stateless module (no parameters, buffers or children, e.g. the ``relu`` that
mmdet's and mmpose's ``BasicBlock`` apply both inside the residual branch and after the add) may be an inner member
of a run while it also runs outside: only its call on the run's chain belongs to the block, and the copy a
descendant puts back computes the same function for the calls outside. Without it a downsampling BasicBlock (three
convs) could not yield its two-conv residual branch, and a 20-conv ResNet-18 kept half its convs in the frame.
Design choice: blocks are aligned to the module tree: one module, a run of modules that feed each other (standalone
``members[-1](...members[0](x))``) or, third pass, modules side by side; a block goes back into the live model by
module name, which keeps the model's own ``forward`` (post-processing included).
The search is greedy and prefers large blocks, like LegoDNN's: a module that qualifies as a whole is taken;
otherwise its children are scanned in execution order, taking the longest qualifying run at each position and
descending into a child where none starts. Then the convs left in the frame get a second pass (:mod:`.chains`):
modules at any depth that hold convs and are called once on one tensor, linked where one's output is all the next
one reads (and read by nothing else), form chains across the module tree, cut into blocks the same way; e.g.
YOLOv3's per-level bridge conv and prediction conv, which a head keeps in two ``ModuleList``s and calls in a loop
over the levels. A module the model calls several times on tensors of one shape may be a block too
(:mod:`.repeated`). A third pass (:mod:`.fan_out`) closes pieces no run of modules closes, branches read side by
side and joined by the model's own ops (DeepLabv3's ASPP): their standalone module replays those ops
(:mod:`.wiring`), the live model keeps its own.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from mmengine.logging import print_log
from torch import nn

from .chains import ChainPass
from .fan_out import FanOutPass
from .protection import ConvProtection
from .repeated import RepeatedModules
from .graph import ForwardFn, ModelGraph, is_conv, trace_model



@dataclass
class BlockSpec:
    """One detected block.

    Attributes:
        name: Block name: its module name, or ``first+...+last`` for a run of modules.
        members: Qualified names of the member modules, in execution order.
        convs: Names of all convs inside the block (linear layers count as convs: :func:`.graph.is_conv`).
        prunable_convs: Convs whose filters may be pruned (``convs`` minus the protected output convs).
        input_shape: Shape of the block input in the example forward.
        output_shape: Shape of the block output in the example forward.
        num_params: Parameters of the block.
        calls: How often the model runs the block per forward (a module applied to several inputs, e.g. a head's
            MLP to several relations: one descendant serves every call, shapes are those of one call).
        wiring: For a fan-out block (:mod:`.fan_out`), how its members and the model's ops between them connect
            (:mod:`.wiring`); None for a run of modules feeding each other.
    """

    name: str
    members: list[str]
    convs: list[str]
    prunable_convs: list[str]
    input_shape: list[int]
    output_shape: list[int]
    num_params: int
    calls: int = 1
    wiring: dict[str, Any] | None = None

    @property
    def protected_convs(self) -> list[str]:
        """Output convs, kept whole so the block's output shape is preserved."""
        return [name for name in self.convs if name not in self.prunable_convs]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> 'BlockSpec':
        """Inverse of :meth:`to_dict`."""
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})  # manifests before `calls`


@dataclass
class BlockExtraction:
    """Result of :func:`extract_blocks`.

    Attributes:
        blocks: Detected blocks, in execution order.
        num_convs_total: Convs in the traced path.
        max_convs_per_block: ``max(2, floor(max_ratio * num_convs_total))``.
        max_ratio: The ratio used.
        skipped: Module name -> why no block starts there (modules holding convs only).
    """

    blocks: list[BlockSpec]
    num_convs_total: int
    max_convs_per_block: int
    max_ratio: float
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def num_convs_covered(self) -> int:
        """Convs inside some block."""
        return sum(len(block.convs) for block in self.blocks)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``blocks``, ``num_convs_total``, ``num_convs_covered``, ...)."""
        return dict(blocks=[block.to_dict() for block in self.blocks], num_convs_total=self.num_convs_total,
                    num_convs_covered=self.num_convs_covered, max_convs_per_block=self.max_convs_per_block,
                    max_ratio=self.max_ratio, skipped=self.skipped)


class _Detector(ConvProtection, ChainPass, FanOutPass, RepeatedModules):
    """Greedy block search over the module tree of one traced graph."""

    def __init__(self, graph: ModelGraph, max_convs: int) -> None:
        self.graph = graph
        self.max_convs = max_convs
        self.model = graph.model
        self.blocks: list[BlockSpec] = []
        self.skipped: dict[str, str] = {}
        self._taken: set[str] = set()  # members of the blocks taken so far

    # -- helpers ---------------------------------------------------------------------------------------------
    def _module(self, name: str) -> nn.Module:
        return self.model.get_submodule(name)

    def _region(self, name: str) -> set:
        return self.graph.module_nodes.get(id(self._module(name)), set())

    def _boundary(self, nodes: set) -> tuple[set, set]:
        inputs = {arg for node in nodes for arg in self.graph.inputs[node] if arg not in nodes}
        outputs = {node for node in nodes if any(user not in nodes for user in self.graph.users[node])}
        return inputs, outputs

    def _feeds(self, previous: set, region: set) -> bool:
        """Whether ``previous`` has one output tensor, all that ``region`` reads, read by nothing outside it."""
        links = self._boundary(previous)[1]
        if len(links) != 1:
            return False
        (link,) = links
        return self._boundary(region)[0] == {link} and self.graph.users[link] <= region

    def _executed_children(self, name: str) -> list[str]:
        module = self._module(name)
        children = []
        for child_name, child in module.named_children():
            # A module whose forward is called directly (``head.forward(x)``) has no nodes of its own: its
            # submodules' nodes place it. It cannot be a block itself (its calls are not seen), only searched.
            region = set().union(*(self.graph.module_nodes.get(id(sub), set()) for sub in child.modules()))
            if region:
                first = min(self.graph.index[node] for node in region)
                children.append((first, f'{name}.{child_name}' if name else child_name))
        return [child for _, child in sorted(children)]

    def _stateless(self, name: str) -> bool:
        module = self._module(name)
        return not (next(module.parameters(), None) is not None or next(module.buffers(), None) is not None
                    or next(module.children(), None) is not None)

    def _shared_inner(self, members: Sequence[str], index: int) -> bool:
        """Whether member ``index`` is a stateless inner member called more than once (one call on the chain)."""
        calls = self.graph.calls.get(id(self._module(members[index])))
        return (0 < index < len(members) - 1 and calls is not None and calls.count > 1 and calls.single_tensor_arg
                and self._stateless(members[index]))

    def _member_regions(self, members: Sequence[str]) -> tuple[list[set], set[str]]:
        """The nodes of each member in the run, and its shared stateless inner members, each of which contributes
        only the call that reads the previous member's output (and the nodes of that call reached from it)."""
        regions: list[set] = []
        shared: set[str] = set()
        for index, member in enumerate(members):
            region = self._region(member)
            if self._shared_inner(members, index):
                shared.add(member)
                links = self._boundary(regions[-1])[1]
                call: set = set()
                stack = [user for link in links for user in self.graph.users[link] if user in region]
                while stack:
                    node = stack.pop()
                    if node not in call:
                        call.add(node)
                        stack.extend(user for user in self.graph.users[node] if user in region)
                region = call
            regions.append(region)
        return regions, shared

    def _weights_shared(self, nodes: set) -> bool:
        """Whether a weight that ``nodes`` read is also read outside them."""
        return any(users & nodes and not users <= nodes for users in self.graph.weight_users.values())

    def _convs(self, members: Sequence[str]) -> list[str]:
        convs = []
        for member in members:
            for sub_name, sub in self._module(member).named_modules():
                if is_conv(sub) and self.graph.module_nodes.get(id(sub)):
                    convs.append(f'{member}.{sub_name}' if sub_name else member)
        return convs

    # -- the rules -------------------------------------------------------------------------------------------
    def check(self, members: Sequence[str]) -> str | None:
        """Returns why ``members`` is not a block, or None if it is one."""
        if self._taken & set(members):
            return 'a member already belongs to another block'
        convs = self._convs(members)
        if len(convs) < 2:
            return f'{len(convs)} conv(s), a block needs at least 2'
        if len(convs) > self.max_convs:
            return f'{len(convs)} convs, more than max(2, floor(max_ratio x #convs)) = {self.max_convs}'
        calls = self.graph.calls.get(id(self._module(members[0])))
        if len(members) == 1 and calls is not None and calls.count > 1:
            return self._check_repeated(members[0], calls, convs)
        regions, shared = self._member_regions(members)
        nodes = set().union(*regions)
        for member in members:
            calls = self.graph.calls.get(id(self._module(member)))
            if member not in shared and (calls is None or calls.count != 1 or not calls.single_tensor_arg):
                return f'{member} is not called exactly once with one tensor argument'
            if member in shared and not regions[members.index(member)]:
                return f'{member} (stateless, called {calls.count} times) has no call on the chain'
        inputs, outputs = self._boundary(nodes)
        if len(inputs) != 1 or len(outputs) != 1:
            return f'{len(inputs)} input and {len(outputs)} output tensors, a block needs one of each'
        if not all(self._feeds(previous, region) for previous, region in zip(regions, regions[1:])):
            return 'the modules do not feed each other in a chain'
        # Every module and weight used inside is used only inside (a module called twice stays in one block).
        for member in members:
            for sub in self._module(member).modules():
                if member not in shared and not self.graph.module_nodes.get(id(sub), set()) <= nodes:
                    return f'a submodule of {member} also runs outside it'
        if self._weights_shared(nodes):
            return 'a weight inside is shared with code outside'
        protected = self._protected_convs(nodes, next(iter(inputs)), next(iter(outputs)))
        if len(protected) == len(convs):
            return 'no prunable conv once the output convs are protected'
        return None

    def _take(self, members: list[str]) -> None:
        self._taken.update(members)
        first = self.graph.calls[id(self._module(members[0]))]
        last = self.graph.calls[id(self._module(members[-1]))]
        if len(members) == 1 and first.count > 1:  # a repeated module (see _check_repeated)
            nodes, source, output = self._calls_extent(self._call_pieces(members[0]))
        else:
            nodes = set().union(*self._member_regions(members)[0])
            (source,), (output,) = self._boundary(nodes)
        protected = self._protected_convs(nodes, source, output)
        convs = self._convs(members)
        params = sum(p.numel() for member in members for p in self._module(member).parameters())
        self.blocks.append(BlockSpec(
            name='+'.join(members), members=list(members), convs=convs,
            prunable_convs=[conv for conv in convs if conv not in protected],
            input_shape=list(first.input_shape or ()), output_shape=list(last.output_shape or ()),
            num_params=params, calls=first.count if len(members) == 1 else 1))

    # -- the greedy search -----------------------------------------------------------------------------------
    def visit(self, name: str) -> None:
        """Takes ``name`` as a block, or searches its children."""
        reason = self.check([name]) if name else 'the whole model is not a block'
        if reason is None:
            self._take([name])
            return
        children = self._executed_children(name)
        if not children:
            if self._convs([name]):
                self.skipped[name] = reason
            return
        if self._convs([name]) and name:
            self.skipped[name] = reason
        i = 0
        while i < len(children):
            taken = False
            for j in range(len(children), i + 1, -1):  # longest run of >= 2 siblings first
                if self.check(children[i:j]) is None:
                    self._take(children[i:j])
                    i, taken = j, True
                    break
            if not taken:
                self.visit(children[i])
                i += 1


def extract_blocks(model: nn.Module,
                   example_inputs: Sequence[Any],
                   max_ratio: float = 0.125,
                   forward_fn: ForwardFn | None = None,
                   graph: ModelGraph | None = None) -> BlockExtraction:
    """Finds LegoDNN blocks in ``model``'s tensor path.

    Args:
        model: The (teacher) model. Put in eval mode while tracing; its mode is restored afterwards.
        example_inputs: Inputs of one forward (a small batch is enough).
        max_ratio: A block holds at most ``max(2, floor(max_ratio * #convs))`` convs.
        forward_fn: The tensor path, ``model(*inputs)`` by default (see :func:`trace_model`).
        graph: An already traced graph of the same model (skips tracing).

    Returns:
        The blocks and conv coverage.

    Raises:
        ValueError: ``max_ratio`` is not a number in (0, 1].
        RuntimeError: The tensor path cannot be traced.
    """
    if isinstance(max_ratio, bool) or not isinstance(max_ratio, numbers.Real) or not 0 < max_ratio <= 1:
        raise ValueError(f'max_ratio must be a number in (0, 1] (the largest block as a share of the traced convs), '
                         f'got {max_ratio!r}; LegoDNN uses 0.125.')
    was_training = model.training
    model.eval()
    try:
        graph = graph or trace_model(model, example_inputs, forward_fn)
    finally:
        model.train(was_training)
    total = len(graph.conv_modules())
    max_convs = max(2, math.floor(max_ratio * total))
    detector = _Detector(graph, max_convs)
    detector.visit('')
    detector.chain_leftovers()
    detector.fan_out_leftovers()
    blocks = sorted(detector.blocks, key=lambda block: min(
        graph.index[node] for node in detector._region(block.members[0])))
    print_log(f'found {len(blocks)} blocks covering {sum(len(block.convs) for block in blocks)} of {total} convs',
              logger='current')
    return BlockExtraction(blocks=blocks, num_convs_total=total, max_convs_per_block=max_convs,
                           max_ratio=max_ratio, skipped=detector.skipped)
