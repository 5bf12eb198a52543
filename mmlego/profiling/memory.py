"""Resident memory: what a configuration actually holds on the compute device, and the process RSS.

:func:`mmlego.profiling.memory_bytes` is the estimate side (the weight bytes of a module, what the scaling
optimizer's ``memory_mb`` budget bounds); this module measures. On a GPU, :func:`resident_device_bytes` is
``torch.cuda.memory_allocated``. On the CPU it adds the distinct tensor storages (deduplicated by their data
pointer) reachable from the live model and the modules given besides (those a :class:`~mmlego.block_switcher
.BlockSwitcher` keeps materialized off the model: ``switcher.held_modules()``). The live model's storages count even
when they are views of a file mapping (on the CPU a switched-in descendant runs zero-copy on the bank file's pages:
every forward touches them, so they are resident). Off the model, storages inside a private file-backed mapping
(what ``safetensors.safe_open`` and ``torch.load(..., mmap=True, weights_only=True)`` create, found in
``/proc/self/maps``) do not count: they are a file's pages, read on demand and dropped by the kernel at will; a
bank's unused descendants and the teacher's spilled blocks are such views.
"""
from __future__ import annotations

import bisect
import itertools
import os
from typing import Iterable

import torch
from torch import nn


def file_mapped_ranges() -> list[tuple[int, int]]:
    """Sorted ``(start, end)`` address ranges of this process's private file-backed mappings (Linux; else [])."""
    ranges = []
    try:
        with open('/proc/self/maps') as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) < 6 or fields[4] == '0' or fields[1][3] != 'p' or fields[5].startswith('['):
                    continue  # anonymous, shared or special ([heap], [stack]...)
                start, end = (int(x, 16) for x in fields[0].split('-'))
                ranges.append((start, end))
    except OSError:
        return []
    return sorted(ranges)


def _inside(address: int, ranges: list[tuple[int, int]], starts: list[int]) -> bool:
    i = bisect.bisect_right(starts, address) - 1
    return i >= 0 and ranges[i][0] <= address < ranges[i][1]


def is_memory_mapped(tensor: torch.Tensor, ranges: list[tuple[int, int]] | None = None) -> bool:
    """Whether ``tensor``'s storage is a view of a private file-backed mapping (not materialized in memory)."""
    if tensor.device.type != 'cpu' or tensor.untyped_storage().nbytes() == 0:
        return False
    ranges = file_mapped_ranges() if ranges is None else ranges
    return _inside(tensor.untyped_storage().data_ptr(), ranges, [start for start, _ in ranges])


def _device_of(model: nn.Module) -> torch.device:
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return tensor.device if tensor is not None else torch.device('cpu')


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def resident_device_bytes(model: nn.Module, extra_modules: Iterable[nn.Module] = (),
                          device: torch.device | str | None = None) -> int:
    """Bytes of tensors resident on the compute device for ``model`` (see the module docstring).

    Args:
        model: The live model.
        extra_modules: Modules held materialized besides it (e.g. ``switcher.held_modules()``).
        device: The compute device (default: ``model``'s).

    Returns:
        CUDA: ``torch.cuda.memory_allocated(device)`` (everything allocated there, activations included). Other
        devices: the bytes of the distinct storages on ``device`` of the parameters and buffers of ``model`` and
        ``extra_modules``, without the memory-mapped ones of ``extra_modules`` (CPU).
    """
    device = torch.device(device) if device is not None else _device_of(model)
    if device.type == 'cuda':
        return int(torch.cuda.memory_allocated(device))
    ranges = file_mapped_ranges() if device.type == 'cpu' else []
    starts = [start for start, _ in ranges]
    seen: set[int] = set()
    total = 0
    for module in itertools.chain((model,), extra_modules):
        in_model = module is model
        for tensor in itertools.chain(module.parameters(), module.buffers()):
            if not _same_device(tensor.device, device):
                continue
            storage = tensor.untyped_storage()
            pointer = storage.data_ptr()
            if pointer in seen or storage.nbytes() == 0:
                continue
            seen.add(pointer)
            if in_model or not _inside(pointer, ranges, starts):
                total += storage.nbytes()
    return total


def process_rss_bytes(anonymous_only: bool = False) -> int:
    """The resident set size of this process, in bytes.

    Read from ``/proc/self/statm`` (``/proc/self/status`` for ``anonymous_only``), else from psutil if installed,
    else the peak RSS from ``resource`` (the only figure some systems give).

    Args:
        anonymous_only: Only anonymous memory (``RssAnon``: heap, tensors, ...), without the file pages mapped in
            (code, libraries, and the pages of memory-mapped banks read so far, which the kernel may drop). Linux only;
            elsewhere the total.
    """
    try:
        if anonymous_only:
            with open('/proc/self/status') as status:
                for line in status:
                    if line.startswith('RssAnon:'):
                        return int(line.split()[1]) * 1024
        with open('/proc/self/statm') as statm:
            return int(statm.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil
        return int(psutil.Process().memory_info().rss)
    except ImportError:
        import resource
        import sys
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == 'darwin' else peak * 1024)
