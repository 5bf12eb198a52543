"""Memory (real bytes) and FLOPs of descendants and of the whole model; portable latency tables.

Latencies are measured inside the running model (:mod:`mmlego.profiling.latency`). A latency table holds only
latencies plus the teacher's fingerprint and the block names, so it can be measured on the target device
(``tools/profile_latency.py``), copied, and applied to the bank elsewhere. Applying it to a bank that runs on
another device type (``cpu`` vs ``cuda``) is refused unless ``allow_other_device=True`` (``--allow-other-device``).
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
from .latency import DEFAULT_MIN_SECONDS, check_latency_model, fill_latency_drops, profile_latency, synchronize

LATENCY_TABLE_VERSION = 2  # 2: in-model latencies plus the measured composites


def memory_bytes(module: nn.Module) -> int:
    """Bytes of the parameters and buffers of ``module`` (what it occupies in memory, not a file size)."""
    tensors = list(module.parameters()) + list(module.buffers())
    return int(sum(t.numel() * t.element_size() for t in tensors))


def count_flops(fn: Callable[[], Any]) -> int:
    """Floating-point operations of ``fn()`` (torch's FLOP counter; multiply-add = 2)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def measure_latency(fn: Callable[[], Any], device: torch.device | str = 'cpu', warmup: int = 3,
                    repeats: int = 10, after: Callable[[float], Any] | None = None) -> float:
    """Median wall time of ``fn()`` in milliseconds after ``warmup`` untimed runs.

    Args:
        after: Called with each run's wall time (ms, warm-up runs included) once it is taken, outside the timed span.
    """
    device = torch.device(device)
    times = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            elapsed_ms = (time.perf_counter() - start) * 1000.0
            if i >= warmup:
                times.append(elapsed_ms)
            if after is not None:
                after(elapsed_ms)
    return float(statistics.median(times))


def _module_device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def profile_costs(bank: BlockBank, show_progress: bool = True) -> None:
    """Fills memory and FLOPs of every descendant into ``bank.profiles``.

    Memory is exact (bytes of the descendant's tensors) and FLOPs are counted on one forward on a random input of
    the block's input shape (times the block's calls per model forward); neither depends on where the block runs. Latency does, and is measured inside the
    model by :func:`profile_model`.
    """
    items = [(spec, s) for spec in bank.blocks for s in bank.sparsities]
    for spec, sparsity in progress(items, 'memory and FLOPs', enabled=show_progress):
        module = bank.descendant(spec.name, sparsity).module.eval()
        x = torch.randn(*spec.input_shape, device=_module_device(module))
        profile = bank.profiles.get(spec.name, sparsity)
        profile.memory_bytes = memory_bytes(module)
        profile.flops = count_flops(lambda: module(x)) * spec.calls  # a block run several times per forward


def profile_model(bank: BlockBank, model: nn.Module, example_inputs: Sequence[Any],
                  forward_fn: Callable[..., Any] | None = None, warmup: int = 3, repeats: int = 20,
                  show_progress: bool = True, rounds: int = 4, settle_s: float = 1.0,
                  min_seconds: float = DEFAULT_MIN_SECONDS) -> dict[str, float]:
    """Fills the teacher's memory and FLOPs and every latency, measured inside ``model``.

    ``forward_fn(model, *inputs)`` (default ``model(*inputs)``) runs the path the blocks were extracted from. Run
    :func:`profile_costs` first, so that the latency model can be checked against the FLOPs.

    Returns:
        The relative error of frame + blocks against each measured all-at-one-sparsity composite (see
        :func:`mmlego.profiling.latency.profile_latency`).
    """
    forward_fn = forward_fn or (lambda m, *inputs: m(*inputs))
    was_training = model.training
    model.eval()
    try:
        bank.profiles.model_memory_bytes = memory_bytes(model)
        bank.profiles.model_flops = count_flops(lambda: forward_fn(model, *example_inputs))
    finally:
        model.train(was_training)
    return profile_latency(bank, model, example_inputs, forward_fn, warmup, repeats, show_progress, rounds, settle_s,
                           min_seconds)


