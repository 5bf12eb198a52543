"""Descendants that live in the bank file: memory-mapped until used, materialized on a device, released after.

A loaded bank maps its safetensors file once (``safetensors.safe_open``, zero-copy: every tensor is a view of a
private, file-backed mapping, so its pages are the file's, read on demand and dropped by the kernel at will). A
:class:`MappedDescendant` holds those views; :meth:`MappedDescendant.materialize` copies them to a device (on the
CPU too: the copy is ordinary process memory, the view stays a view), :meth:`MappedDescendant.release` drops the
copies and puts the views back, so a released descendant costs no memory but its (tiny) module objects.
:class:`TensorSlots` swaps the tensors of a module in place (the module objects stay, and so do the parameter
objects of the modules, so optimizers and the live model keep their references).
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
from typing import Mapping

import torch
from mmengine.logging import print_log
from torch import nn

from ..block_extraction import BlockSpec
from ..block_extraction.block_module import BlockModule
from ..descendant_generation import Descendant, PruningPlan

_Stamp = dict[str, tuple[int, int, int]]


def _backend_available(kind: str) -> bool:
    """Whether torch can run on devices of type ``kind`` here (types without an availability probe: assumed so)."""
    if kind == 'mps':
        return torch.backends.mps.is_available()
    probe = getattr(getattr(torch, kind, None), 'is_available', None)
    return bool(probe()) if callable(probe) else True


def normalize_device(device: torch.device | str) -> torch.device:
    """``device`` with its index made explicit (``cuda`` -> ``cuda:<current>``), so devices compare equal.

    Raises:
        ValueError: ``device`` is not a device (e.g. ``'bogus'``), is the ``meta`` device (tensors without data:
            a bank there could not run), or its type is not available on this machine (e.g. ``cuda`` without GPU).
    """
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"{device!r} is not a torch device ({error}); use e.g. map_location='cpu' or 'cuda:0'") \
            from None
    if device.type == 'meta':
        raise ValueError("a bank cannot live on the meta device (its tensors would hold no data); load it with "
                         "map_location='cpu' or an accelerator such as 'cuda:0'")
    if device.type != 'cpu' and not _backend_available(device.type):
        raise ValueError(f"device {device} is not available here (torch.{device.type}.is_available() is False); "
                         "load with map_location='cpu' or move the model to an available device first")
    if device.type == 'cuda' and device.index is None:
        return torch.device('cuda', torch.cuda.current_device())
    return device


def open_mapped(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file as a zero-copy view of a private memory mapping of the file (CPU).

    The mapping lives as long as one of the views; it stays valid if the file is deleted or replaced.
    """
    from safetensors import safe_open
    with safe_open(str(path), framework='pt', device='cpu') as file:
        return {key: file.get_tensor(key) for key in file.keys()}


_PAGE = 4096
_MADV_POPULATE_READ = 22  # Linux >= 5.14: fault a range's pages in for reading, one system call
_madvise = None  # libc's madvise once it worked; False where it does not (other OS, older kernel)


def _populate(start: int, end: int) -> bool:
    """Faults the pages of the address range [start, end) in with one madvise call; False if unavailable."""
    global _madvise
    if _madvise is False:
        return False
    if _madvise is None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            _madvise = libc.madvise
        except (OSError, AttributeError):
            _madvise = False
            return False
    aligned = start - start % _PAGE
    if _madvise(aligned, end - aligned, _MADV_POPULATE_READ) == 0:
        return True
    if ctypes.get_errno() == errno.EINVAL:  # a kernel without it: the per-tensor touch from now on
        _madvise = False
    return False


def _touch_pages(tensor: torch.Tensor) -> None:
    """Reads one byte per page of a CPU tensor's storage (faults mapped pages in; no copy)."""
    storage = tensor.untyped_storage()
    if storage.nbytes():
        torch.empty(0, dtype=torch.uint8).set_(storage)[::_PAGE].sum()


def touch_all_pages(tensors) -> None:
    """Faults in the pages of CPU tensors, so the next forward does not: one madvise per contiguous run of their
    memory (the tensors of a descendant sit together in the bank file), else one read per page and tensor."""
    storages = [t.untyped_storage() for t in tensors]
    spans = sorted((s.data_ptr(), s.data_ptr() + s.nbytes()) for s in storages if s.nbytes())
    runs: list[list[int]] = []
    for start, end in spans:
        if runs and start - runs[-1][1] <= _PAGE:
            runs[-1][1] = max(runs[-1][1], end)
        else:
            runs.append([start, end])
    if not all(_populate(start, end) for start, end in runs):
        for tensor in tensors:
            _touch_pages(tensor)


