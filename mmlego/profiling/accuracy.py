"""Accuracy drop of every (block, sparsity), by LegoDNN's reference-composite method.

For each reference composite ``e`` (by default LegoDNN's three: every block original, every block at the middle
sparsity, every block at the highest), ``drop(b, s) = mean_e[metric(e with b original) - metric(e with b at s)]``.
Identical composites are evaluated once; every evaluation is cached in a JSON file (written atomically after each
one) so an interrupted profiling run resumes where it stopped. The cache is used only for the same teacher, blocks
and descendant weights (retrained descendants invalidate it). ``references=('teacher',)`` is the cheap variant:
one composite, ``1 + B * (S - 1)`` evaluations.

Denoising. Each drop is a difference of two noisy evaluations, and the optimizer minimizing their sum picks the
luckiest noise (the winner's curse: at the full budget a pruned configuration would "beat" its teacher). The raw
mean drop is kept as ``accuracy_drop_raw``; ``accuracy_drop`` holds the denoised one (:func:`denoise_drops`):

1. Per block, the drops are made non-decreasing in sparsity by isotonic regression (pool-adjacent-violators, the
   least-squares monotone fit, bounded below by ``drop(0.0) = 0``). A running maximum would also be monotone, but
   it keeps the largest noisy value of every run, so it is biased upwards by the very noise being removed; PAV
   averages the violators instead.
2. A drop within the noise of zero (``<= noise_threshold * noise``) counts as zero. ``noise`` is the standard
   error of one mean drop (:func:`estimate_noise`): with several reference composites, each (block, sparsity > 0)
   has one replicate per composite and the noise is their standard deviation pooled over all pairs, divided by
   the square root of the number of composites. This includes how much a drop really depends on the rest of the
   composite, so it errs on the side of calling a drop zero. With a single reference composite there are no
   replicates; the fallback is the standard deviation over blocks of the drops at the lowest non-zero sparsity,
   where pruning changes a block least: those differ by noise plus the blocks' genuine differences, an upper
   bound of the noise of one drop (None, i.e. no thresholding, with a single block).

After both steps the drops of a block are 0.0 up to some sparsity and above the noise threshold after it, never
decreasing, so an unconstrained budget picks the teacher. The noise is stored as ``profiles.accuracy_noise``.

Compound damage. Drops measured one block at a time add up to less than what many pruned blocks do together (every
block at 0.8 can drop a segmentor to all-background where the sum of its drops says half of that). The reference
composites above are such configurations, already evaluated: :func:`fit_drop_interaction` fits ``c`` of
``actual drop = D + c D^2`` (``D`` the sum of the composite's denoised drops) to them, stored as
``profiles.accuracy_interaction`` and used by every metric estimate. ``c`` is held >= 0: a composite that lost less
than its drops' sum keeps the additive estimate (the quadratic would turn decreasing past ``-1 / 2c``).
"""
from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path
from typing import Callable, Mapping, Sequence

from mmengine.logging import print_log
from torch import nn

from ..block_bank import BlockBank, teacher_fingerprint
from ..block_switcher import BlockSwitcher
from ..utils.atomic_io import atomic_write_json, read_json
from ..utils.progress import progress

Evaluate = Callable[[nn.Module], float]
DEFAULT_REFERENCES = ('teacher', 'middle', 'max')


