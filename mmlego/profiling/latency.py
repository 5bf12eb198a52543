"""Latency of every descendant measured inside the running model (LegoDNN's edge profiling, done in place).

For each sparsity ``s`` the model runs the composite with every block at ``s`` and a :class:`BlockTimer` times each
block where it runs. A descendant's latency is its block's median time in that composite; the teacher's latency
is the median of whole forwards of the all-0.0 composite, and the frame (everything outside the blocks) is the
teacher's latency minus its blocks' in-model times. Before the first timing the teacher runs for a while (the
process has often just finished minutes of evaluation; caches, the allocator and the CPU's clock settle first);
composites are then visited in ``rounds`` rounds, alternately forward and in reverse, so a drift of the machine's
speed during profiling spreads evenly over the sparsities instead of biasing those measured last. Rounds go on until
the timed visits span ``min_seconds``: a model that serves in a few milliseconds would otherwise be profiled in under
a second, inside one of the speed phases a shared machine goes through (on this project's 2-vCPU VM the median of
half a second of forwards moved by up to 1.4x between neighbouring half seconds, a pure-Python loop by 1.8x;
``bench/latency_profile_span.py``), and the profile would describe that phase instead of the device.

Checked after profiling (and stored in ``profiles.latency_check``): the estimate of every all-at-``s`` composite
(frame + its blocks, as timed) against that composite's measured whole-forward median. A negative frame, a composite
off by more than 10%, or a frame whose share of the latency is far above its share of the FLOPs is logged as a
warning: the cost model does not describe this model's latency.

Calibrated after the check (``profiles.latency_calibration``): where pruned blocks change the model's time by more
than their own in-model times say (the frame around them speeds up or slows down too: Faster R-CNN's composites at
sparsity 0.4-0.8 ran 8-17% faster than frame + blocks), the block latencies of that sparsity get the factor that
makes frame + blocks equal the measured all-at-``s`` composite (:func:`fit_latency_calibration`). The optimizer sees
calibrated latencies; mixed configurations get each block's factor; ``bench/latency_fidelity.py`` measures both
against whole forwards of mixed configurations.
"""
from __future__ import annotations

import contextlib
import logging
import math
import statistics
import time
from typing import Any, Callable, Iterator, Sequence

import torch
from mmengine.logging import print_log
from torch import nn

from ..block_bank import BankProfiles, BlockBank
from ..block_bank.profiles import sparsity_key
from ..block_switcher import BlockSwitcher
from ..latency_estimation import BlockTimer
from ..utils.progress import progress

#: A composite whose estimate is further than this from its measurement is reported.
CONSISTENCY_TOLERANCE = 0.10
#: Default span of the timed visits (seconds): 4 rounds of a 20-80 ms model take longer, a 3-10 ms model gets more.
DEFAULT_MIN_SECONDS = 10.0
#: Rounds at most, whatever ``min_seconds`` asks (a model of a fraction of a millisecond).
MAX_ROUNDS = 400


def check_thread_count(count: Any, name: str = 'the number of threads') -> None:
    """ValueError unless ``count`` is None (as the process runs) or an integer >= 1 (CPU intra-op threads)."""
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
        raise ValueError(f'{name} must be an integer >= 1 (CPU intra-op threads) or None (as the process runs), '
                         f'got {count!r}')


