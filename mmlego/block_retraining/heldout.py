"""Held-out losses of the descendants: what picks each one's best retraining epoch."""
from __future__ import annotations

from typing import Any, Iterable

import torch

from ..descendant_generation import Descendant
from .inputs import CompositeInputs, FeatureCapture, RetrainingError, TeacherForward
from .losses import feature_loss, require_same_shape
from .through_model import ThroughModel


def evaluate_descendants(capture: FeatureCapture, trainees: dict[str, Descendant], batches: Iterable[Any],
                         teacher_forward: TeacherForward, config: Any,
                         composite: CompositeInputs | None = None,
                         through: ThroughModel | None = None) -> dict[str, float]:
    """Mean held-out loss of every descendant (eval mode, no grad) on the inputs ``config.inputs`` trains on
    (``'mixed'``: the mean of the teacher's and the composite's); with ``through``, the all-at-its-sparsity
    composite's loss through the model instead (:meth:`ThroughModel.heldout_losses`)."""
    sums, count = dict.fromkeys(trainees, 0.0), 0
    for descendant in trainees.values():
        descendant.module.eval()
    modes = ('teacher',) * (config.inputs != 'composite') + ('composite',) * (config.inputs != 'teacher')
    with torch.no_grad():
        for batch in batches:
            features = capture.run(teacher_forward, batch)
            count += 1
            if through is not None:
                for key, value in through.heldout_losses(teacher_forward, batch, capture.outputs).items():
                    sums[key] += value
                continue
            composites = {s: composite.outputs(s, teacher_forward, batch)
                          for s in sorted({d.sparsity for d in trainees.values()})} if 'composite' in modes else {}
            for key, descendant in trainees.items():
                x, y = features[descendant.spec.name]
                for mode in modes:
                    output = descendant.module(x) if mode == 'teacher' else composites[descendant.sparsity][
                        descendant.spec.name]
                    if mode == 'composite':
                        require_same_shape(output, y, f'block {descendant.spec.name}\'s output',
                                           'train_cfg.retrain.inputs="teacher"')
                    sums[key] += float(feature_loss(config.loss, output, y, config.kd_temperature)) / len(modes)
    if count == 0:
        raise RetrainingError('the held-out dataloader yielded no batch; check its dataset')
    return {key: value / count for key, value in sums.items()}
