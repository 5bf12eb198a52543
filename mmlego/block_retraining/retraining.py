"""Block retraining: one frozen teacher pass per batch trains every descendant of every block.

Forward hooks capture each block's input and output during the teacher's forward; every descendant then takes
one optimizer step towards its block's output from that same pass. Features are streamed per batch, never kept.

Batch norm: descendants train with their batch norms in eval mode (running statistics are the teacher's, pruned
with the channels; the affine parameters still learn). A descendant then behaves identically in training and in
deployment, and small batches cannot make the statistics drift, which the reference code suffered from.

Checkpoints are kept by the loss on held-out batches, not by training loss, and the untrained pruned weights
(epoch 0) compete: their held-out loss is measured before the first epoch, and they are kept if no epoch beats
them. Descendants that torch-pruning left whole at a sparsity > 0 (``plan.unpruned_reason``) are not trained:
they stay the teacher's block, as sparsity 0.0 does.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import torch
from mmengine.logging import print_log
from torch import nn

from ..descendant_generation import Descendant
from ..utils.progress import progress
from .heldout import evaluate_descendants
from .inputs import (CompositeInputs, FeatureCapture, RetrainingError, TeacherForward, check_inputs,
                     descendant_optimizer, uses_composite)
from .losses import LOSSES, feature_loss, require_same_shape
from .state import RetrainingState
from .through_model import TaskLoss, ThroughModel, check_through

LR_SCHEDULES = ('constant', 'cosine')


@dataclass
class RetrainingConfig:
    """Block retraining settings.

    Attributes:
        epochs: Passes over the training batches (LegoDNN used 2-65 depending on the model).
        lr: Adam learning rate (LegoDNN: 3e-4); the peak rate of a decaying ``lr_schedule``.
        lr_schedule: ``'constant'`` (LegoDNN) or ``'cosine'``: per step from ``lr`` down to ``lr * min_lr_ratio`` at
            the last step of the last epoch (a function of the step, so a resumed run continues the same curve).
        min_lr_ratio: Final rate of the ``'cosine'`` schedule as a fraction of ``lr``.
        weight_decay: Adam weight decay.
        loss: Feature loss between descendant and block output: ``'mse'`` (LegoDNN), ``'l1'``, ``'smooth_l1'``, or
            ``'kd'`` (KL divergence of channel softmaxes at ``kd_temperature``, for blocks that output logits).
        kd_temperature: Temperature of the ``'kd'`` loss.
        retrain_original: Also train sparsity 0.0 (off by default: the original block stays the teacher's).
        max_batches_per_epoch: Stop an epoch early (None: the whole loader).
        inputs: What each descendant is fed: ``'teacher'`` (LegoDNN: its block's input in the teacher),
            ``'composite'`` (the input the descendants upstream at its sparsity give it, see
            :class:`~mmlego.block_retraining.inputs.CompositeInputs`; the target stays the teacher's block
            output) or ``'mixed'`` (the two alternating by batch; held-out loss: their mean).
        through_model: Also train the descendants through the rest of the model, one composite per batch
            (:class:`~mmlego.block_retraining.through_model.ThroughModel`): ``None`` (LegoDNN), ``'distill'``
            (the composite's outputs to the teacher's) or ``'task'`` (the task loss on the labels). The held-out
            loss that picks the best epoch is then the all-at-its-sparsity composite's (for ``'task'`` the task
            loss if the held-out batches carry targets, else the distillation loss).
        through_configurations: The composites trained through: ``'random'`` (a sparsity drawn per block, every
            few batches all at the highest) or ``'uniform'`` (all blocks at one sparsity, cycling).
        through_lr_ratio: Rate of the steps through the model as a fraction of the blocks' own (their Adam takes
            steps of about the rate whatever the loss's size, so a loss already near its floor still moves the
            weights by that much: on SimpleBaseline a ratio of 1 made the composites worse, see README).
    """

    epochs: int = 1
    lr: float = 3e-4
    lr_schedule: str = 'constant'
    min_lr_ratio: float = 0.01
    weight_decay: float = 0.0
    loss: str = 'mse'
    kd_temperature: float = 4.0
    retrain_original: bool = False
    max_batches_per_epoch: int | None = None
    inputs: str = 'teacher'
    through_model: str | None = None
    through_configurations: str = 'random'
    through_lr_ratio: float = 1.0

    def __post_init__(self) -> None:
        check_inputs(self.inputs)
        check_through(self.through_model, self.through_configurations)
        if isinstance(self.through_lr_ratio, bool) or not isinstance(self.through_lr_ratio, (int, float)) \
                or not self.through_lr_ratio > 0:
            raise ValueError(f'through_lr_ratio must be a number > 0, got {self.through_lr_ratio!r}')
        if self.loss not in LOSSES:
            raise ValueError(f'unknown retraining loss {self.loss!r}; choose one of {LOSSES}')
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f'unknown retraining lr_schedule {self.lr_schedule!r}; choose one of {LR_SCHEDULES}')
        if isinstance(self.min_lr_ratio, bool) or not isinstance(self.min_lr_ratio, (int, float)) \
                or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f'min_lr_ratio must be a number in [0, 1], got {self.min_lr_ratio!r}')
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1 \
                or isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise ValueError(f'epochs must be an integer >= 1 and lr a number > 0, got epochs={self.epochs!r}, '
                             f'lr={self.lr!r}')
        limit = self.max_batches_per_epoch
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f'max_batches_per_epoch must be an integer >= 1 or None (the whole loader), got '
                             f'{limit!r}')

    def recorded(self) -> dict[str, Any]:
        """The settings as run records and resume compares them: keys added since (at their defaults, which
        behave as before they existed) are left out, so runs recorded before them still resume."""
        settings = dict(self.__dict__)
        for key, default in (('inputs', 'teacher'), ('through_model', None)):
            if settings.get(key, default) == default:
                settings.pop(key, None)
        if 'through_model' not in settings:
            settings.pop('through_configurations', None)
            settings.pop('through_lr_ratio', None)
        return settings


@dataclass
class RetrainingReport:
    """What retraining did.

    Attributes:
        epochs_run: Epochs run in this call (0 if everything was already done).
        history: One dict per completed epoch: ``{'epoch', 'train': {key: loss}, 'val': {key: loss}}`` with keys
            ``'<block>@<sparsity>'``.
        best_val: Key -> best held-out loss; the descendants hold the weights of that epoch.
        best_epoch: Key -> the epoch whose weights were kept (0: the untrained pruned weights).
        initial_val: Key -> held-out loss of the untrained pruned weights (epoch 0).
        skipped: Keys of the descendants not retrained because pruning left their block whole.
        stopped: Key -> why its retraining stopped (a NaN/inf loss): it keeps its best weights so far.
    """

    epochs_run: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_val: dict[str, float] = field(default_factory=dict)
    best_epoch: dict[str, int] = field(default_factory=dict)
    initial_val: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    stopped: dict[str, str] = field(default_factory=dict)


def descendant_key(block: str, sparsity: float) -> str:
    """``'<block>@<sparsity>'``, the key of one descendant in reports and state files."""
    return f'{block}@{sparsity:g}'


def learning_rate(config: RetrainingConfig, epoch: int, index: int, batches_per_epoch: int | None) -> float:
    """The rate of the step ``index`` (0-based) of ``epoch`` (0-based) under ``config.lr_schedule``.

    Without a known epoch length the cosine schedule moves once per epoch.
    """
    if config.lr_schedule == 'constant':
        return config.lr
    if batches_per_epoch:
        progress_done = (epoch * batches_per_epoch + min(index, batches_per_epoch - 1)) \
            / max(config.epochs * batches_per_epoch - 1, 1)
    else:
        progress_done = epoch / max(config.epochs - 1, 1)
    floor = config.lr * config.min_lr_ratio
    return floor + 0.5 * (config.lr - floor) * (1 + math.cos(math.pi * min(progress_done, 1.0)))


def freeze_batch_norm(module: nn.Module) -> None:
    """Puts every batch norm of ``module`` in eval mode (running statistics fixed, affine params trainable)."""
    for sub in module.modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm):
            sub.eval()


def _limited(batches: Iterable[Any], limit: int | None) -> Iterator[Any]:
    for i, batch in enumerate(batches):
        if limit is not None and i >= limit:
            return
        yield batch


def retrain_descendants(teacher: nn.Module,
                        descendants: dict[str, dict[float, Descendant]],
                        train_batches: Iterable[Any],
                        val_batches: Iterable[Any] | None = None,
                        teacher_forward: TeacherForward = lambda model, batch: model(batch),
                        config: RetrainingConfig | None = None,
                        state_dir: str | None = None,
                        grad_sync: Callable[[nn.Module], None] | None = None,
                        loss_sync: Callable[[dict[str, float]], dict[str, float]] | None = None,
                        show_progress: bool = True,
                        task_loss: TaskLoss | None = None) -> RetrainingReport:
    """Retrains all descendants from one teacher pass per batch.

    Args:
        teacher: The frozen teacher (put in eval mode; not modified).
        descendants: Block name -> sparsity -> descendant (trained in place).
        train_batches: Re-iterable training batches (e.g. a DataLoader).
        val_batches: Held-out batches; the best epoch by held-out loss is kept, the untrained weights (epoch 0)
            included. Without them the last epoch is kept (a warning says so).
        teacher_forward: Runs the teacher on one batch: ``teacher_forward(teacher, batch)``.
        config: Settings (defaults: :class:`RetrainingConfig`).
        state_dir: Where per-epoch state is written; a rerun with the same directory resumes after the last
            completed epoch.
        grad_sync: Called with each descendant after ``backward`` and before the step (e.g. to all-reduce
            gradients in data-parallel retraining).
        loss_sync: Maps this process's held-out losses to the ones every process agrees on (e.g. their mean over
            data-parallel ranks), so that all ranks keep the same best epoch.
        show_progress: Show progress bars.
        task_loss: ``task_loss(model, batch)`` -> the task's training loss on ``batch`` (for
            ``config.through_model == 'task'``).

    Returns:
        Losses per epoch and the best held-out losses.

    Raises:
        RetrainingError: The training batches are empty (raised before anything runs or is written), every
            descendant's loss is not finite, or a descendant's step failed (names the block, sparsity, epoch and
            batch). One descendant whose loss is not finite only stops that one (``report.stopped``, a warning).
    """
    config = config or RetrainingConfig()
    if _length(train_batches, config) == 0 or config.max_batches_per_epoch == 0:  # before any forward or file
        raise RetrainingError('the training dataloader yielded no batch; check its dataset and sampler (a batch '
                              'size larger than the dataset with drop_last=True yields none)')
    if val_batches is None:
        print_log('no held-out batches given: keeping each descendant\'s last epoch, not its best',
                  logger='current', level=logging.WARNING)
    trainees, skipped = {}, []
    for name, by_sparsity in descendants.items():
        for sparsity, descendant in by_sparsity.items():
            if sparsity > 0 and descendant.plan.unpruned_reason:
                skipped.append(descendant_key(name, sparsity))
            elif sparsity > 0 or config.retrain_original:
                trainees[descendant_key(name, sparsity)] = descendant
    if skipped:
        print_log(f'not retraining {len(skipped)} descendants that pruning left whole (they stay the teacher\'s '
                  f'blocks): {", ".join(skipped)}', logger='current')
    report = RetrainingReport(skipped=skipped)
    if not trainees:
        print_log('no descendant to retrain', logger='current', level=logging.WARNING)
        return report
    specs = [next(iter(by_sparsity.values())).spec for by_sparsity in descendants.values()]
    capture = FeatureCapture(teacher, specs)
    optimizers = {key: descendant_optimizer(d.module, config.lr, config.weight_decay) for key, d in trainees.items()}
    composite = CompositeInputs(teacher, descendants) if config.inputs != 'teacher' else None
    through = ThroughModel(teacher, descendants, trainees, config.through_model, config.through_configurations,
                           task_loss, composite, config.lr * config.through_lr_ratio, config.weight_decay) \
        if config.through_model else None
    saved_optimizers = dict(optimizers, **{f'{key}#through': optimizer
                                           for key, optimizer in (through.optimizers if through else {}).items()})
    state = RetrainingState(state_dir, sorted(trainees), config.recorded())
    start = state.load(trainees, saved_optimizers, report)
    teacher.eval()
    if start == 0 and val_batches is not None:  # the untrained pruned weights compete for the best epoch
        initial = evaluate_descendants(capture, trainees, val_batches, teacher_forward, config, composite, through)
        state.set_initial(trainees, loss_sync(initial) if loss_sync is not None else initial)
    for epoch in range(start, config.epochs):
        for descendant in trainees.values():
            descendant.module.train()
            freeze_batch_norm(descendant.module)
        train_sums, count = dict.fromkeys(trainees, 0.0), 0
        through_sum, through_count = 0.0, 0
        batches = _limited(train_batches, config.max_batches_per_epoch)
        per_epoch = _length(train_batches, config)
        for index, batch in enumerate(progress(batches, f'retraining epoch {epoch + 1}/{config.epochs}',
                                               enabled=show_progress, total=per_epoch)):
            features = capture.run(teacher_forward, batch)
            rate = learning_rate(config, epoch, index, per_epoch)
            for optimizer in optimizers.values():
                for group in optimizer.param_groups:
                    group['lr'] = rate
            where = f'at epoch {epoch + 1}, batch {index}'
            if composite is not None and uses_composite(config.inputs, index):
                losses = _composite_steps(composite, trainees, optimizers, features, batch, teacher_forward,
                                          config, grad_sync, state, report, where)
            else:
                losses = _teacher_input_steps(trainees, optimizers, features, config, grad_sync, state, report,
                                              where)
            for key, loss in losses.items():
                train_sums[key] += loss
            if through is not None:
                through_loss = through.step(epoch, index, teacher_forward, batch, capture.outputs,
                                            rate * config.through_lr_ratio, skip=tuple(report.stopped),
                                            grad_sync=grad_sync)
                if through_loss is not None:
                    through_sum, through_count = through_sum + through_loss, through_count + 1
            if len(report.stopped) == len(trainees):
                raise RetrainingError(f'every descendant\'s loss is not finite (first: {next(iter(report.stopped))}, '
                                      f'{next(iter(report.stopped.values()))}): the batches or the teacher\'s outputs '
                                      'hold NaN/inf; check the data pipeline and the teacher checkpoint')
            count += 1
        if count == 0:
            raise RetrainingError('the training dataloader yielded no batch; check its dataset and sampler')
        val = evaluate_descendants(capture, trainees, val_batches, teacher_forward, config, composite, through) \
            if val_batches is not None else {key: math.nan for key in trainees}
        if loss_sync is not None and val_batches is not None:
            val = loss_sync(val)
        record = dict(epoch=epoch + 1, val=val, train={k: math.nan if k in report.stopped else v / count
                                                       for k, v in train_sums.items()})
        if through_count:
            record['through_train'] = through_sum / through_count
        report.history.append(record)
        report.epochs_run += 1
        state.save_epoch(epoch + 1, trainees, saved_optimizers, record, use_val=val_batches is not None)
        print_log(f'retraining epoch {epoch + 1}: mean train loss {_mean(record["train"].values()):.5g}, mean '
                  f'held-out loss {_mean(val.values()):.5g}', logger='current', level=logging.DEBUG)
    state.restore_best(trainees)
    report.best_val, report.best_epoch = dict(state.best_val), dict(state.best_epoch)
    report.initial_val = dict(state.initial_val)
    kept = sorted(key for key, epoch in state.best_epoch.items() if epoch == 0)
    if kept:
        print_log(f'{len(kept)} of {len(trainees)} descendants keep their untrained pruned weights (no epoch '
                  f'beat their held-out loss): {", ".join(kept)}', logger='current')
    for descendant in trainees.values():
        descendant.module.eval()
    return report


def _teacher_input_steps(trainees, optimizers, features, config, grad_sync, state, report, where) -> dict[str, float]:
    """One step of every descendant on its block's input in the teacher (LegoDNN); returns key -> loss."""
    losses = {}
    for key, descendant in trainees.items():
        if key in report.stopped:
            continue
        x, y = features[descendant.spec.name]
        try:
            loss = feature_loss(config.loss, descendant.module(x), y, config.kd_temperature)
            if not torch.isfinite(loss):
                _stop(key, descendant, state, report, f'loss {loss.item()} {where}')
                continue
            optimizers[key].zero_grad(set_to_none=True)
            loss.backward()
            if grad_sync is not None:
                grad_sync(descendant.module)
            optimizers[key].step()
        except Exception as error:
            raise RetrainingError(f'retraining descendant {key} failed {where}: {type(error).__name__}: '
                                  f'{error}') from error
        losses[key] = float(loss.detach())
    return losses


