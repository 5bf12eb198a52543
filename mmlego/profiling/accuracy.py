"""Accuracy drop of every (block, sparsity), by LegoDNN's reference-composite method.

For each reference composite ``e`` (by default LegoDNN's three: every block original, every block at the middle
sparsity, every block at the highest), ``drop(b, s) = mean_e[metric(e with b original) - metric(e with b at s)]``.
Identical composites are evaluated once; every evaluation is cached in a JSON file (written atomically after each
one) so an interrupted profiling run resumes where it stopped. The cache is used only for the same teacher, blocks
and descendant weights (retrained descendants invalidate it). ``references=('teacher',)`` is the cheap variant:
one composite, ``1 + B * (S - 1)`` evaluations.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Callable, Sequence

from torch import nn

from ..block_bank import BlockBank, teacher_fingerprint
from ..block_switcher import BlockSwitcher
from ..utils.atomic_io import atomic_write_json
from ..utils.progress import progress

logger = logging.getLogger(__name__)

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
                     cache_file: str | Path | None = None, show_progress: bool = True) -> dict[str, float]:
    """Fills ``accuracy_drop`` of every descendant and the teacher metric into ``bank.profiles``.

    Args:
        bank: The bank (descendants retrained).
        model: The live teacher the bank was built from; its blocks are switched and restored afterwards.
        evaluate: Returns the task metric of the model as it is (higher is better).
        references: Reference composites (see module docstring).
        metric_name: Stored with the profiles.
        cache_file: JSON cache of evaluated composites (resume).
        show_progress: Show a progress bar.

    Returns:
        Composite key (sparsities in block order) -> metric, for every evaluated composite.
    """
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
    if cache_path and cache_path.exists():
        cached = json.loads(cache_path.read_text())
        if all(cached.get(field) == value for field, value in identity.items()):
            metrics = {k: float(v) for k, v in cached['metrics'].items()}
            logger.info('accuracy profiling resumes with %d cached evaluations', len(metrics))
        else:
            logger.warning('ignoring %s: it was written for another teacher, blocks or descendant weights',
                           cache_path)
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
    for (name, sparsity), values in drops.items():
        bank.profiles.get(name, sparsity).accuracy_drop = sum(values) / len(values)
    return metrics
