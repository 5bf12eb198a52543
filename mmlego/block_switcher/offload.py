"""Keeping the teacher's switched-out blocks off the compute device.

On a GPU the tensors of a switched-out teacher block move to CPU memory and come back when it is switched in. On
the CPU the compute device is the RAM itself, so a block's tensors are spilled once into a process-private
safetensors file (in a temporary directory owned by the :class:`TeacherOffload`, removed by :meth:`close` or at
exit) and memory-mapped back (zero-copy): a switched-out block then costs no RAM, only the file's pages the kernel
caches at will. Switching it in puts the mapped views themselves back (zero-copy, as a switched-in descendant runs:
the mapping is private, so writes stay in process memory) and reads one byte per page, so the page faults are the
switch's and not the next forward's; a block that was not changed meanwhile is not written again.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from pathlib import Path

import torch

from ..block_bank.storage import TensorSlots, normalize_device, open_mapped, touch_all_pages
from ..block_extraction.block_module import BlockModule


def _tmpfs(path: str) -> bool:
    """Whether ``path`` lies on a RAM-backed file system (tmpfs/ramfs), where a spill would stay in RAM."""
    try:
        with open('/proc/mounts') as mounts:
            entries = [line.split()[1:3] for line in mounts]
    except OSError:
        return False
    real, best = os.path.realpath(path), ('', '')
    for mount, kind in entries:
        if (real == mount or real.startswith(mount.rstrip('/') + '/')) and len(mount) > len(best[0]):
            best = (mount, kind)
    return best[1] in ('tmpfs', 'ramfs')


def default_spill_root() -> str:
    """``$MMLEGO_SPILL_DIR``, else the temporary directory, else ``/var/tmp`` if the former is RAM-backed."""
    root = os.environ.get('MMLEGO_SPILL_DIR')
    if root:
        return root
    root = tempfile.gettempdir()
    if _tmpfs(root) and os.path.isdir('/var/tmp') and not _tmpfs('/var/tmp'):
        return '/var/tmp'
    return root


class TeacherOffload:
    """Moves the tensors of the teacher's blocks off ``device`` while they are switched out, and back.

    Args:
        device: The compute device.
        spill_root: Where the CPU spill directory is created (default :func:`default_spill_root`).
    """

    def __init__(self, device: torch.device | str, spill_root: str | os.PathLike | None = None) -> None:
        self.device = normalize_device(device)
        self.spill_root = str(spill_root) if spill_root is not None else default_spill_root()
        self.spill_dir: Path | None = None
        self._finalizer: weakref.finalize | None = None
        self._views: dict[str, dict[str, torch.Tensor]] = {}  # CPU: block -> its spilled (mapped) tensors
        self._files: dict[str, Path] = {}
        self._stamps: dict[str, dict] = {}  # CPU: block -> tensor stamps after it was switched in
        self._offloaded: set[str] = set()
        self._slots: dict[str, tuple[BlockModule, TensorSlots]] = {}  # block -> (its module, its tensor slots)
        self._count = 0

    @property
    def offloaded(self) -> set[str]:
        """The blocks whose tensors are off the device now."""
        return set(self._offloaded)

    def _spill(self, name: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        from safetensors.torch import save_file
        if self.spill_dir is None:
            self.spill_dir = Path(tempfile.mkdtemp(prefix='mmlego-spill-', dir=self.spill_root))
            self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.spill_dir), True)
        seen, plain = set(), {}
        for key, tensor in tensors.items():  # safetensors refuses tensors sharing memory: copy the rare shared ones
            ptr = tensor.untyped_storage().data_ptr()
            plain[key] = tensor.contiguous() if ptr not in seen else tensor.clone()
            seen.add(ptr)
        self._count += 1
        path = self.spill_dir / f'{self._count}.safetensors'
        save_file(plain, str(path))
        old = self._files.pop(name, None)
        if old is not None:
            old.unlink(missing_ok=True)  # the previous spill of a block changed since (its mapping dies with it)
        self._files[name] = path
        return open_mapped(path)

    def _slots_of(self, name: str, block: BlockModule) -> TensorSlots:
        """The tensor slots of ``block`` (built once per block module: a switch should not walk its modules)."""
        cached = self._slots.get(name)
        if cached is None or cached[0] is not block:
            cached = self._slots[name] = (block, TensorSlots(block))
        return cached[1]

    def offload(self, name: str, block: BlockModule) -> None:
        """Takes ``block``'s tensors off the device (call after it left the model)."""
        if name in self._offloaded:
            return
        slots = self._slots_of(name, block)
        if self.device.type != 'cpu':
            slots.set({key: tensor.to('cpu') for key, tensor in slots.get().items()})
        else:
            stamp = self._stamps.pop(name, None)
            if name not in self._views or stamp is None or slots.changed(stamp):
                self._views[name] = self._spill(name, slots.get())
            slots.set(self._views[name])
        self._offloaded.add(name)

    def restore(self, name: str, block: BlockModule) -> None:
        """Puts ``block``'s tensors back on the device (call before it enters the model)."""
        if name not in self._offloaded:
            return
        slots = self._slots_of(name, block)
        if self.device.type != 'cpu':
            slots.set({key: tensor.to(self.device) for key, tensor in slots.get().items()})
        else:  # the block has held its spilled views since offload(): fault their pages in, nothing to swap
            touch_all_pages(list(self._views[name].values()))
            self._stamps[name] = slots.stamp()
        self._offloaded.discard(name)

    def close(self) -> None:
        """Removes the spill directory. Blocks still switched out keep working (their mappings outlive the files);
        they are spilled again if switched in and out later."""
        if self._finalizer is not None:
            self._finalizer()
        self.spill_dir, self._finalizer = None, None
        self._files.clear()
        self._stamps.clear()
        self._views = {name: views for name, views in self._views.items() if name in self._offloaded}
