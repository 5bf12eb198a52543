"""Swap blocks of a live model in place, keeping on the compute device only what the model runs.

Only blocks whose sparsity changes are touched; the member modules of the chosen descendant are set into the model
by name, so the model keeps its own forward and post-processing. Sparsity 0.0 is the model's own block modules. With
a loaded (file-backed) bank a descendant is materialized on the model's device when it is switched in and released
(back to its memory mapping) when it is switched out, and the teacher's switched-out blocks leave the device
(:mod:`mmlego.block_switcher.offload`); a built bank's descendants stay in memory. Switching is guarded by a
readers-writer lock: every forward of the model's root holds a read lock (its ``forward`` is wrapped, so the lock is
released on any exit, KeyboardInterrupt included: torch's always-called forward hooks run on ``Exception`` only), a
switch holds the write lock from reading the current selection to the last block put in place, so a concurrent
forward sees the model entirely before or entirely after a switch, and two concurrent switches apply one after the
other (never a mix of both). One switcher owns a model: a new one built on a model that another switcher switched
takes that switcher's state over (and detaches it).
"""
from __future__ import annotations

import contextlib
import copy
import os
import threading
import weakref
from typing import Any, Iterator, Mapping

from torch import nn

from ..block_bank import BlockBank
from ..block_extraction.block_module import BlockModule, block_module_of, put_block
from ..descendant_generation import Descendant
from .offload import TeacherOffload

# model -> a weak reference to the switcher that owns it (weak both ways: neither keeps the other alive)
_OWNERS: 'weakref.WeakKeyDictionary[nn.Module, weakref.ref]' = weakref.WeakKeyDictionary()


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


class _GuardedForward:
    """Stands in for ``model.forward`` (an instance attribute) and holds the read lock around the real forward.

    A ``try/finally`` releases the lock on every exit; torch's ``always_call`` forward hooks would miss a
    KeyboardInterrupt. A deep copy of the model gets the plain forward of the copy (the copy has no switcher).
    """

    def __init__(self, model: nn.Module, lock: ReadWriteLock) -> None:
        self.forward = model.forward
        self.lock = lock

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.lock.acquire_read()
        try:
            return self.forward(*args, **kwargs)
        finally:
            self.lock.release_read()

    def __deepcopy__(self, memo: dict) -> Any:
        return copy.deepcopy(self.forward, memo)


