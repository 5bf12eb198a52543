"""Descendants trained through the rest of the model: a loss on the composite's outputs, not only on the block's.

LegoDNN's retraining (the per-block steps of :mod:`.retraining`) teaches each descendant to reproduce its block's
output in the teacher. Errors of descendants then stack in a configuration (nothing teaches a block to serve the
blocks after it), and no descendant learns from the task. :class:`ThroughModel` adds, per batch, one forward and
backward of a *composite*: a copy of the teacher whose blocks run descendants of one configuration (the
configuration changes by batch: one sparsity for every block, or one drawn per block), with a loss on the model's
outputs, and one Adam step (its own optimizer per descendant, so the two losses' scales do not mix in Adam's
moments) on every trained descendant inside. The loss is either

* ``'distill'``: the relative squared error of the composite's outputs against the teacher's outputs of the same
  batch (taken from the teacher pass that already serves every block), or
* ``'task'``: the task's own training loss on the batch's labels (``task_loss(model, batch)``, given by the
  OpenMMLab glue), which can also learn what an unconverged teacher did not.

The frame and blocks at sparsity 0.0 stay the teacher's (frozen): only descendants learn. Cost per batch: one
composite forward and backward on top of LegoDNN's steps.
"""
from __future__ import annotations

import logging
import random
from typing import Any, Callable, Mapping, Sequence

import torch
from mmengine.logging import print_log
from torch import nn

from ..descendant_generation import Descendant
from .inputs import CompositeInputs, RetrainingError, TeacherForward, descendant_optimizer
from .losses import distill_loss

THROUGH_LOSSES = ('distill', 'task')
CONFIGURATIONS = ('uniform', 'random')
TaskLoss = Callable[[nn.Module, Any], torch.Tensor]


def check_through(loss: str | None, configurations: str) -> None:
    """Validates ``RetrainingConfig.through_model`` / ``through_configurations``."""
    if loss is not None and loss not in THROUGH_LOSSES:
        raise ValueError(f'unknown retraining through_model {loss!r}; choose None (LegoDNN: block outputs only) or '
                         f"one of {THROUGH_LOSSES} (distill: the composite's outputs to the teacher's; task: the task "
                         'loss on the labels)')
    if configurations not in CONFIGURATIONS:
        raise ValueError(f'unknown retraining through_configurations {configurations!r}; choose one of '
                         f'{CONFIGURATIONS} (uniform: every block at one sparsity; random: one drawn per block)')


class ThroughModel:
    """One composite forward and backward per batch with a loss on the model's outputs.

    Args:
        teacher: The frozen teacher (copied once inside :class:`CompositeInputs`).
        descendants: Block name -> sparsity -> descendant.
        trainees: Key -> descendant of those that train (others run frozen in the composite).
        loss: ``'distill'`` or ``'task'``.
        configurations: ``'uniform'`` (batch ``i`` runs every block at the ``i``-th trained sparsity, cycling) or
            ``'random'`` (each block draws its sparsity; every ``len(sparsities) + 1``-th batch runs all blocks at
            the highest, the configuration whose errors stack most).
        task_loss: ``task_loss(model, batch)`` -> the task's training loss (required for ``'task'``).
        composite: The :class:`CompositeInputs` to run (shared with composite inputs: one teacher copy); default:
            a new one.
        lr: Adam learning rate of the through steps (each :meth:`step` sets its rate).
        weight_decay: Adam weight decay.
    """

    def __init__(self, teacher: nn.Module, descendants: Mapping[str, Mapping[float, Descendant]],
                 trainees: Mapping[str, Descendant], loss: str, configurations: str = 'random',
                 task_loss: TaskLoss | None = None, composite: CompositeInputs | None = None, lr: float = 3e-4,
                 weight_decay: float = 0.0) -> None:
        check_through(loss, configurations)
        if loss == 'task' and task_loss is None:
            raise ValueError('through_model="task" needs a task_loss(model, batch) callable (the LegoDNN pipeline '
                             'gives the model\'s own loss); use through_model="distill" without labels')
        self.composite = composite or CompositeInputs(teacher, descendants)
        self.descendants = descendants
        self.loss, self.configurations, self.task_loss = loss, configurations, task_loss
        self.trainees = {key: d for key, d in trainees.items() if d.sparsity > 0}  # 0.0 runs the teacher's block
        self.sparsities = sorted({d.sparsity for d in self.trainees.values()})
        self.optimizers = {key: descendant_optimizer(d.module, lr, weight_decay) for key, d in self.trainees.items()}
        self.heldout_kind: str | None = None  # what the held-out loss measures, decided on the first batch

    def configuration(self, epoch: int, index: int) -> dict[str, float]:
        """Block -> sparsity of the composite of batch ``index`` of ``epoch`` (deterministic: resumes alike)."""
        if self.configurations == 'uniform':
            return self._all_at(self.sparsities[index % len(self.sparsities)])
        if index % (len(self.sparsities) + 1) == 0:
            top = self.sparsities[-1]
            return {name: top if top in by_s else max(by_s) for name, by_s in self.descendants.items()}
        rng = random.Random(epoch * 1_000_003 + index)
        return {name: rng.choice(sorted(by_s)) for name, by_s in self.descendants.items()}

    def _all_at(self, sparsity: float) -> dict[str, float]:
        """Every block at ``sparsity`` (a block without that descendant at its teacher's)."""
        return {name: sparsity if sparsity in by_s else 0.0 for name, by_s in self.descendants.items()}

    def _loss(self, config: Mapping[str, float], forward: TeacherForward, batch: Any, teacher_outputs: Any,
              kind: str) -> torch.Tensor:
        if kind == 'distill':
            _, outputs = self.composite.run(config, forward, batch, detach=False)
            return distill_loss(outputs, teacher_outputs)
        self.composite.configure(config)
        return self.task_loss(self.composite.model, batch)

    def step(self, epoch: int, index: int, forward: TeacherForward, batch: Any, teacher_outputs: Any,
             rate: float, skip: Sequence[str] = (),
             grad_sync: Callable[[nn.Module], None] | None = None) -> float | None:
        """One step of every trained descendant in this batch's composite; returns the loss (None: nothing to
        train there). ``skip``: keys whose training stopped; ``grad_sync``: called with each of them after the
        backward (data-parallel retraining: every rank draws the same configuration, then averages)."""
        config = self.configuration(epoch, index)
        keys = [key for key, d in self.trainees.items()
                if config.get(d.spec.name) == d.sparsity and key not in skip]
        if not keys:
            return None
        where = f'configuration {config}, epoch {epoch + 1}, batch {index}'
        try:
            loss = self._loss(config, forward, batch, teacher_outputs, self.loss)
            if not torch.isfinite(loss):
                raise RetrainingError(f'the {self.loss} loss through the model is {loss.item()} ({where}); lower '
                                      'train_cfg.retrain.lr or check the data')
            for key in keys:
                self.optimizers[key].zero_grad(set_to_none=True)
                for group in self.optimizers[key].param_groups:
                    group['lr'] = rate
            loss.backward()
            for key in keys:
                if grad_sync is not None:
                    grad_sync(self.trainees[key].module)
                self.optimizers[key].step()
        except RetrainingError:
            raise
        except Exception as error:
            raise RetrainingError(f'training through the model failed ({where}): {type(error).__name__}: '
                                  f'{error}') from error
        finally:  # descendants in the composite that do not train here (skipped, stopped) keep no gradient
            trained = {id(self.trainees[key].module) for key in keys}
            for module in self.composite.modules.values():
                if id(module) not in trained:
                    module.zero_grad(set_to_none=True)
        return float(loss.detach())

    def heldout_losses(self, forward: TeacherForward, batch: Any, teacher_outputs: Any) -> dict[str, float]:
        """Key -> the loss of the all-at-its-sparsity composite on one held-out batch: the training loss through
        the model (``'task'`` on held-out labels), or the distillation loss where the held-out batches carry no
        training targets (decided on the first batch, with a warning). Every descendant of one sparsity shares
        it, so they keep the same epoch: a configuration's descendants learned together."""
        if self.heldout_kind is None:
            self.heldout_kind = self._heldout_kind(forward, batch, teacher_outputs)
        losses = {}
        with torch.no_grad():
            for sparsity in self.sparsities:
                losses[sparsity] = float(self._loss(self._all_at(sparsity), forward, batch, teacher_outputs,
                                                    self.heldout_kind))
        return {key: losses[d.sparsity] for key, d in self.trainees.items()}

    def _heldout_kind(self, forward: TeacherForward, batch: Any, teacher_outputs: Any) -> str:
        if self.loss == 'distill':
            return 'distill'
        try:
            with torch.no_grad():
                self._loss({name: 0.0 for name in self.descendants}, forward, batch, teacher_outputs, 'task')
        except Exception as error:  # e.g. mmpose's val pipeline generates no heatmap targets
            print_log(f'the held-out batches carry no training targets for the task loss ({type(error).__name__}: '
                      f'{error}); the best retraining epoch is chosen by the composites\' distillation loss',
                      logger='current', level=logging.WARNING)
            return 'distill'
        return 'task'
