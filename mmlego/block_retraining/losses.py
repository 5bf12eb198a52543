"""Losses of block retraining: a descendant's output against its block's, a model's outputs against the teacher's."""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

from .inputs import RetrainingError

LOSSES = ('mse', 'l1', 'smooth_l1', 'kd')


def feature_loss(kind: str, output: torch.Tensor, target: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """The retraining loss between a descendant's output and its block's output."""
    if kind == 'mse':
        return F.mse_loss(output, target)
    if kind == 'l1':
        return F.l1_loss(output, target)
    if kind == 'smooth_l1':
        return F.smooth_l1_loss(output, target)
    log_p = F.log_softmax(output / temperature, dim=1)
    q = F.softmax(target / temperature, dim=1)
    return F.kl_div(log_p, q, reduction='batchmean') * temperature ** 2


def tensors_of(outputs: Any) -> list[torch.Tensor]:
    """The tensors of a (nested) model output, in a fixed order."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, Mapping):
        return [t for key in sorted(outputs) for t in tensors_of(outputs[key])]
    if isinstance(outputs, (list, tuple)):
        return [t for item in outputs for t in tensors_of(item)]
    return []


def require_same_shape(output: torch.Tensor, target: torch.Tensor, what: str, fix: str) -> None:
    """RetrainingError unless a composite's ``output`` has the teacher's ``target`` shape: after a data-dependent
    step (a two-stage detector's proposals) a composite's tensors are not the teacher's one to one."""
    if output.shape != target.shape:
        raise RetrainingError(
            f'{what} has shape {list(output.shape)} in a composite and {list(target.shape)} in the teacher: it runs '
            'after a data-dependent step (e.g. a two-stage detector\'s proposals), so the composite\'s tensors are '
            f'not the teacher\'s one to one; use {fix}')


def distill_loss(outputs: Any, targets: Any) -> torch.Tensor:
    """Mean over output tensors of ``||out - target||^2 / ||target||^2`` (scale-free across tasks and heads)."""
    pairs = list(zip(tensors_of(outputs), tensors_of(targets)))
    if not pairs:
        raise RetrainingError('the model forward returned no tensor to distill; through_model="distill" needs the '
                              'tensor path to return tensors (or nested lists/tuples/dicts of them)')
    for out, target in pairs:
        require_same_shape(out, target, 'an output of the model', 'train_cfg.retrain.through_model="task"')
    terms = [(out.float() - target.float()).pow(2).sum() / target.float().pow(2).sum().clamp_min(1e-12)
             for out, target in pairs]
    return torch.stack(terms).mean()
