"""Blocks of a module the model calls several times per forward.

A head may apply one module to several inputs, each call on its own: mmaction's TRN applies the MLP of each scale to
several sampled relations (its relation MLPs hold 30% of the synthetic TRN's bytes). Such a module is a block when
every call takes one tensor and returns one, all calls of the same shapes, each call's ops form a piece of their
own with one input and one output, and nothing else uses its weights. One descendant then serves every call; it is
retrained on all the calls' inputs at once (:class:`mmlego.block_retraining.FeatureCapture` concatenates them along
the batch dimension), timed over all its calls (:class:`mmlego.latency_estimation.BlockTimer`), and its FLOPs are
counted per call times ``BlockSpec.calls``. Only a whole module qualifies, never a run of modules.
"""
from __future__ import annotations

from typing import Any, Sequence

from .graph import ModuleCalls


class RepeatedModules:
    """Mixed into the detector (which provides ``_region``, ``_boundary``, ``_protected_convs``, ``_weights_shared``
    and its ``graph``)."""

    def _call_pieces(self, name: str) -> list[set]:
        """The nodes of a module's region split into connected pieces (one per call when its calls are separate)."""
        region, pieces, seen = self._region(name), [], set()
        for start in sorted(region, key=self.graph.index.__getitem__):
            if start in seen:
                continue
            piece, stack = set(), [start]
            while stack:
                node = stack.pop()
                if node in piece:
                    continue
                piece.add(node)
                neighbours = [*self.graph.inputs[node], *self.graph.users[node]]
                stack.extend(other for other in neighbours if other in region and other not in piece)
            seen |= piece
            pieces.append(piece)
        return pieces

    def _calls_extent(self, pieces: Sequence[set]) -> tuple[set, Any, Any]:
        """All the calls' nodes, and the first call's input and output (the calls of a conv tie their channels, so
        one call's ends place the protected convs of all)."""
        (source,), (output,) = self._boundary(pieces[0])
        return set().union(*pieces), source, output

    def _check_repeated(self, name: str, calls: ModuleCalls, convs: Sequence[str]) -> str | None:
        """Whether a module the model calls several times is a block: each call takes one tensor and returns one,
        all of the same shapes, each call's ops are a piece of their own with one input and one output, and the
        module's weights are used by nothing else. One descendant then serves every call (e.g. TRN's relation MLP of
        one scale, applied to several sampled relations) and retrains on all the calls' inputs at once."""
        if not calls.single_tensor_arg or not calls.same_shapes or calls.output_shape is None:
            return f'{name} is called {calls.count} times, not each with one tensor of the same shape'
        pieces = self._call_pieces(name)
        if len(pieces) != calls.count:
            return f'{name} is called {calls.count} times but its ops form {len(pieces)} separate pieces'
        for piece in pieces:
            inputs, outputs = self._boundary(piece)
            if len(inputs) != 1 or len(outputs) != 1:
                return (f'a call of {name} has {len(inputs)} input and {len(outputs)} output tensors, a block '
                        'needs one of each')
        nodes, source, output = self._calls_extent(pieces)
        if self._weights_shared(nodes):
            return 'a weight inside is shared with code outside'
        if len(self._protected_convs(nodes, source, output)) == len(convs):
            return 'no prunable conv once the output convs are protected'
        return None
