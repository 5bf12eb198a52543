"""Per-block wall time inside the model's forward, from hooks on each block's first and last member.

A block is a run of modules feeding each other whose ops run without another block's in between (block extraction
makes sure), so the time from its first member's forward pre-hook to its last member's forward hook is what the
block costs where it runs (inputs already in cache, the frame's
kernels around it, the allocator's state): unlike a standalone timing of the block on a random input. On CUDA the
hooks record events (no synchronization in the forward); their times are read when the next forward completes or
on :meth:`BlockTimer.flush`.

The switcher replaces a block's member modules, so hooks must follow: call :meth:`BlockTimer.attach` after every
switch (the :class:`mmlego.LegoDNN` wrapper does). Whoever runs the forwards should call
:meth:`BlockTimer.begin_forward` before each (the wrapper and the latency profiler do): a forward interrupted by an
exception leaves some blocks' spans behind, and without a known start the timer can only guess where the next forward
begins (its first block starting again), which fails when that block runs several times per forward.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from ..block_extraction import BlockSpec


@dataclass
class BlockTiming:
    """One forward's block times.

    Attributes:
        ms: Block name -> wall time in milliseconds (summed over its calls, for a block run several times).
        input_numel: Block name -> number of elements of the block's input in that forward (its first call).
    """

    ms: dict[str, float]
    input_numel: dict[str, int]


class BlockTimer:
    """Times every block of ``blocks`` in each forward of ``model`` that runs them all.

    Args:
        model: The live model.
        blocks: Its blocks, in execution order.

    Attributes:
        last: The timing of the last completed forward (None before the first).
        listeners: Called with every completed :class:`BlockTiming`.
    """

    def __init__(self, model: nn.Module, blocks: Sequence[BlockSpec]) -> None:
        if not blocks:
            raise ValueError('BlockTimer needs at least one block')
        self.model = model
        self.blocks = list(blocks)
        self.reference_numel = {spec.name: math.prod(spec.input_shape) for spec in self.blocks}
        self.last: BlockTiming | None = None
        self.listeners: list[Callable[[BlockTiming], None]] = []
        self._handles: dict[str, tuple] = {}  # block -> its two hook handles
        self._starts: dict[str, object] = {}
        self._numel: dict[str, int] = {}
        self._calls = {spec.name: spec.calls for spec in self.blocks}  # calls per forward (a repeated module: several)
        self._done: dict[str, list[tuple[object, object]]] = {}
        self._pending: list[tuple[dict[str, list[tuple[object, object]]], dict[str, int]]] = []
        self._cuda = False

    @property
    def attached(self) -> bool:
        """Whether the hooks are installed."""
        return bool(self._handles)

    def attach(self, blocks: Iterable[str] | None = None) -> 'BlockTimer':
        """(Re)installs the hooks on the blocks' current member modules.

        Args:
            blocks: Only re-hook these blocks (those a switch changed; the others keep their hooks). Default: all.
        """
        if blocks is None or not self._handles:
            self.detach()
            names = {spec.name for spec in self.blocks}
        else:
            names = set(blocks)
        try:
            self._cuda = next(self.model.parameters()).is_cuda
        except StopIteration:  # pragma: no cover - a model without parameters has no blocks
            self._cuda = False
        for spec in self.blocks:
            if spec.name not in names:
                continue
            for handle in self._handles.pop(spec.name, ()):
                handle.remove()
            first = self.model.get_submodule(spec.members[0])
            last = self.model.get_submodule(spec.members[-1])
            self._handles[spec.name] = (
                first.register_forward_pre_hook(lambda module, args, name=spec.name: self._start(name, args)),
                last.register_forward_hook(lambda module, args, output, name=spec.name: self._stop(name)))
        return self

    def detach(self) -> None:
        """Removes the hooks (pending CUDA timings are kept until :meth:`flush`)."""
        for handles in self._handles.values():
            for handle in handles:
                handle.remove()
        self._handles.clear()
        self.begin_forward()

    def begin_forward(self) -> None:
        """Marks the start of a forward: spans left by an incomplete one (an exception mid-way) are dropped."""
        self._starts.clear()
        self._done.clear()

    def _stamp(self) -> object:
        if self._cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def _start(self, name: str, args: tuple) -> None:
        # Without begin_forward: a new forward (not the next call of a repeated first block) forgets an incomplete one.
        calls_done = len(self._done.get(name, ()))
        if name == self.blocks[0].name and name not in self._starts and not 0 < calls_done < self._calls[name]:
            self.begin_forward()
        if name not in self._starts:  # a member called twice inside its block keeps the first start
            self._starts[name] = self._stamp()
            if name not in self._done:
                first = args[0] if args else None
                self._numel[name] = int(first.numel()) if isinstance(first, torch.Tensor) else 0

    def _stop(self, name: str) -> None:
        start = self._starts.pop(name, None)
        if start is None:
            return
        self._done.setdefault(name, []).append((start, self._stamp()))  # one span per call of the block
        last = self.blocks[-1].name
        if name != last or len(self._done[last]) != self._calls[last]:
            return
        if len(self._done) != len(self.blocks) or any(len(spans) != self._calls[key]
                                                      for key, spans in self._done.items()):
            self.begin_forward()  # the forward ended with spans of another mixed in: drop it, start clean
            return
        done, numel = dict(self._done), {key: self._numel.get(key, 0) for key in self._done}
        self.begin_forward()
        if self._cuda:
            self._pending.append((done, numel))
            self.flush(wait=False)
        else:
            self._emit({key: sum(end - begin for begin, end in spans) * 1000.0 for key, spans in done.items()},
                       numel)

    def flush(self, wait: bool = True) -> None:
        """Reads pending CUDA timings (``wait``: synchronize on them; else only those already finished)."""
        while self._pending:
            done, numel = self._pending[0]
            last_event = done[self.blocks[-1].name][-1][1]
            if not wait and not last_event.query():
                return
            last_event.synchronize()
            self._pending.pop(0)
            self._emit({key: sum(begin.elapsed_time(end) for begin, end in spans) for key, spans in done.items()},
                       numel)

    def _emit(self, ms: dict[str, float], numel: dict[str, int]) -> None:
        self.last = BlockTiming(ms=ms, input_numel=numel)
        for listener in self.listeners:
            listener(self.last)