class TensorSlots:
    """Where every distinct parameter and buffer of a module sits, to swap its data without rebuilding the module.

    Tensors are named as in :func:`mmlego.descendant_generation.module_tensors` (a tensor tied into several places
    by its first name). A parameter keeps its ``nn.Parameter`` object (its ``data`` is replaced), a buffer is
    replaced in every place it sits.
    """

    def __init__(self, module: nn.Module) -> None:
        self._places: dict[str, list[tuple[nn.Module, str, bool]]] = {}
        first: dict[int, str] = {}
        for prefix, sub in module.named_modules(remove_duplicate=False):
            for store, is_param in ((sub._parameters, True), (sub._buffers, False)):
                for key, value in store.items():
                    if value is not None:
                        name = first.setdefault(id(value), f'{prefix}.{key}' if prefix else key)
                        self._places.setdefault(name, []).append((sub, key, is_param))

    def _current(self, name: str) -> torch.Tensor:
        sub, key, is_param = self._places[name][0]
        return (sub._parameters if is_param else sub._buffers)[key]

    def names(self) -> list[str]:
        """The distinct tensors' names."""
        return list(self._places)

    def get(self) -> dict[str, torch.Tensor]:
        """Name -> the tensor there now (detached; shares its storage)."""
        return {name: self._current(name).detach() for name in self._places}

    def set(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Puts ``tensors`` (name -> tensor, used as given) in their places."""
        for name, places in self._places.items():
            tensor, done = tensors[name], set()
            for sub, key, is_param in places:
                if is_param:
                    param = sub._parameters[key]
                    if id(param) not in done:
                        param.data = tensor
                        done.add(id(param))
                else:
                    sub._buffers[key] = tensor

    def stamp(self) -> _Stamp:
        """Identity, version counter and data pointer of every tensor (to tell later whether it was changed)."""
        return {name: (id(t), t._version, t.data_ptr()) for name, t in
                ((name, self._current(name)) for name in self._places)}

    def changed(self, stamp: _Stamp) -> list[str]:
        """Names whose tensor was modified in place (autograd-visible ops, e.g. an optimizer step or batch-norm
        statistics) or replaced since ``stamp``."""
        now = self.stamp()
        return [name for name, value in now.items() if stamp.get(name) != value]


class MappedDescendant(Descendant):
    """A descendant whose tensors live in the bank file (memory-mapped) and are materialized on demand.

    ``module`` materializes it on :attr:`device` and keeps it materialized until :meth:`release`;
    :meth:`get_module` with ``materialize=False`` returns the module as it is (released: its tensors are the
    mapped views on the CPU; it still runs there).

    Args:
        spec: The block.
        plan: Its plan (with the recorded structure).
        module: The rebuilt block whose tensors are the memory-mapped views.
        device: Where ``module`` materializes it.
    """

    def __init__(self, spec: BlockSpec, plan: PruningPlan, module: BlockModule,
                 device: torch.device | str = 'cpu') -> None:
        super().__init__(spec, plan, module)
        self.device = torch.device(device)
        self._slots = TensorSlots(module)
        self._views = self._slots.get()
        self._stamp: _Stamp | None = None
        self._on: torch.device | None = None
        self._views_placed = True  # the module holds the views (built so, and put back by every release)

    @property
    def module(self) -> BlockModule:
        """The block, materialized on :attr:`device` (stays so until :meth:`release`)."""
        return self.materialize()

    @property
    def file_backed(self) -> bool:
        return True

    @property
    def materialized(self) -> bool:
        return self._stamp is not None

    @property
    def materialized_on(self) -> torch.device | None:
        """Where its tensors are materialized (None: released)."""
        return self._on

    def materialize(self, device: torch.device | str | None = None) -> BlockModule:
        """Puts its tensors on ``device`` (default :attr:`device`); returns the module.

        On the CPU the module runs on the mapped views themselves (zero-copy: writes stay in the private mapping);
        one byte of every page is read here, so the page faults are paid by the switch and not by the first
        forward after it. Elsewhere the tensors are copied from the mapping to the device.
        """
        device = normalize_device(device if device is not None else self.device)
        if self._stamp is not None:
            if self._on == device:
                return self._module
            self.release()
        if device.type == 'cpu':
            if not self._views_placed:
                self._slots.set(self._views)
            touch_all_pages(list(self._views.values()))
        else:
            self._slots.set({name: view.to(device, copy=True) for name, view in self._views.items()})
            self._views_placed = False
        self._stamp, self._on = self._slots.stamp(), device
        return self._module

    def release(self) -> bool:
        """Drops the materialized copies and puts the memory-mapped views back; False if it was not materialized.

        Tensors changed while materialized (in place, e.g. batch-norm statistics of a forward in train mode, or
        replaced) are kept: written into the private mapping (process memory, the file is not touched).
        """
        if self._stamp is None:
            return False
        changed = self._slots.changed(self._stamp)
        if changed:
            current = self._slots.get()
            for name in changed:
                view, tensor = self._views[name], current[name]
                if view.shape == tensor.shape and view.dtype == tensor.dtype:
                    with torch.no_grad():
                        view.copy_(tensor)
                else:
                    self._views[name] = tensor.to('cpu', copy=True)
            print_log(f'descendant {self.spec.name}@{self.sparsity:g} was modified while materialized '
                      f'({", ".join(changed[:3])}{"..." if len(changed) > 3 else ""}); the changes are kept in '
                      'process memory, not in the bank file', logger='current', level=logging.WARNING)
        if changed or self._on.type != 'cpu':  # on the CPU the module ran on the views themselves
            self._slots.set(self._views)
        self._stamp = self._on = None
        self._views_placed = True
        return True