def check_min_seconds(seconds: Any, name: str = 'min_seconds') -> None:
    """ValueError unless ``seconds`` is a number >= 0 (the span latency profiling visits its composites for)."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
        raise ValueError(f'{name} must be a number >= 0 (seconds latency profiling spans), got {seconds!r}')


@contextlib.contextmanager
def intra_op_threads(count: int | None) -> Iterator[None]:
    """Runs the block with ``torch.set_num_threads(count)`` (None: as is), restoring the thread count after."""
    check_thread_count(count)
    if count is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def synchronize(device: torch.device) -> None:
    """Waits for the device's queued work (CUDA); a no-op on CPU."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def profile_latency(bank: BlockBank, model: nn.Module, example_inputs: Sequence[Any],
                    forward_fn: Callable[..., Any] | None = None, warmup: int = 3, repeats: int = 20,
                    show_progress: bool = True, rounds: int = 4, settle_s: float = 1.0,
                    min_seconds: float = DEFAULT_MIN_SECONDS) -> dict[str, float]:
    """Fills every descendant's in-model latency, the teacher's latency and the composites' latencies.

    Args:
        bank: The bank (its descendants are switched into ``model`` and switched back afterwards).
        model: The live teacher the bank was built from.
        example_inputs: Inputs of one forward (batch 1 at the deployment size).
        forward_fn: ``forward_fn(model, *inputs)`` runs the path the blocks were extracted from.
        warmup: Untimed forwards after each switch.
        repeats: Timed forwards per composite (split over the rounds).
        show_progress: Show a progress bar.
        rounds: Visits of every composite; even rounds go from the teacher to the smallest, odd ones back.
        settle_s: Seconds of untimed teacher forwards before the first timing (at least ``warmup`` forwards).
        min_seconds: More rounds (up to :data:`MAX_ROUNDS`) until the visits span this many seconds (0: exactly
            ``rounds``), so that the profile averages over the machine's speed phases.

    Returns:
        Sparsity (as text) -> relative error of the composite's estimate (frame + blocks) vs its measurement.
    """
    forward_fn = forward_fn or (lambda m, *inputs: m(*inputs))
    device = next(model.parameters()).device
    names = [spec.name for spec in bank.blocks]
    totals: dict[float, list[float]] = {s: [] for s in bank.sparsities}
    blocks: dict[float, dict[str, list[float]]] = {s: {name: [] for name in names} for s in bank.sparsities}
    if rounds < 1 or repeats < 1:
        raise ValueError(f'profile_latency needs rounds >= 1 and repeats >= 1, got rounds={rounds}, repeats={repeats}')
    check_min_seconds(min_seconds)
    per_round = max(1, math.ceil(repeats / rounds))
    order = list(bank.sparsities)
    was_training = model.training
    model.eval()
    switcher = BlockSwitcher(model, bank, guard_forward=False)
    timer = BlockTimer(model, bank.blocks)
    try:
        with torch.no_grad():
            _settle(model, example_inputs, forward_fn, device, warmup, settle_s)
            for sparsity in _visits(order, rounds, min_seconds, show_progress):
                switcher.switch({name: sparsity for name in names})
                timer.attach()
                for i in range(warmup + per_round):
                    synchronize(device)
                    timer.begin_forward()
                    start = time.perf_counter()
                    forward_fn(model, *example_inputs)
                    synchronize(device)
                    elapsed = (time.perf_counter() - start) * 1000.0
                    timer.flush()
                    if i < warmup:
                        continue
                    if timer.last is None or set(timer.last.ms) != set(names):
                        raise RuntimeError('the forward did not run every block; forward_fn must run the path '
                                           'the blocks were extracted from')
                    totals[sparsity].append(elapsed)
                    for name in names:
                        blocks[sparsity][name].append(timer.last.ms[name])
                    timer.last = None
    finally:
        timer.detach()
        switcher.reset()
        switcher.detach()
        model.train(was_training)

    profiles = bank.profiles
    for sparsity in bank.sparsities:
        for name in names:
            profiles.get(name, sparsity).latency_ms = float(statistics.median(blocks[sparsity][name]))
    profiles.composite_latency_ms = {sparsity_key(s): float(statistics.median(totals[s])) for s in bank.sparsities}
    profiles.model_latency_ms = profiles.composite_latency_ms[sparsity_key(0.0)]
    profiles.latency_method = 'in-model'
    first = next((x for x in example_inputs if isinstance(x, torch.Tensor)), None)
    profiles.latency_input_shape = list(first.shape) if first is not None else None
    profiles.device = str(device)
    profiles.num_threads = torch.get_num_threads() if device.type == 'cpu' else None
    fill_latency_drops(profiles, names, bank.sparsities)
    return check_latency_model(profiles, names, bank.sparsities)