@dataclass
class LatencyTable:
    """Latencies of one bank measured on one device.

    Attributes:
        teacher_fingerprint: The bank's teacher.
        device: Where it was measured (free text, e.g. ``cuda:0 (A100)`` or ``cpu``).
        model_latency_ms: The whole teacher.
        blocks: Block -> sparsity (as text) -> in-model latency in ms.
        composites: Sparsity (as text) -> measured latency of the composite with every block at it.
        num_threads: CPU intra-op threads of the measurement (None: a GPU, onnxruntime's own, or unknown).
    """

    teacher_fingerprint: str
    device: str
    model_latency_ms: float
    blocks: dict[str, dict[str, float]] = field(default_factory=dict)
    composites: dict[str, float] = field(default_factory=dict)
    num_threads: int | None = None

    @classmethod
    def from_bank(cls, bank: BlockBank) -> 'LatencyTable':
        """The latencies currently in the bank's profiles."""
        if bank.profiles.model_latency_ms is None:
            raise ValueError('the bank has no model latency; run profile_model first')
        missing = [f'{spec.name}@{s:g}' for spec in bank.blocks for s in bank.sparsities
                   if bank.profiles.get(spec.name, s).latency_ms is None]
        if missing:
            raise ValueError(f'the bank lacks the latencies of {", ".join(missing)}; run profile_model first')
        blocks = {spec.name: {f'{s:g}': bank.profiles.get(spec.name, s).latency_ms for s in bank.sparsities}
                  for spec in bank.blocks}
        return cls(bank.fingerprint, bank.profiles.device or 'unknown', bank.profiles.model_latency_ms, blocks,
                   dict(bank.profiles.composite_latency_ms or {}), bank.profiles.num_threads)

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

    def apply(self, bank: BlockBank, allow_other_device: bool = False) -> None:
        """Replaces the bank's latencies with this table's (see :meth:`apply_to_profiles`).

        Args:
            bank: The bank; its :attr:`~mmlego.block_bank.BlockBank.device` (where it runs, if set) must be of the
                device type the table was measured on.
            allow_other_device: Apply a table measured on another device type anyway (e.g. to optimize here for
                the device it was measured on).

        Raises:
            ValueError: Another teacher, another device type (unless ``allow_other_device``), or a table that does
                not cover every descendant.
        """
        self.apply_to_profiles(bank.profiles, bank.fingerprint, [spec.name for spec in bank.blocks],
                               bank.sparsities, device=bank.device, allow_other_device=allow_other_device)

    def check_device(self, device: torch.device | str | None, allow_other_device: bool = False) -> None:
        """Refuses this table for a bank that runs on ``device`` if it was measured on another device type.

        Args:
            device: Where the bank runs (None: unknown, nothing checked).
            allow_other_device: Skip the check.

        Raises:
            ValueError: The device types differ (``cuda`` vs ``cpu``; the index and the free text after the type,
                e.g. ``cuda:0 (A100)``, are not compared) and ``allow_other_device`` is False. A table whose device
                is ``unknown`` is not refused.
        """
        words = self.device.replace(':', ' ').split()
        measured = words[0].lower() if words else 'unknown'
        if device is None or allow_other_device or measured == 'unknown':
            return
        runs = torch.device(device).type
        if measured != runs:
            raise ValueError(
                f'the latency table was measured on {self.device!r}, but this bank runs on {runs}: its latency '
                f'estimates would be those of another device; measure them here (tools/profile_latency.py CONFIG '
                f'BANK_DIR --device {runs}), or pass allow_other_device=True (tools/profile_latency.py '
                '--allow-other-device) to apply it anyway')

    def apply_to_profiles(self, profiles: BankProfiles, fingerprint: str, blocks: Sequence[str],
                          sparsities: Sequence[float], device: torch.device | str | None = None,
                          allow_other_device: bool = False) -> None:
        """Replaces the latencies in ``profiles`` of a bank (teacher ``fingerprint``, ``blocks`` x ``sparsities``).

        Works on a manifest's profiles alone, without the teacher (``tools/profile_latency.py --apply``). Nothing
        is changed when it raises.

        Args:
            profiles: The bank's profiles (changed in place).
            fingerprint: The bank's teacher fingerprint.
            blocks: The bank's block names.
            sparsities: The bank's sparsities.
            device: Where the bank runs (None: unknown); a table measured on another device type is refused.
            allow_other_device: Apply a table of another device type anyway (see :meth:`check_device`).

        Raises:
            ValueError: The table belongs to another teacher, was measured on another device type than ``device``
                (unless ``allow_other_device``), or does not cover every descendant.
        """
        if self.teacher_fingerprint != fingerprint:
            raise ValueError('the latency table was measured for another teacher; profile this bank instead')
        self.check_device(device, allow_other_device)
        missing = [f'{name}@{sparsity:g}' for name in blocks for sparsity in sparsities
                   if f'{sparsity:g}' not in self.blocks.get(name, {})]
        if missing:
            raise ValueError(f'the latency table lacks {", ".join(missing[:4])}{" ..." if len(missing) > 4 else ""}; '
                             'profile this bank with the same blocks and sparsities')
        for name in blocks:
            for sparsity in sparsities:
                profiles.get(name, sparsity).latency_ms = float(self.blocks[name][f'{sparsity:g}'])
        profiles.model_latency_ms = self.model_latency_ms
        profiles.composite_latency_ms = dict(self.composites)
        profiles.latency_method = 'in-model'
        profiles.device = self.device
        profiles.num_threads = self.num_threads
        fill_latency_drops(profiles, blocks, sparsities)
        check_latency_model(profiles, blocks, sparsities)
