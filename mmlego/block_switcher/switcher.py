"""Swap blocks of a live model in place, keeping on the compute device only what the model runs.

Only blocks whose sparsity changes are touched; the member modules of the chosen descendant are set into the model
by name, so the model keeps its own forward and post-processing. Sparsity 0.0 is the model's own block modules. With
a loaded (file-backed) bank a descendant is materialized on the model's device when it is switched in and released
(back to its memory mapping) when it is switched out, and the teacher's switched-out blocks leave the device
(:mod:`mmlego.block_switcher.offload`); a built bank's descendants stay in memory. Switching is guarded by a
readers-writer lock: every forward of the model's root holds a read lock (forward pre-hook / always-called forward
hook), a switch holds the write lock, so a concurrent forward sees the model entirely before or entirely after a
switch.
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import Iterator, Mapping

from torch import nn

from ..block_bank import BlockBank
from ..block_extraction.block_module import BlockModule, block_module_of, put_block
from .offload import TeacherOffload


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

    At construction ``model`` must run the teacher (every block at 0.0): its block modules are sparsity 0.0, so
    switching everything back to 0.0 reproduces the teacher's outputs exactly. A built bank is moved to the model's
    device once (as a whole). With a file-backed bank a descendant is materialized on the model's device when it is
    switched in and released when switched out (unless something else had materialized it), and, with
    ``offload_teacher``, the teacher's switched-out blocks leave the device (GPU: to CPU memory; CPU: spilled to a
    private file and memory-mapped). A switch reads nothing of the bank directory: the bank file is mapped already.

    Args:
        model: The live model (the teacher the bank was built from).
        bank: Its bank.
        guard_forward: Hold a read lock during every forward of ``model`` (needed when another thread switches).
        offload_teacher: Take the teacher's switched-out blocks off the device (default: with a file-backed bank).
        spill_dir: Where the CPU spill directory is created (default
            :func:`mmlego.block_switcher.offload.default_spill_root`).
    """

    def __init__(self, model: nn.Module, bank: BlockBank, guard_forward: bool = True,
                 offload_teacher: bool | None = None, spill_dir: str | os.PathLike | None = None) -> None:
        self.model = model
        self.bank = bank
        try:
            device = next(model.parameters()).device
        except StopIteration:  # pragma: no cover - a model without parameters has no blocks
            device = 'cpu'
        bank.to(device)
        self.device = bank.device
        self.lock = ReadWriteLock()
        self._selection = {spec.name: 0.0 for spec in bank.blocks}
        self._teacher: dict[str, BlockModule] = {spec.name: block_module_of(model, spec, copy_modules=False)
                                                 for spec in bank.blocks}
        if offload_teacher is None:
            offload_teacher = bank.file_backed
        self.offload = TeacherOffload(self.device, spill_dir) if offload_teacher else None
        self._materialized: set[tuple[str, float]] = set()  # descendants this switcher materialized
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

    def _switch_in(self, name: str, sparsity: float) -> BlockModule:
        if sparsity == 0.0:
            if self.offload is not None:
                self.offload.restore(name, self._teacher[name])
            return self._teacher[name]
        descendant = self.bank.descendants[name][sparsity]
        if descendant.file_backed and not descendant.materialized:
            self._materialized.add((name, sparsity))
        return descendant.materialize(self.device)

    def _switch_out(self, name: str, sparsity: float) -> None:
        if sparsity == 0.0:
            if self.offload is not None:
                self.offload.offload(name, self._teacher[name])
        elif (name, sparsity) in self._materialized:
            self._materialized.discard((name, sparsity))
            self.bank.descendants[name][sparsity].release()

    def switch(self, selection: Mapping[str, float]) -> list[str]:
        """Puts the selected descendants into the model; returns the blocks that changed.

        Each changed block's new descendant is materialized before the old one leaves the device (at most one
        block's worth of extra memory during a switch). Waits for running forwards to finish; forwards started
        meanwhile wait for the switch.
        """
        target = self.validate(selection)
        changed = [name for name, sparsity in target.items() if sparsity != self._selection[name]]
        if not changed:
            return []
        with self.lock.write():
            for name in changed:
                put_block(self.model, self._switch_in(name, target[name]))
                old, self._selection[name] = self._selection[name], target[name]
                self._switch_out(name, old)
        return changed

    def reset(self) -> list[str]:
        """Switches every block back to sparsity 0.0 (the teacher)."""
        return self.switch({name: 0.0 for name in self._selection})

    def held_modules(self) -> list[nn.Module]:
        """The modules this switcher keeps materialized outside the model (for
        :func:`mmlego.profiling.resident_device_bytes`).

        A built bank's descendants not in the model; file-backed descendants materialized by someone else (e.g.
        through ``descendant(...).module``); the teacher's switched-out blocks when they are not offloaded.
        Released descendants and offloaded blocks are not held (their tensors are mapped files or CPU memory).
        """
        held: list[nn.Module] = []
        for name, by_sparsity in self.bank.descendants.items():
            for sparsity, descendant in by_sparsity.items():
                in_model = sparsity == self._selection[name] and sparsity != 0.0  # 0.0 runs the model's own
                if in_model or descendant.teacher_owned:
                    continue
                if descendant.materialized:
                    held.append(descendant.get_module(materialize=False))
        offloaded = self.offload.offloaded if self.offload is not None else set()
        held.extend(block for name, block in self._teacher.items()
                    if self._selection[name] != 0.0 and name not in offloaded)
        return held

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """No switch happens inside (for code that runs parts of the model without calling its forward)."""
        with self.lock.read():
            yield

    def detach(self) -> None:
        """Removes the forward guard hooks (after the running forwards finish, so none keeps its read lock) and the
        spill directory (switched-out teacher blocks keep their mappings)."""
        with self.lock.write():
            for handle in self._handles:
                handle.remove()
            self._handles.clear()
            if self.offload is not None:
                self.offload.close()
