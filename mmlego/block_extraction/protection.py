"""Which convs of a block keep their filters: those that fix the block's output shape or share channels with its
input or output (mixed into the block detector)."""
from __future__ import annotations

from typing import Any

from torch import nn


class ConvProtection:
    """Mixed into the detector (which provides ``graph`` and ``_module``)."""

    def _output_convs(self, nodes: set, output: Any) -> set[str]:
        """First conv on every path back from the block output (LegoDNN keeps these whole)."""
        protected, stack, seen = set(), [output], set()
        while stack:
            node = stack.pop()
            if node in seen or node not in nodes:
                continue
            seen.add(node)
            if node in self.graph.conv_nodes:
                protected.add(self.graph.module_names[self.graph.conv_nodes[node]])
                continue
            stack.extend(self.graph.inputs[node])
        return protected

    def _protected_convs(self, nodes: set, source: Any, output: Any) -> set[str]:
        """LegoDNN's output convs plus every conv whose filters are tied to the block's input or output channels.

        Walking back from the output misses a conv whose output joins the block *input* channel-wise, e.g. the last
        conv of a residual branch whose identity skip is the block input when the block goes on past the add
        (``x + conv(x)`` then another conv): its filters cannot shrink either. Tensors are grouped by channel space
        (a non-conv op ties its inputs to its output, a depthwise conv passes channels through); a conv is protected
        when its output shares a group with the block input or output. The calls of a conv used twice share groups.
        A channel concatenation is the exception: its inputs take separate channel ranges, so it ties them only when
        its own output is tied (PSPNet's pyramid concatenates its block input with the branches: the input's
        channels stay whole, the branches' convs may shrink; concatenated into the block output, none may).
        """
        parent: dict[Any, Any] = {}

        def find(node: Any) -> Any:
            root = parent.setdefault(node, node)
            while root != parent[root]:
                root = parent[root]
            parent[node] = root
            return root

        calls: dict[int, list[Any]] = {}  # a conv called twice ties its inputs' and its outputs' channels
        concats = [node for node in nodes if _channel_concat(node)]
        for node in nodes:
            if node in concats:
                continue
            conv_id = self.graph.conv_nodes.get(node)
            if conv_id is not None:
                calls.setdefault(conv_id, []).append(node)
                if not self._passes_channels(conv_id):
                    continue
            for arg in self.graph.inputs[node]:
                parent[find(arg)] = find(node)
        for conv_nodes in calls.values():
            for first, other in zip(conv_nodes, conv_nodes[1:]):
                parent[find(other)] = find(first)
                for a, b in zip(self.graph.inputs[first][:1], self.graph.inputs[other][:1]):
                    parent[find(b)] = find(a)
        tied = {find(source), find(output)}
        while any(find(node) in tied and find(arg) not in tied for node in concats for arg in self.graph.inputs[node]):
            for node in concats:
                if find(node) in tied:
                    for arg in self.graph.inputs[node]:
                        parent[find(arg)] = find(node)
            tied = {find(source), find(output)}
        protected = self._output_convs(nodes, output)
        for node in nodes:
            if node in self.graph.conv_nodes and find(node) in tied:
                protected.add(self.graph.module_names[self.graph.conv_nodes[node]])
        return protected

    def _passes_channels(self, conv_id: int) -> bool:
        conv = self._module(self.graph.module_names[conv_id])
        return (isinstance(conv, nn.modules.conv._ConvNd)  # a linear layer never passes its channels through
                and conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels)


def _channel_concat(node: Any) -> bool:
    """Whether ``node`` concatenates tensors along their channel dimension (1)."""
    if not str(getattr(node, 'target', '')).startswith('aten.cat'):
        return False
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get('dim', 0)
    value = node.meta.get('val')
    rank = value.dim() if hasattr(value, 'dim') else None
    return rank is not None and rank >= 2 and dim % rank == 1