class BlockSwitcher:
    """Applies selections (block -> sparsity) to ``model`` using the descendants held by ``bank``.

    Sparsity 0.0 is the teacher's own block modules, so switching everything back to 0.0 reproduces the teacher's
    outputs exactly. ``model`` is normally the teacher (every block at 0.0). A model that another switcher has
    switched is taken over from it (its selection, the teacher's switched-out blocks, what it materialized; the old
    switcher is detached and refuses further switches). On a model switched otherwise, each block's running
    descendant is recognised (the bank's module itself, or its parameter shapes), so :attr:`selection` is what the
    model runs; such a block can return to 0.0 only if the bank holds a copy of the teacher's block (a built bank).

    A built bank is moved to the model's device once (as a whole). With a file-backed bank a descendant is
    materialized on the model's device when it is switched in and released when switched out (unless something else
    had materialized it), and, with ``offload_teacher``, the teacher's switched-out blocks leave the device (GPU: to
    CPU memory; CPU: spilled to a private file and memory-mapped). A switch reads nothing of the bank directory: the
    bank file is mapped already.

    Args:
        model: The live model (the teacher the bank was built from).
        bank: Its bank.
        guard_forward: Hold a read lock during every forward of ``model`` (needed when another thread switches).
        offload_teacher: Take the teacher's switched-out blocks off the device (default: with a file-backed bank).
        spill_dir: Where the CPU spill directory is created (default
            :func:`mmlego.block_switcher.offload.default_spill_root`).

    Raises:
        ValueError: ``model`` is owned by a switcher of another teacher's bank.
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
        self._replaced_by: BlockSwitcher | None = None
        self._guard: _GuardedForward | None = None
        if offload_teacher is None:
            offload_teacher = bank.file_backed
        owner = _OWNERS.get(model)
        previous = owner() if owner is not None else None
        if isinstance(model.__dict__.get('forward'), _GuardedForward) and previous is None:
            del model.forward  # the guard of a switcher that was garbage-collected
        if previous is not None and previous._replaced_by is None:
            self._take_over(previous, offload_teacher, spill_dir)
        else:
            self._running: dict[str, Descendant | None] = {}  # block -> the descendant in the model (None: teacher)
            self._teacher: dict[str, BlockModule | None] = {}
            for spec in bank.blocks:
                self._running[spec.name], self._teacher[spec.name] = self._recognise(spec)
            self._selection = {name: 0.0 if d is None else d.sparsity for name, d in self._running.items()}
            self._owned: set[tuple[str, float]] = set()  # (block, sparsity) this switcher materialized
            self.offload = TeacherOffload(self.device, spill_dir) if offload_teacher else None
        _OWNERS[model] = weakref.ref(self)
        if guard_forward:
            self._guard = _GuardedForward(model, self.lock)
            model.forward = self._guard

    def _recognise(self, spec) -> tuple[Descendant | None, BlockModule | None]:
        """(the bank's descendant the model runs for ``spec``, None for the teacher; the teacher's block or None)."""
        current = block_module_of(self.model, spec, copy_modules=False)
        by_sparsity = self.bank.descendants[spec.name]
        zero = by_sparsity.get(0.0)
        zero_module = zero.get_module(materialize=False) if zero is not None else None
        if zero_module is not None and _same_modules(zero_module, current):
            return None, current  # a loaded bank's sparsity 0.0 is the model's own block
        teacher_copy = zero_module  # a built bank's copy or a loaded bank's hold on the teacher's own block
        pruned = [d for s, d in sorted(by_sparsity.items()) if s != 0.0 and not d.teacher_owned]
        for descendant in pruned:
            if _same_modules(descendant.get_module(materialize=False), current):
                return descendant, teacher_copy
        shapes = _shapes(current)
        if zero_module is None or shapes != _shapes(zero_module):  # same shapes as the teacher: the teacher
            for descendant in pruned:
                if _shapes(descendant.get_module(materialize=False)) == shapes:
                    return descendant, teacher_copy
            if zero_module is not None:
                raise ValueError(f'block {spec.name} of this model does not match the bank (its parameter shapes are '
                                 'those of no descendant): the bank was built for another teacher; build the bank '
                                 'from this model, or switch the model the bank was built from')
        return None, current

    def _take_over(self, previous: 'BlockSwitcher', offload_teacher: bool, spill_dir) -> None:
        if previous.bank.fingerprint != self.bank.fingerprint:
            raise ValueError('this model is switched by a BlockSwitcher of another teacher\'s bank; call its reset() '
                             'and detach() first, or switch it with that switcher')
        with previous.lock.write():
            previous._replaced_by = self
            previous._remove_guard()
            self._selection = dict(previous._selection)
            self._running = dict(previous._running)
            self._teacher = dict(previous._teacher)
            self._owned = set(previous._owned)
            self.offload = previous.offload
        if self.offload is None and offload_teacher:
            self.offload = TeacherOffload(self.device, spill_dir)

    def _remove_guard(self) -> None:
        if self._guard is not None and self.model.__dict__.get('forward') is self._guard:
            del self.model.forward
        self._guard = None

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

    def _switch_in(self, name: str, sparsity: float) -> tuple[BlockModule, Descendant | None]:
        if sparsity == 0.0:
            teacher = self._teacher[name]
            if teacher is None:
                raise ValueError(f'block {name} cannot return to sparsity 0.0: the model ran a descendant when this '
                                 'switcher was built and the teacher\'s block is not in the bank; build the model '
                                 'from the teacher checkpoint (or keep using the switcher that switched it)')
            if self.offload is not None and name in self.offload.offloaded:
                self.offload.restore(name, teacher)
            elif any(t.device != self.device for t in teacher.parameters()):
                teacher.to(self.device)  # offloaded by a detached switcher (recognised, not taken over)
            return teacher, None
        descendant = self.bank.descendants[name][sparsity]
        if descendant.file_backed and not descendant.materialized:
            self._owned.add((name, sparsity))
        return descendant.materialize(self.device), descendant

    def _switch_out(self, name: str, running: Descendant | None, sparsity: float) -> None:
        if running is None:
            if self.offload is not None:
                self.offload.offload(name, self._teacher[name])
        elif (name, sparsity) in self._owned:
            self._owned.discard((name, sparsity))
            running.release()

    def switch(self, selection: Mapping[str, float]) -> list[str]:
        """Puts the selected descendants into the model; returns the blocks that changed.

        Blocks missing from ``selection`` keep what they run. Each changed block's new descendant is materialized
        before the old one leaves the device (at most one block's worth of extra memory during a switch). Waits for
        running forwards to finish; forwards and switches started meanwhile wait for this one.

        Raises:
            KeyError / ValueError: An unknown block or sparsity (nothing is switched).
            RuntimeError: Called from inside a forward of the model, or on a switcher another one took over.
        """
        with self.lock.write():
            if self._replaced_by is not None:
                raise RuntimeError('this BlockSwitcher was taken over by a newer one built on the same model; '
                                   'switch with that one')
            target = self.validate(selection)
            changed = [name for name, sparsity in target.items() if sparsity != self._selection[name]]
            for name in changed:
                module, descendant = self._switch_in(name, target[name])
                put_block(self.model, module)
                old, old_sparsity = self._running[name], self._selection[name]
                self._running[name], self._selection[name] = descendant, target[name]
                self._switch_out(name, old, old_sparsity)
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
            for descendant in by_sparsity.values():
                if descendant is self._running[name] or descendant.teacher_owned:
                    continue
                if descendant.materialized:
                    held.append(descendant.get_module(materialize=False))
        offloaded = self.offload.offloaded if self.offload is not None else set()
        held.extend(block for name, block in self._teacher.items()
                    if block is not None and self._running[name] is not None and name not in offloaded)
        return held

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """No switch happens inside (for code that runs parts of the model without calling its forward)."""
        with self.lock.read():
            yield

    def detach(self) -> None:
        """Removes the forward guard (after the running forwards finish, so none keeps its read lock) and the
        spill directory (switched-out teacher blocks keep their mappings). The model keeps what it runs."""
        with self.lock.write():
            self._remove_guard()
            owner = _OWNERS.get(self.model)
            if owner is not None and owner() is self:
                del _OWNERS[self.model]
            if self.offload is not None and self._replaced_by is None:
                self.offload.close()


def _same_modules(block: BlockModule, other: BlockModule) -> bool:
    return all(a is b for a, b in zip(block.layers, other.layers))


def _shapes(block: BlockModule) -> list[tuple[str, tuple[int, ...]]]:
    return [(name, tuple(tensor.shape)) for name, tensor in block.named_parameters()]
