"""Swap blocks of a live model in place, from the in-memory bank.

Only blocks whose sparsity changes are touched; the member modules of the chosen descendant are set into the model
by name, so the model keeps its own forward and post-processing. Switching is guarded by a readers-writer lock:
every forward of the model's root holds a read lock (forward pre-hook / always-called forward hook), a switch holds
the write lock, so a concurrent forward sees the model entirely before or entirely after a switch.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Mapping

from torch import nn

from ..block_bank import BlockBank
from ..block_extraction.block_module import put_block


class ReadWriteLock:
    """Many readers or one writer; re-entrant for readers of one thread, writers wait for readers to leave.

    Writers have priority: a new reader waits while a writer waits, so readers that keep overlapping cannot
    starve a writer (a thread that already reads may read again without waiting).
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._readers: dict[int, int] = {}
        self._writer = False
        self._writers_waiting = 0

    def acquire_read(self) -> None:
        """Blocks while a writer holds or waits for the lock (unless this thread already reads)."""
        me = threading.get_ident()
        with self._condition:
            if not self._readers.get(me):
                self._condition.wait_for(lambda: not self._writer and not self._writers_waiting)
            self._readers[me] = self._readers.get(me, 0) + 1

    def release_read(self) -> None:
        """Releases one read."""
        me = threading.get_ident()
        with self._condition:
            self._readers[me] -= 1
            if not self._readers[me]:
                del self._readers[me]
            self._condition.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        """Exclusive access (waits for running readers; readers arriving meanwhile wait for it)."""
        with self._condition:
            if self._readers.get(threading.get_ident()):
                raise RuntimeError('cannot switch blocks from inside a forward of the same model (deadlock); '
                                   'switch between forwards')
            self._writers_waiting += 1
            try:
                self._condition.wait_for(lambda: not self._writer and not self._readers)
            finally:
                self._writers_waiting -= 1
                self._condition.notify_all()
            self._writer = True
        try:
            yield
        finally:
            with self._condition:
                self._writer = False
                self._condition.notify_all()

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        """Shared access."""
        self.acquire_read()
        try:
            yield
        finally:
            self.release_read()


class BlockSwitcher:
    """Applies selections (block -> sparsity) to ``model`` using the descendants held by ``bank``.

    The bank's modules are moved to the model's device once, at construction; a switch reads nothing from disk.
    The sparsity-0.0 descendants are exact copies of the teacher's blocks, so switching everything back to 0.0
    reproduces the teacher's outputs exactly.

    Args:
        model: The live model (the teacher the bank was built from).
        bank: Its bank.
        guard_forward: Hold a read lock during every forward of ``model`` (needed when another thread switches).
    """

    def __init__(self, model: nn.Module, bank: BlockBank, guard_forward: bool = True) -> None:
        self.model = model
        self.bank = bank
        try:
            device = next(model.parameters()).device
        except StopIteration:  # pragma: no cover - a model without parameters has no blocks
            device = 'cpu'
        bank.to(device)
        self.lock = ReadWriteLock()
        self._selection = {spec.name: 0.0 for spec in bank.blocks}
        self._handles = []
        if guard_forward:
            self._handles.append(model.register_forward_pre_hook(lambda module, args: self.lock.acquire_read()))
            self._handles.append(model.register_forward_hook(
                lambda module, args, output: self.lock.release_read(), always_call=True))

    @property
    def selection(self) -> dict[str, float]:
        """The sparsity currently running for every block."""
        return dict(self._selection)

    def validate(self, selection: Mapping[str, float]) -> dict[str, float]:
        """Checks block names and sparsities; returns a complete selection (missing blocks keep theirs)."""
        unknown = [name for name in selection if name not in self._selection]
        if unknown:
            raise KeyError(f'unknown blocks {unknown}; the bank has {list(self._selection)}')
        complete = dict(self._selection)
        for name, sparsity in selection.items():
            if float(sparsity) not in self.bank.descendants[name]:
                raise ValueError(f'block {name} has no descendant at sparsity {sparsity}; choose one of '
                                 f'{sorted(self.bank.descendants[name])}')
            complete[name] = float(sparsity)
        return complete

    def switch(self, selection: Mapping[str, float]) -> list[str]:
        """Puts the selected descendants into the model; returns the blocks that changed.

        Waits for running forwards to finish; forwards started meanwhile wait for the switch.
        """
        target = self.validate(selection)
        changed = [name for name, sparsity in target.items() if sparsity != self._selection[name]]
        if not changed:
            return []
        with self.lock.write():
            for name in changed:
                put_block(self.model, self.bank.descendants[name][target[name]].module)
                self._selection[name] = target[name]
        return changed

    def reset(self) -> list[str]:
        """Switches every block back to sparsity 0.0 (the teacher)."""
        return self.switch({name: 0.0 for name in self._selection})

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """No switch happens inside (for code that runs parts of the model without calling its forward)."""
        with self.lock.read():
            yield

    def detach(self) -> None:
        """Removes the forward guard hooks (after the running forwards finish, so none keeps its read lock)."""
        with self.lock.write():
            for handle in self._handles:
                handle.remove()
            self._handles.clear()
