"""Block detection's second pass: chains across the module tree.

After the greedy module-aligned search (:mod:`.detection`), modules left in the frame that hold convs and are called
once on one tensor, returning one, are linked where one's output is all the next one reads (and nothing else reads
it), and the chains are cut into blocks with the first pass's rules, e.g. YOLOv3's per-level bridge conv and
prediction conv, which mmdet's head keeps in two ``ModuleList``s and calls in a loop over the levels. A run whose
ops interleave with another unit's or block's is refused: a block's time, from its first member's start to its
last member's end (:class:`mmlego.latency_estimation.BlockTimer`), must hold no other block's.
"""
from __future__ import annotations

from typing import Sequence


class ChainPass:
    """The second pass, mixed into the detector (which provides ``check``, ``_take``, ``_region``, ``_feeds``,
    ``_convs``, ``_member_regions`` and its ``graph``, ``model``, ``blocks``, ``skipped``, ``max_convs``)."""

    def _chain_units(self) -> list[str]:
        """Modules outside every block, holding 1..max convs, called once on one tensor and returning one: the
        largest such module on each path of the module tree (one that overlaps a block's member is none; one with
        more convs than a block holds gives way to its submodules)."""
        taken = tuple(self._taken)
        units: list[str] = []
        for name, module in self.model.named_modules():
            calls = self.graph.calls.get(id(module))
            if (not name or calls is None or calls.count != 1 or not calls.single_tensor_arg
                    or calls.output_shape is None or not 0 < len(self._convs([name])) <= self.max_convs
                    or any(name == t or name.startswith(t + '.') or t.startswith(name + '.') for t in taken)
                    or any(name.startswith(unit + '.') for unit in units)):
                continue
            units.append(name)
        return units

    def _successor(self, unit: str, units: Sequence[str], regions: dict) -> list[str]:
        """What follows ``unit`` in a chain: ``[next]``, the unit it feeds, or ``[stateless, next]`` where one call
        of a stateless module that also runs elsewhere sits between them (mmdet's box head applies its one ``relu``
        after each of its fcs; the block holds that call, as the sibling scan's shared inner members); ``[]``."""
        for other in units:
            if other != unit and self._feeds(regions[unit], regions[other]):
                return [other]
        links = self._boundary(regions[unit])[1]
        if len(links) != 1:
            return []
        (link,) = links
        readers = self.graph.users[link]
        owners = {self.graph.node_modules[node][-1] for node in readers
                  if node != '<output>' and self.graph.node_modules.get(node)}
        if '<output>' in readers or len(owners) != 1:
            return []
        between = self.graph.module_names[next(iter(owners))]
        if not self._shared_inner([unit, between, unit], 1):
            return []
        call = self._member_regions([unit, between, unit])[0][1]  # its call that reads the link
        return next(([between, other] for other in units
                     if other != unit and self._feeds(call, regions[other])), [])

    def _interleaved(self, members: Sequence[str], owners: dict) -> bool:
        """Whether another unit's or block's op runs between the run's first and last op (a block's time, from its
        first member's start to its last member's end, must hold no other block's)."""
        nodes = set().union(*self._member_regions(members)[0])
        first, last = (f(self.graph.index[node] for node in nodes) for f in (min, max))
        return any(owners.get(node) not in (None, *members) for node in self.graph.nodes[first:last + 1])

    def _cut(self, chain: list[str], owners: dict) -> None:
        """Takes the longest qualifying run at each position of ``chain``, as the sibling scan does."""
        i = 0
        while i < len(chain) - 1:
            j = next((j for j in range(len(chain), i + 1, -1)
                      if not self._interleaved(chain[i:j], owners) and self.check(chain[i:j]) is None), None)
            if j is None:
                i += 1
            else:
                self._take(chain[i:j])
                i = j

    def chain_leftovers(self) -> None:
        """Cuts the chains of units (:meth:`_chain_units`) into blocks."""
        units = self._chain_units()
        regions = {unit: self._region(unit) for unit in units}
        owners = {node: member for block in self.blocks for member in block.members for node in self._region(member)}
        owners.update({node: unit for unit, region in regions.items() for node in region})
        following = {unit: self._successor(unit, units, regions) for unit in units}
        followed = {steps[-1] for steps in following.values() if steps}
        for start in (unit for unit in units if unit not in followed):
            chain = [start]
            while following[chain[-1]] and following[chain[-1]][-1] not in chain:
                chain.extend(following[chain[-1]])
            self._cut(chain, owners)
        for name in list(self.skipped):  # the first pass's reasons inside modules that are members now
            if any(name == member or name.startswith(member + '.') for member in self._taken):
                del self.skipped[name]