def reference_sparsity(reference: str | float, sparsities: Sequence[float]) -> float:
    """``'teacher'`` -> 0.0, ``'middle'`` -> the middle sparsity, ``'max'`` -> the highest, or a listed number."""
    if reference == 'teacher':
        return sparsities[0]
    if reference == 'middle':
        return sparsities[len(sparsities) // 2]
    if reference == 'max':
        return sparsities[-1]
    if isinstance(reference, (int, float)) and float(reference) in sparsities:
        return float(reference)
    raise ValueError(f'unknown reference composite {reference!r}: use "teacher", "middle", "max" or one of '
                     f'the bank\'s sparsities {list(sparsities)}')


def _descendants_digest(bank: BlockBank) -> str:
    """SHA-256 over every descendant's tensors: cached metrics are only valid for these weights."""
    digest = hashlib.sha256()
    for spec in bank.blocks:
        for sparsity in bank.sparsities:
            digest.update(f'{spec.name}@{sparsity!r}:'.encode())
            digest.update(teacher_fingerprint(bank.descendant(spec.name, sparsity).module).encode())
    return digest.hexdigest()


def _key(selection: dict[str, float], order: list[str]) -> str:
    return ','.join(f'{selection[name]:g}' for name in order)


def profile_accuracy(bank: BlockBank, model: nn.Module, evaluate: Evaluate,
                     references: Sequence[str | float] = DEFAULT_REFERENCES, metric_name: str | None = None,
                     cache_file: str | Path | None = None, show_progress: bool = True,
                     denoise: bool = True, noise_threshold: float = 1.0) -> dict[str, float]:
    """Fills the accuracy drops of every descendant, the noise and the teacher metric into ``bank.profiles``.

    ``accuracy_drop_raw`` is LegoDNN's mean drop; ``accuracy_drop`` the denoised one (see the module docstring).

    Args:
        bank: The bank (descendants retrained).
        model: The live teacher the bank was built from; its blocks are switched and restored afterwards.
        evaluate: Returns the task metric of the model as it is (higher is better), on the profiling split (val;
            never the split that reports are made on).
        references: Reference composites (see module docstring).
        metric_name: Stored with the profiles.
        cache_file: JSON cache of evaluated composites (resume).
        show_progress: Show a progress bar.
        denoise: Denoise the drops (False: ``accuracy_drop`` is the raw drop).
        noise_threshold: Drops up to this many noise standard errors count as zero.

    Returns:
        Composite key (sparsities in block order) -> metric, for every evaluated composite.
    """
    if not noise_threshold >= 0:
        raise ValueError(f'noise_threshold must be a number >= 0 (multiples of the noise), got {noise_threshold!r}')
    order = [spec.name for spec in bank.blocks]
    refs = sorted({reference_sparsity(r, bank.sparsities) for r in references})
    plan: list[tuple[float, str, float]] = []  # (reference, block, sparsity)
    selections: dict[str, dict[str, float]] = {}
    for ref in refs:
        for name in order:
            for sparsity in bank.sparsities:
                selection = {block: ref for block in order}
                selection[name] = sparsity
                selections[_key(selection, order)] = selection
                plan.append((ref, name, sparsity))
    teacher = {name: 0.0 for name in order}
    selections[_key(teacher, order)] = teacher

    cache_path = Path(cache_file) if cache_file else None
    metrics: dict[str, float] = {}
    identity = dict(teacher_fingerprint=bank.fingerprint, blocks=order,
                    descendants=_descendants_digest(bank) if cache_path else None)
    cached = None
    if cache_path and cache_path.exists():
        try:
            cached = read_json(cache_path, 'ignoring it: every composite is evaluated again')
        except ValueError as error:
            print_log(str(error), logger='current', level=logging.WARNING)
    if isinstance(cached, dict) and isinstance(cached.get('metrics'), dict):
        if all(cached.get(field) == value for field, value in identity.items()):
            metrics = {k: float(v) for k, v in cached['metrics'].items()}
            print_log(f'accuracy profiling resumes with {len(metrics)} cached evaluations', logger='current')
        else:
            print_log(f'ignoring {cache_path}: it was written for another teacher, blocks or descendant weights',
                      logger='current', level=logging.WARNING)
    todo = [key for key in selections if key not in metrics]
    switcher = BlockSwitcher(model, bank, guard_forward=False)
    try:
        for key in progress(todo, f'accuracy profiling ({len(selections)} composites)', enabled=show_progress):
            switcher.switch(selections[key])
            metrics[key] = float(evaluate(model))
            if cache_path:
                atomic_write_json(cache_path, dict(identity, metrics=metrics))
    finally:
        switcher.reset()
        switcher.detach()

    bank.profiles.teacher_metric = metrics[_key(teacher, order)]
    bank.profiles.metric_name = metric_name or bank.profiles.metric_name
    drops: dict[tuple[str, float], list[float]] = {}
    for ref, name, sparsity in plan:
        base = {block: ref for block in order}
        with_original = dict(base, **{name: 0.0})
        with_descendant = dict(base, **{name: sparsity})
        drops.setdefault((name, sparsity), []).append(
            metrics[_key(with_original, order)] - metrics[_key(with_descendant, order)])
    raw: dict[str, dict[float, float]] = {}
    for (name, sparsity), values in drops.items():
        raw.setdefault(name, {})[sparsity] = math.fsum(values) / len(values)
    noise, method = estimate_noise(drops, bank.sparsities)
    denoised = denoise_drops(raw, noise * noise_threshold if noise is not None else 0.0) if denoise else raw
    bank.profiles.accuracy_noise = noise
    for name, by_sparsity in raw.items():
        for sparsity, value in by_sparsity.items():
            profile = bank.profiles.get(name, sparsity)
            profile.accuracy_drop_raw, profile.accuracy_drop = value, denoised[name][sparsity]
    _log_denoising(raw, denoised, noise, method, noise_threshold, denoise)
    composites = reference_composite_damage(denoised, bank.profiles.teacher_metric, metrics, order, refs)
    bank.profiles.accuracy_interaction = fit_drop_interaction(composites)
    print_log('compound damage of the reference composites (sum of drops -> measured drop): '
              + ', '.join(f'{total:.4g} -> {actual:.4g}' for total, actual in composites)
              + f'; drop_interaction {bank.profiles.accuracy_interaction:.4g}', logger='current')
    return metrics


def reference_composite_damage(drops: Mapping[str, Mapping[float, float]], teacher_metric: float,
                               metrics: Mapping[str, float], order: Sequence[str],
                               sparsities: Sequence[float] | None = None) -> list[tuple[float, float]]:
    """``(D, measured drop)`` of each evaluated composite with every block at one sparsity ``s > 0`` (the reference
    composites :func:`fit_drop_interaction` fits), ``D`` the sum of its blocks' drops at ``s``.

    Args:
        drops: Block -> sparsity -> accuracy drop (the denoised ones, as the estimates use them).
        teacher_metric: The teacher's metric on the profiling split.
        metrics: Composite key (:func:`_key`, sparsities in block order) -> metric, e.g. the accuracy cache's.
        order: The blocks in the keys' order.
        sparsities: The reference sparsities; None: every uniform composite found in ``metrics``.
    """
    if sparsities is None:
        sparsities = sorted({float(key.split(',')[0]) for key in metrics
                             if len(set(key.split(','))) == 1 and float(key.split(',')[0]) > 0})
    return [(math.fsum(drops[name][s] for name in order), teacher_metric - metrics[_key({b: s for b in order}, order)])
            for s in sparsities if s > 0]


def fit_drop_interaction(composites: Sequence[tuple[float, float]]) -> float:
    """Least-squares ``c >= 0`` of ``actual = D + c D^2`` over ``(D, actual)`` pairs of reference composites.

    Args:
        composites: Per composite, the sum ``D`` of its blocks' (denoised) drops and its measured drop
            (teacher metric minus its own).

    Returns:
        ``c``; 0.0 without a composite whose drops sum above zero, or when the composites lost less than their sums.
    """
    weight = math.fsum(total ** 4 for total, _ in composites if total > 0)
    if weight <= 0:
        return 0.0
    fitted = math.fsum((actual - total) * total ** 2 for total, actual in composites if total > 0) / weight
    return max(0.0, fitted)


def estimate_noise(replicates: Mapping[tuple[str, float], Sequence[float]],
                   sparsities: Sequence[float]) -> tuple[float | None, str]:
    """The standard error of one mean accuracy drop, and how it was estimated (see the module docstring).

    Args:
        replicates: (block, sparsity) -> the drop measured in each reference composite.
        sparsities: The bank's sparsities (increasing, starting with 0.0).

    Returns:
        ``(noise, method)``; ``noise`` is None when it cannot be estimated (one reference and one block).
    """
    pairs = {key: list(values) for key, values in replicates.items() if key[1] > 0}
    counts = {len(values) for values in pairs.values()}
    if not pairs:
        return None, 'no pruned descendant'
    if max(counts) >= 2:
        squares = dof = 0.0
        for values in pairs.values():
            if len(values) >= 2:
                mean = math.fsum(values) / len(values)
                squares += math.fsum((v - mean) ** 2 for v in values)
                dof += len(values) - 1
        replicates_per_drop = max(counts)
        return (math.sqrt(squares / dof / replicates_per_drop),
                f'pooled standard error over {replicates_per_drop} reference composites')
    lowest = min(s for s in sparsities if s > 0)
    values = [v[0] for (_, sparsity), v in pairs.items() if sparsity == lowest]
    if len(values) < 2:
        return None, 'one reference composite and one block: no estimate, drops are not thresholded'
    mean = math.fsum(values) / len(values)
    return (math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)),
            f'one reference composite: spread over blocks of the drops at sparsity {lowest:g}')