def _visits(order: Sequence[float], rounds: int, min_seconds: float, show_progress: bool) -> Iterator[float]:
    """The sparsities to visit: ``rounds`` rounds, alternately forward and in reverse, then more rounds (up to
    :data:`MAX_ROUNDS`, their count estimated from the first ``rounds``) until ``min_seconds`` have passed."""
    start = time.perf_counter()
    first = [s for r in range(rounds) for s in (order if r % 2 == 0 else order[::-1])]
    yield from progress(first, 'latency profiling (in the model)', enabled=show_progress)
    elapsed = time.perf_counter() - start
    if elapsed >= min_seconds or rounds >= MAX_ROUNDS:
        return
    extra = min(MAX_ROUNDS - rounds, math.ceil(rounds * (min_seconds - elapsed) / max(elapsed, 1e-9)))
    more = [s for r in range(rounds, rounds + extra) for s in (order if r % 2 == 0 else order[::-1])]
    yield from progress(more, f'latency profiling: {extra} more rounds to span {min_seconds:g} s',
                        enabled=show_progress)


def _settle(model: nn.Module, example_inputs: Sequence[Any], forward_fn: Callable[..., Any], device: torch.device,
            min_forwards: int, seconds: float) -> None:
    """Untimed forwards for ``seconds`` (and at least ``min_forwards``) so the first timings are not transient."""
    start = time.perf_counter()
    done = 0
    while done < min_forwards or time.perf_counter() - start < seconds:
        forward_fn(model, *example_inputs)
        synchronize(device)
        done += 1


def fill_latency_drops(profiles: BankProfiles, names: Sequence[str], sparsities: Sequence[float]) -> None:
    """``latency_drop = (T_original - T) / T_original`` per descendant (informational: portable across devices)."""
    for name in names:
        original = profiles.get(name, 0.0).latency_ms
        for sparsity in sparsities:
            profile = profiles.get(name, sparsity)
            if original and profile.latency_ms is not None:
                profile.latency_drop = (original - profile.latency_ms) / original


def check_latency_model(profiles: BankProfiles, names: Sequence[str], sparsities: Sequence[float]) -> dict[str, float]:
    """Compares frame + blocks with every measured composite, warns when the cost model is inconsistent, and fits
    ``profiles.latency_calibration`` to the composites (:func:`fit_latency_calibration`): the one step every writer
    of latencies (in-model profiling, latency tables, onnxruntime timings) runs after filling them.

    Args:
        profiles: A bank's profiles with in-model latencies (:func:`profile_latency` or a latency table).
        names: The bank's blocks.
        sparsities: The bank's sparsities.

    Returns:
        Sparsity (as text) -> ``(estimate - measured) / measured`` of the all-at-that-sparsity composite (also
        stored in ``profiles.latency_check``).
    """
    teacher_blocks = sum(profiles.get(name, 0.0).latency_ms for name in names)
    frame = profiles.model_latency_ms - teacher_blocks
    if frame < 0:
        print_log(f'latency model: the blocks take {teacher_blocks:.3f} ms, more than the whole teacher '
                  f'({profiles.model_latency_ms:.3f} ms); the frame is clamped at 0 and estimates run high',
                  logger='current', level=logging.WARNING)
    check = {}
    for sparsity in sparsities:
        measured = (profiles.composite_latency_ms or {}).get(sparsity_key(sparsity))
        if not measured:
            continue
        estimate = max(0.0, frame) + sum(profiles.get(name, sparsity).latency_ms for name in names)
        check[sparsity_key(sparsity)] = (estimate - measured) / measured
    bad = {key: error for key, error in check.items() if abs(error) > CONSISTENCY_TOLERANCE}
    if bad:
        print_log('latency model: frame + blocks misses the measured composites at sparsities '
                  + ', '.join(f'{key} ({error:+.0%})' for key, error in bad.items())
                  + '; the block latencies are calibrated per sparsity to the composites, mixed configurations '
                  'may still be off', logger='current', level=logging.WARNING)
    if profiles.model_flops and profiles.model_latency_ms:
        block_flops = sum(profiles.get(name, 0.0).flops or 0 for name in names)
        flop_share = max(0.0, 1 - block_flops / profiles.model_flops)
        time_share = max(0.0, frame) / profiles.model_latency_ms
        if time_share > max(2 * flop_share, flop_share + 0.25):
            print_log(f'latency model: the frame takes {time_share:.0%} of the teacher\'s latency but only '
                      f'{flop_share:.0%} of its FLOPs; the block timings may miss part of the blocks\' cost',
                      logger='current', level=logging.WARNING)
    profiles.latency_check = check
    profiles.latency_calibration = fit_latency_calibration(profiles, names, sparsities)
    return check


#: Calibration factors are kept within these bounds (a factor outside them means the timings are not usable).
CALIBRATION_BOUNDS = (0.25, 4.0)
#: A sparsity is calibrated only when frame + blocks misses its composite by more than this: below it the miss is
#: the composite's own timing noise (+-4% on the eight synthetic banks), and fitting it made mixed configurations
#: worse (bench/latency_fidelity.py, 2026-12-05: median error summed over the eight banks 95.5% calibrating every
#: sparsity, 92.9% with this threshold, 101.5% never; Faster R-CNN, +8-17% at s >= 0.4: 29.0% -> 20.4%).
CALIBRATION_MIN_MISS = 0.05


def fit_latency_calibration(profiles: BankProfiles, names: Sequence[str],
                            sparsities: Sequence[float]) -> dict[str, float] | None:
    """Per-sparsity factors on the block latencies so that frame + blocks equals each measured composite.

    ``k_s = (C_s - frame) / sum_b t_b(s)`` with ``C_s`` the measured all-at-``s`` composite, ``t_b(s)`` the in-model
    block latencies and ``frame = max(0, C_0 - sum_b t_b(0))`` (so ``k_0 = 1`` unless the frame is negative, where
    it scales the teacher's blocks to its measured latency). Sparsities without a measured composite, and those whose
    composite frame + blocks misses by at most :data:`CALIBRATION_MIN_MISS`, get 1.0.

    Returns:
        Sparsity (as text) -> factor, or None without measured composites.
    """
    composites = profiles.composite_latency_ms or {}
    if not composites or profiles.model_latency_ms is None:
        return None
    frame = max(0.0, profiles.model_latency_ms - sum(profiles.get(name, 0.0).latency_ms for name in names))
    factors, clamped = {}, []
    for sparsity in sparsities:
        key = sparsity_key(sparsity)
        blocks = sum(profiles.get(name, sparsity).latency_ms for name in names)
        measured = composites.get(key)
        within_noise = sparsity != 0.0 and abs(frame + blocks - measured) <= CALIBRATION_MIN_MISS * measured
        if not measured or blocks <= 0 or within_noise:
            factors[key] = 1.0
            continue
        factor = (measured - frame) / blocks
        bounded = min(max(factor, CALIBRATION_BOUNDS[0]), CALIBRATION_BOUNDS[1])
        if bounded != factor:
            clamped.append(f'{key} ({factor:.2f})')
        factors[key] = bounded
    if clamped:
        print_log('latency model: calibration factors out of bounds at sparsities ' + ', '.join(clamped)
                  + f', kept within {CALIBRATION_BOUNDS}: re-profile the latencies on a quiet device',
                  logger='current', level=logging.WARNING)
    return factors
