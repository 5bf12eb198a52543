"""Memory (real bytes), FLOPs and latency of descendants and of the whole model; portable latency tables.

Latency: warm-up runs, then the median of ``repeats`` timed runs (CUDA synchronized), on the device the modules
live on. A latency table holds only latencies plus the teacher's fingerprint and the block names, so it can be
measured on the target device (``tools/profile_latency.py``), copied, and applied to the bank elsewhere.
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..block_bank import BankProfiles, BlockBank
from ..utils.atomic_io import atomic_write_json
from ..utils.progress import progress

LATENCY_TABLE_VERSION = 1


def memory_bytes(module: nn.Module) -> int:
    """Bytes of the parameters and buffers of ``module`` (what it occupies in memory, not a file size)."""
    tensors = list(module.parameters()) + list(module.buffers())
    return int(sum(t.numel() * t.element_size() for t in tensors))


def count_flops(fn: Callable[[], Any]) -> int:
    """Floating-point operations of ``fn()`` (torch's FLOP counter; multiply-add = 2)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def measure_latency(fn: Callable[[], Any], device: torch.device | str = 'cpu', warmup: int = 3,
                    repeats: int = 10) -> float:
    """Median wall time of ``fn()`` in milliseconds after ``warmup`` untimed runs."""
    device = torch.device(device)
    times = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            _synchronize(device)
            start = time.perf_counter()
            fn()
            _synchronize(device)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000.0)
    return float(statistics.median(times))


def _module_device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def profile_costs(bank: BlockBank, warmup: int = 3, repeats: int = 10, show_progress: bool = True) -> None:
    """Fills memory, FLOPs, latency and latency drop of every descendant into ``bank.profiles``.

    Each descendant runs standalone on a random input of its block's input shape (the example batch the bank was
    built with), on the device its modules live on.
    """
    items = [(spec, s) for spec in bank.blocks for s in bank.sparsities]
    for spec, sparsity in progress(items, 'cost profiling', enabled=show_progress):
        module = bank.descendant(spec.name, sparsity).module.eval()
        device = _module_device(module)
        x = torch.randn(*spec.input_shape, device=device)
        profile = bank.profiles.get(spec.name, sparsity)
        profile.memory_bytes = memory_bytes(module)
        profile.flops = count_flops(lambda: module(x))
        profile.latency_ms = measure_latency(lambda: module(x), device, warmup, repeats)
    _fill_latency_drops(bank.profiles, [spec.name for spec in bank.blocks], bank.sparsities)
    bank.profiles.device = str(_module_device(bank.descendant(bank.blocks[0].name, 0.0).module))


def profile_model(bank: BlockBank, model: nn.Module, example_inputs: Sequence[Any],
                  forward_fn: Callable[..., Any] | None = None, warmup: int = 3, repeats: int = 10) -> None:
    """Fills the whole teacher's memory, FLOPs and latency (``forward_fn(model, *inputs)``, default
    ``model(*inputs)``) into ``bank.profiles``."""
    forward_fn = forward_fn or (lambda m, *inputs: m(*inputs))
    was_training = model.training
    model.eval()
    try:
        device = _module_device(model)
        bank.profiles.model_memory_bytes = memory_bytes(model)
        bank.profiles.model_flops = count_flops(lambda: forward_fn(model, *example_inputs))
        bank.profiles.model_latency_ms = measure_latency(lambda: forward_fn(model, *example_inputs), device,
                                                         warmup, repeats)
        first = next((x for x in example_inputs if isinstance(x, torch.Tensor)), None)
        bank.profiles.latency_input_shape = list(first.shape) if first is not None else None
    finally:
        model.train(was_training)


def _fill_latency_drops(profiles: BankProfiles, blocks: Sequence[str],
                        sparsities: Sequence[float]) -> None:
    for name in blocks:
        original = profiles.get(name, 0.0).latency_ms
        for sparsity in sparsities:
            profile = profiles.get(name, sparsity)
            if original and profile.latency_ms is not None:
                profile.latency_drop = (original - profile.latency_ms) / original


@dataclass
class LatencyTable:
    """Latencies of one bank measured on one device.

    Attributes:
        teacher_fingerprint: The bank's teacher.
        device: Where it was measured (free text, e.g. ``cuda:0 (A100)`` or ``cpu``).
        model_latency_ms: The whole teacher.
        blocks: Block -> sparsity (as text) -> latency in ms.
    """

    teacher_fingerprint: str
    device: str
    model_latency_ms: float
    blocks: dict[str, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def from_bank(cls, bank: BlockBank) -> 'LatencyTable':
        """The latencies currently in the bank's profiles."""
        if bank.profiles.model_latency_ms is None:
            raise ValueError('the bank has no model latency; run profile_model first')
        missing = [f'{spec.name}@{s:g}' for spec in bank.blocks for s in bank.sparsities
                   if bank.profiles.get(spec.name, s).latency_ms is None]
        if missing:
            raise ValueError(f'the bank lacks the latencies of {", ".join(missing)}; run profile_costs first')
        blocks = {spec.name: {f'{s:g}': bank.profiles.get(spec.name, s).latency_ms for s in bank.sparsities}
                  for spec in bank.blocks}
        return cls(bank.fingerprint, bank.profiles.device or 'unknown', bank.profiles.model_latency_ms, blocks)

    def save(self, path: str | Path) -> None:
        """Writes the table as JSON (atomically)."""
        atomic_write_json(path, dict(version=LATENCY_TABLE_VERSION, **asdict(self)))

    @classmethod
    def load(cls, path: str | Path) -> 'LatencyTable':
        """Reads a table written by :meth:`save`."""
        try:
            data = json.loads(Path(path).read_text())
            if data.pop('version') != LATENCY_TABLE_VERSION:
                raise ValueError('unsupported latency table version')
            return cls(**data)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f'{path} is not a latency table ({error}); write one with tools/profile_latency.py')

    def apply(self, bank: BlockBank) -> None:
        """Replaces the bank's latencies with this table's (see :meth:`apply_to_profiles`)."""
        self.apply_to_profiles(bank.profiles, bank.fingerprint, [spec.name for spec in bank.blocks],
                               bank.sparsities)

    def apply_to_profiles(self, profiles: BankProfiles, fingerprint: str, blocks: Sequence[str],
                          sparsities: Sequence[float]) -> None:
        """Replaces the latencies in ``profiles`` of a bank (teacher ``fingerprint``, ``blocks`` x ``sparsities``).

        Works on a manifest's profiles alone, without the teacher (``tools/profile_latency.py --apply``).

        Raises:
            ValueError: The table belongs to another teacher or does not cover every descendant.
        """
        if self.teacher_fingerprint != fingerprint:
            raise ValueError('the latency table was measured for another teacher; profile this bank instead')
        for name in blocks:
            for sparsity in sparsities:
                try:
                    latency = self.blocks[name][f'{sparsity:g}']
                except KeyError:
                    raise ValueError(f'the latency table lacks {name}@{sparsity:g}; profile this bank '
                                     'with the same blocks and sparsities') from None
                profiles.get(name, sparsity).latency_ms = float(latency)
        profiles.model_latency_ms = self.model_latency_ms
        profiles.device = self.device
        _fill_latency_drops(profiles, blocks, sparsities)