def _composite_steps(composite, trainees, optimizers, features, batch, teacher_forward, config, grad_sync, state,
                     report, where) -> dict[str, float]:
    """One step of every descendant on its input in the all-at-its-sparsity composite: one composite forward and
    one backward per sparsity (the inputs are detached per block, so the summed loss trains each alone)."""
    by_sparsity: dict[float, dict[str, Descendant]] = {}
    for key, descendant in trainees.items():
        by_sparsity.setdefault(descendant.sparsity, {})[key] = descendant
    losses = {}
    for sparsity, group in sorted(by_sparsity.items()):
        try:
            outputs = composite.outputs(sparsity, teacher_forward, batch)
            total = []
            for key, descendant in group.items():
                if key in report.stopped:
                    continue
                output, target = outputs[descendant.spec.name], features[descendant.spec.name][1]
                require_same_shape(output, target, f'block {descendant.spec.name}\'s output',
                                   'train_cfg.retrain.inputs="teacher"')
                loss = feature_loss(config.loss, output, target, config.kd_temperature)
                if not torch.isfinite(loss):
                    _stop(key, descendant, state, report, f'loss {loss.item()} on composite inputs {where}')
                    continue
                total.append(loss)
                losses[key] = float(loss.detach())
            if not total:
                continue
            stepped = [key for key in group if key in losses]
            for key in stepped:
                optimizers[key].zero_grad(set_to_none=True)
            torch.stack(total).sum().backward()
            for key in stepped:
                if grad_sync is not None:
                    grad_sync(group[key].module)
                optimizers[key].step()
        except Exception as error:
            raise RetrainingError(f'retraining the descendants of sparsity {sparsity:g} on composite inputs failed '
                                  f'{where}: {type(error).__name__}: {error}') from error
    return losses


def _stop(key: str, descendant: Descendant, state: RetrainingState, report: RetrainingReport, why: str) -> None:
    """Stops one descendant's retraining (its loss is not finite); the others train on."""
    report.stopped[key] = why
    if key in state.best_state:  # the best weights so far (epoch 0: the untrained pruned ones)
        descendant.module.load_state_dict(state.best_state[key])
    print_log(f'retraining of descendant {key} stopped: {why} is not finite; it keeps its best weights so far '
              f'(epoch {state.best_epoch.get(key, "none")}), the other descendants train on. Check the data '
              '(inf/NaN inputs) or lower train_cfg.retrain.lr', logger='current', level=logging.WARNING)


def _length(batches: Iterable[Any], config: RetrainingConfig) -> int | None:
    try:
        total = len(batches)  # type: ignore[arg-type]
    except TypeError:
        return config.max_batches_per_epoch
    return min(total, config.max_batches_per_epoch) if config.max_batches_per_epoch else total


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan
