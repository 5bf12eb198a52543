"""Block detection's third pass: fan-out blocks, graph-level pieces that no run of modules closes.

DeepLabv3's ASPP reads the backbone's output with five branches side by side (an image pool and four dilated
convs), and mmseg's ``ASPPHead`` resizes the pool's output and concatenates the five in its own code before its
bottleneck: no module is that piece and no run of modules feeding each other is, so the two earlier passes leave
its branches in the frame (13.7% of the quarter-width teacher's bytes). This pass starts at a tensor that two or
more frame ops read, walks the graph forward through the ops that depend on it, one after another in execution
order, and takes the largest closed piece (one input, one output) that is a block by the usual rules: 2..max
convs, a prunable conv once the output convs are protected, weights used only inside. Its members are the largest
modules inside it called once on one tensor; the parameter-free ops between them (resize, concat) stay the model's
own in the live model and are replayed from the graph standalone (:mod:`.wiring`). A module-aligned block the
piece runs through whole (the bottleneck and classifier, a run of the first pass) is absorbed into it: without
them the concatenation would be the block's output, and its branches, all output convs, could not be pruned.
"""
from __future__ import annotations

from typing import Any

from .wiring import INPUT, UnreplayableOp, glue_step


class FanOutPass:
    """The third pass, mixed into the detector (which provides ``_region``, ``_boundary``, ``_convs``,
    ``_protected_convs``, ``_weights_shared`` and its ``graph``, ``model``, ``blocks``, ``skipped``, ``max_convs``,
    ``_taken``)."""

    def _member_of(self, node: Any, region: set) -> str | None:
        """The outermost module on ``node``'s stack whose ops all lie in ``region``, called once on one tensor and
        returning one, and in no block; None for a glue op."""
        for module_id in self.graph.node_modules.get(node, ()):
            name = self.graph.module_names[module_id]
            calls = self.graph.calls.get(module_id)
            if (name and calls is not None and calls.count == 1 and calls.single_tensor_arg
                    and calls.output_shape is not None and self._region(name) <= region
                    and not any(name == t or name.startswith(t + '.') for t in self._taken)):
                return name
        return None

    def _fan_out_block(self, region: set, source: Any, output: Any, absorbed: list) -> tuple | None:
        """``(members, wiring, prunable convs)`` if the closed piece ``region`` is a block, else None."""
        if any(not set().union(*(self._region(m) for m in block.members)) <= region for block in absorbed):
            return None
        taken = {member for block in absorbed for member in block.members}
        self._taken -= taken  # an absorbed block's members are members of this one
        try:
            owner = {node: self._member_of(node, region) for node in region}
        finally:
            self._taken |= taken
        order = sorted(region, key=self.graph.index.__getitem__)
        members = list(dict.fromkeys(owner[node] for node in order if owner[node]))
        if len(members) < 2 or owner[output] != members[-1]:
            return None
        names = {source: INPUT}
        steps = []
        for node in order:
            member = owner[node]
            if member is None:
                if any(arg in self.graph.weight_users for arg in node.all_input_nodes):
                    return None
                try:
                    steps.append(glue_step(node, names))
                except UnreplayableOp:
                    return None
                names[node] = node.name
            elif node is min(self._region(member), key=self.graph.index.__getitem__):
                inputs, outputs = self._boundary(self._region(member))
                if len(inputs) != 1 or len(outputs) != 1 or next(iter(inputs)) not in names:
                    return None
                (out,) = outputs
                names[out] = out.name
                steps.append(dict(name=out.name, member=members.index(member), input=names[next(iter(inputs))]))
        if steps[0].get('member') != 0 or steps[0]['input'] != INPUT:
            return None  # capture and timing hook the first member's input: it must be the block's
        convs = self._convs(members)
        if not 2 <= len(convs) <= self.max_convs:
            return None
        if self._weights_shared(region):
            return None
        protected = self._protected_convs(region, source, output)
        if len(protected) == len(convs):
            return None
        input_shape = self.graph.calls[id(self._module(members[0]))].input_shape
        wiring = dict(input_shape=list(input_shape), output=names[output], steps=steps)
        return members, wiring, [conv for conv in convs if conv not in protected]

    def _walk(self, source: Any) -> tuple | None:
        """The largest fan-out block starting at ``source``: ``(members, wiring, prunable convs, absorbed blocks,
        last index)``."""
        owners = {node: block for block in self.blocks for m in block.members for node in self._region(m)}
        region: set = set()
        best = None
        for node in self.graph.nodes[self.graph.index[source] + 1:]:
            reads = self.graph.inputs[node]
            if not reads or any(arg is not source and arg not in region for arg in reads):
                break  # the piece's ops run one after another and read only the piece
            block = owners.get(node)
            if block is not None and (block.wiring is not None or block.calls != 1):
                break  # absorbs only runs of modules
            region.add(node)
            if len(self._convs_in(region)) > self.max_convs:
                break
            if self._boundary(region)[1] == {node}:
                absorbed = list({id(b): b for n in region if (b := owners.get(n)) is not None}.values())
                found = self._fan_out_block(region, source, node, absorbed)
                if found is not None:
                    best = (*found, absorbed, self.graph.index[node])
        return best

    def _convs_in(self, region: set) -> set:
        return {self.graph.conv_nodes[node] for node in region if node in self.graph.conv_nodes}

    def fan_out_leftovers(self) -> None:
        """Takes the fan-out blocks (:meth:`_walk`) from the tensors that two or more frame ops read."""
        from .detection import BlockSpec
        inside = {node for block in self.blocks for m in block.members for node in self._region(m)}
        position = 0
        for source in list(self.graph.nodes):
            index = self.graph.index[source]
            readers = [user for user in self.graph.users[source] if user != '<output>']
            if index < position or len(readers) < 2 or any(user in inside for user in readers):
                continue
            found = self._walk(source)
            if found is None:
                continue
            members, wiring, prunable, absorbed, position = found
            for block in absorbed:
                self.blocks.remove(block)
                self._taken -= set(block.members)
            self._taken.update(members)
            inside |= set(self.graph.nodes[index + 1:position + 1])  # the walk's contiguous piece
            self.blocks.append(BlockSpec(
                name='+'.join(members), members=members, convs=self._convs(members), prunable_convs=prunable,
                input_shape=wiring['input_shape'],
                output_shape=list(self.graph.calls[id(self._module(members[-1]))].output_shape),
                num_params=sum(p.numel() for m in members for p in self._module(m).parameters()), wiring=wiring))
        for name in list(self.skipped):
            if any(name == member or name.startswith(member + '.') for member in self._taken):
                del self.skipped[name]