def isotonic_non_decreasing(values: Sequence[float]) -> list[float]:
    """Least-squares non-decreasing fit of ``values`` (pool-adjacent-violators, equal weights)."""
    blocks: list[list[float]] = []  # [sum, count] of each pooled run
    for value in values:
        blocks.append([float(value), 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    fitted: list[float] = []
    for total, count in blocks:
        fitted.extend([total / count] * int(count))
    return fitted


def denoise_drops(raw: Mapping[str, Mapping[float, float]], threshold: float) -> dict[str, dict[float, float]]:
    """Per block: isotonic in sparsity (bounded below by ``drop(0.0) = 0``), then drops ``<= threshold`` -> 0.

    Args:
        raw: Block -> sparsity -> raw mean drop.
        threshold: Drops up to this value count as zero (>= 0).

    Returns:
        Block -> sparsity -> denoised drop; sparsity 0.0 is exactly 0.0.
    """
    if not threshold >= 0:
        raise ValueError(f'threshold must be a number >= 0 (metric units), got {threshold!r}')
    denoised: dict[str, dict[float, float]] = {}
    for name, by_sparsity in raw.items():
        order = sorted(s for s in by_sparsity if s > 0)
        fitted = isotonic_non_decreasing([by_sparsity[s] for s in order])
        denoised[name] = {s: (value if value > threshold else 0.0) for s, value in zip(order, fitted)}
        if 0.0 in by_sparsity:
            denoised[name][0.0] = 0.0
        denoised[name] = dict(sorted(denoised[name].items()))
    return denoised


def _log_denoising(raw, denoised, noise, method, noise_threshold, denoise) -> None:
    pruned = [(name, s) for name, by_s in raw.items() for s in by_s if s > 0]
    negative = sum(raw[n][s] < 0 for n, s in pruned)
    zeroed = sum(denoised[n][s] == 0.0 for n, s in pruned)
    noise_text = 'not estimated' if noise is None else f'{noise:.4g}'
    if not denoise:
        print_log(f'accuracy noise {noise_text} ({method}); drops not denoised', logger='current')
        return
    print_log(f'accuracy noise: standard error of a drop {noise_text} ({method}); drops up to '
              f'{noise_threshold:g} x noise count as zero: {zeroed} of {len(pruned)} pruned descendants at 0 '
              f'({negative} raw drops were negative); per block non-decreasing in sparsity', logger='current')
    if noise is None:
        print_log('accuracy noise could not be estimated; only negative drops and monotonicity were corrected',
                  logger='current', level=logging.WARNING)
