"""Latency profiling through onnxruntime: a bank's latency table for a device that runs only onnxruntime.

Three steps, so the middle one can run on the device itself:

1. :func:`export_latency_suite` (here, with PyTorch): every all-at-``s`` composite of the tensor path and every
   descendant block, standalone on the input it receives in the teacher, as ONNX files plus ``.npy`` inputs.
2. :func:`mmlego.profiling.onnx_timing.time_suite` (anywhere onnxruntime runs; that file needs nothing else).
3. :func:`apply_onnx_timings`: the timings become the bank's latency profiles, hence the same portable
   :class:`~mmlego.profiling.LatencyTable` as PyTorch profiling writes.

A block timed alone is not the block inside the model (its own session call, cold caches, no fusion across its
border). The standalone times are therefore anchored on the composites, which are timed whole: with ``S_s`` the
sum of the blocks' standalone times at sparsity ``s`` and ``C_s`` the composite's measured time, the least-squares
fit ``C_s = frame + k * S_s`` over the sparsities gives one scale ``k`` for the blocks (``frame >= 0``), and each
descendant's latency is ``k`` times its standalone time. The teacher's estimate is its measured latency
(``C_0``); how well frame + blocks describes the other composites is checked and stored as PyTorch profiling does.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..block_bank import BlockBank
from ..block_bank.profiles import sparsity_key
from ..block_switcher import BlockSwitcher
from ..export.onnx_export import DEFAULT_OPSET, TensorPathModule, export_onnx
from ..utils.atomic_io import atomic_write_json, read_json
from ..utils.progress import progress
from .cost import LatencyTable
from .latency import check_latency_model, fill_latency_drops
from .onnx_timing import SUITE_FILE, SUITE_FORMAT, TIMINGS_FILE

__all__ = ['export_latency_suite', 'apply_onnx_timings', 'anchor_fit', 'check_suite_directory']


def _composite_id(sparsity: float) -> str:
    return f'composite@{sparsity:g}'


def _block_id(index: int, sparsity: float) -> str:
    return f'block{index}@{sparsity:g}'


def _capture_block_inputs(model: nn.Module, bank: BlockBank, inputs: torch.Tensor,
                          forward_fn: Callable[..., Any]) -> dict[str, torch.Tensor]:
    """The tensor each block receives in one teacher forward (pre-hook on its first member module)."""
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for spec in bank.blocks:
        def hook(_module, args, name=spec.name):
            if name not in captured and args and isinstance(args[0], torch.Tensor):
                captured[name] = args[0].detach().clone()
        handles.append(model.get_submodule(spec.members[0]).register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            forward_fn(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
    missing = [spec.name for spec in bank.blocks if spec.name not in captured]
    if missing:
        raise RuntimeError(f'the forward did not run blocks {missing}; forward_fn must run the path the blocks '
                           'were extracted from')
    return captured


def check_suite_directory(directory: str | os.PathLike) -> None:
    """Refuses to write a suite over an existing directory that is not a suite (an old suite is replaced).

    Raises:
        FileExistsError: ``directory`` exists and holds no ``suite.json``.
    """
    directory = Path(directory)
    if directory.exists() and not (directory / SUITE_FILE).is_file():
        raise FileExistsError(f'{directory} exists and is not a latency suite; choose another --onnx-suite')


def export_latency_suite(bank: BlockBank, model: nn.Module, inputs: torch.Tensor, forward_fn: Callable[..., Any],
                         directory: str | os.PathLike, opset: int = DEFAULT_OPSET, show_progress: bool = True) -> Path:
    """Writes the ONNX latency suite of ``bank`` on ``model`` (its live teacher) into ``directory``.

    Args:
        bank: The bank (its descendants are switched into ``model`` and switched back afterwards).
        model: The teacher the bank was built from.
        inputs: One input of the tensor path (batch and size of deployment).
        forward_fn: ``forward_fn(model, inputs)`` runs the path the blocks were extracted from.
        directory: Where to write (an earlier suite there is replaced; written under a temporary name, then
            renamed).
        opset: ONNX opset (>= 17).
        show_progress: Show a progress bar.

    Returns:
        The suite directory.

    Raises:
        FileExistsError: ``directory`` exists and is not a suite (nothing of it is touched).
        mmlego.export.ExportError: A composite or block cannot be expressed at ``opset``, or the path runs code
            ONNX cannot hold in one graph (``forward_fn.traced_part``: a two-stage detector's proposals).
    """
    if hasattr(forward_fn, 'traced_part'):
        from ..export import ExportError
        raise ExportError('this bank\'s tensor path runs data-dependent code (a two-stage detector\'s proposals) '
                          'that ONNX does not express as one graph, so its composites cannot be timed in '
                          'onnxruntime; profile it in PyTorch on the device (tools/profile_latency.py without --onnx)')
    directory = Path(directory)
    check_suite_directory(directory)
    staging = directory.with_name(f'.{directory.name}.partial')
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    was_training = model.training
    model.eval()
    block_inputs = _capture_block_inputs(model, bank, inputs, forward_fn)
    entries = []
    np.save(staging / 'inputs.npy', inputs.detach().cpu().numpy(), allow_pickle=False)
    jobs = [('composite', None, s) for s in bank.sparsities] + [
        ('block', index, s) for index in range(len(bank.blocks)) for s in bank.sparsities]
    switcher = BlockSwitcher(model, bank, guard_forward=False)
    try:
        for kind, index, sparsity in progress(jobs, 'ONNX latency suite (export)', enabled=show_progress):
            if kind == 'composite':
                switcher.switch({spec.name: sparsity for spec in bank.blocks})
                key, feed = _composite_id(sparsity), inputs
                module = TensorPathModule(model, forward_fn)
                entry = dict(id=key, kind=kind, sparsity=sparsity, input='inputs.npy')
            else:
                spec = bank.blocks[index]
                key, feed = _block_id(index, sparsity), block_inputs[spec.name]
                module = TensorPathModule(bank.descendant(spec.name, sparsity).module, lambda m, x: m(x))
                entry = dict(id=key, kind=kind, block=spec.name, sparsity=sparsity, input=f'{key}.npy')
                np.save(staging / entry['input'], feed.cpu().numpy(), allow_pickle=False)
            export_onnx(module, feed, staging / f'{key}.onnx', opset=opset)
            entries.append(dict(entry, file=f'{key}.onnx'))
    finally:
        switcher.reset()
        switcher.detach()
        model.train(was_training)
    atomic_write_json(staging / SUITE_FILE, dict(format=SUITE_FORMAT, teacher_fingerprint=bank.fingerprint,
                                                 opset=opset, input_shape=list(inputs.shape), entries=entries))
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(staging, directory)
    return directory


def anchor_fit(block_sums: list[float], composites: list[float]) -> tuple[float, float]:
    """Least-squares ``composite = frame + k * block_sum`` with ``frame >= 0`` and ``k > 0``: (frame, k)."""
    x, y = np.asarray(block_sums, dtype=float), np.asarray(composites, dtype=float)
    if len(x) >= 2 and np.ptp(x) > 0:
        k, frame = np.polyfit(x, y, 1)
        if frame >= 0 and k > 0:
            return float(frame), float(k)
    k = float(x @ y / (x @ x)) if x @ x > 0 else 1.0  # through the origin: the blocks take everything
    return 0.0, k if k > 0 else 1.0


def apply_onnx_timings(bank: BlockBank, directory: str | os.PathLike,
                       timings: dict[str, Any] | str | os.PathLike | None = None) -> tuple[LatencyTable, dict]:
    """Turns a timed suite into the bank's latency profiles and returns its table and the consistency check.

    Args:
        bank: The bank the suite was exported from (its profiles are updated in place).
        directory: The suite directory.
        timings: What :func:`~mmlego.profiling.onnx_timing.time_suite` returned, or the path of its
            ``timings.json`` (default: the one in ``directory``).

    Returns:
        ``(table, check)``: the :class:`LatencyTable` and, per sparsity, the relative error of frame + blocks
        against the measured composite.

    Raises:
        ValueError: The suite is of another bank, or the timings miss an entry of the suite.
    """
    directory = Path(directory)
    suite = read_json(directory / SUITE_FILE, 'export the suite with tools/profile_latency.py CONFIG BANK --onnx '
                      '--onnx-suite DIR')
    if not isinstance(timings, dict):
        timings = read_json(Path(timings) if timings is not None else directory / TIMINGS_FILE,
                            f'time the suite first (python mmlego/profiling/onnx_timing.py {directory})')
    if suite.get('teacher_fingerprint') != bank.fingerprint:
        raise ValueError(f'the latency suite in {directory} was exported from another teacher than this bank\'s; '
                         'export it from this bank (tools/profile_latency.py CONFIG BANK --onnx)')
    ms = timings.get('ms') or {}
    missing = [entry['id'] for entry in suite['entries'] if entry['id'] not in ms]
    if missing:
        raise ValueError(f'the timings lack {", ".join(missing[:5])}{"..." if len(missing) > 5 else ""}; time '
                         f'the whole suite (python mmlego/profiling/onnx_timing.py {directory})')
    names = [spec.name for spec in bank.blocks]
    # a block the model runs several times per forward (BlockSpec.calls) costs its one timed call that often
    standalone = {(spec.name, s): ms[_block_id(i, s)] * spec.calls for i, spec in enumerate(bank.blocks)
                  for s in bank.sparsities}
    composites = [ms[_composite_id(s)] for s in bank.sparsities]
    sums = [sum(standalone[name, s] for name in names) for s in bank.sparsities]
    _, scale = anchor_fit(sums, composites)
    profiles = bank.profiles
    for (name, sparsity), value in standalone.items():
        profiles.get(name, sparsity).latency_ms = scale * value
    profiles.composite_latency_ms = {sparsity_key(s): c for s, c in zip(bank.sparsities, composites)}
    profiles.model_latency_ms = composites[0]
    profiles.latency_method = f'onnxruntime (standalone blocks x {scale:.3f}, anchored on the composites)'
    profiles.latency_input_shape = suite.get('input_shape')
    profiles.device = f'{timings.get("device", "cpu")} (onnxruntime {timings.get("onnxruntime", "?")} ' \
                      f'{timings.get("provider", "")})'
    profiles.num_threads = None  # onnxruntime's own thread pool, not torch's
    fill_latency_drops(profiles, names, bank.sparsities)
    check = check_latency_model(profiles, names, bank.sparsities)
    return LatencyTable.from_bank(bank), check
