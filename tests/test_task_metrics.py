"""The task-family adapter's metric picking: the metric a bank is scored by, and a detector that predicts nothing."""
import pytest
from mmengine.logging import MMLogger

from mmlego.engine.task_metrics import bank_metric, pick_metric, reported_metric


def test_pick_metric_prefers_the_named_one_then_the_task_default():
    metrics = {'coco/bbox_mAP': 0.3, 'coco/bbox_mAP_50': 0.5}
    assert pick_metric(metrics) == 'coco/bbox_mAP_50'
    assert pick_metric(metrics, 'coco/bbox_mAP') == 'coco/bbox_mAP'
    with pytest.raises(KeyError, match='set metric= to one of them'):
        pick_metric(metrics, 'mIoU')
    assert bank_metric(metrics, 'nope') == ('coco/bbox_mAP_50', 0.5)


def test_a_split_without_any_prediction_scores_zero_and_says_so(capsys):
    MMLogger.get_instance('mmlego_test_task_metrics')  # a current logger for print_log
    # mmdet's CocoMetric on an empty result set reports nothing: the worst score, not a crash of accuracy profiling
    assert reported_metric({}, 'coco/bbox_mAP_50') == 0.0
    assert 'counts as 0' in capsys.readouterr().out
    assert reported_metric({'coco/bbox_mAP_50': 0.25}, 'coco/bbox_mAP_50') == 0.25
    with pytest.raises(KeyError, match="not 'mIoU'"):  # metrics reported, but another one: a configuration error
        reported_metric({'coco/bbox_mAP_50': 0.25}, 'mIoU')
    # the same in a sweep row or the hook's record: scored 0, not "no metric"; without an evaluation, none
    assert bank_metric({}, 'mIoU') == ('mIoU', 0.0)  # (mmengine logs one warning text once)
    assert 'counts as 0' in capsys.readouterr().out
    assert bank_metric(None, 'coco/bbox_mAP_50') == (None, None)


class _SamplingModel:
    """Scores each sample with a random draw at inference, as mmaction2's TRN head samples frame relations."""

    def eval(self):
        return self

    def val_step(self, batch):
        import random

        import numpy as np
        import torch
        return [float(np.random.rand() + random.random() + torch.rand(1).item()) for _ in batch]


class _MeanEvaluator:
    def __init__(self):
        self.values = []

    def process(self, data_samples, data_batch):
        self.values.extend(data_samples)

    def evaluate(self, size):
        values, self.values = self.values[:size], []
        return {'acc/top1': sum(values) / len(values)}


def test_every_evaluation_draws_the_same_random_numbers_and_leaves_the_callers_alone():
    import random

    import numpy as np
    import torch

    from mmlego.engine.task_metrics import evaluate_model
    loader = [[0, 1], [2, 3], [4]]
    loader_dataset = type('Loader', (list,), {'dataset': list(range(5))})(loader)
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    untouched = random.random(), float(np.random.rand()), torch.rand(1).item()
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    first = evaluate_model(_SamplingModel(), loader_dataset, _MeanEvaluator())
    # the caller's generators continue as if nothing had been evaluated
    assert (random.random(), float(np.random.rand()), torch.rand(1).item()) == untouched
    assert evaluate_model(_SamplingModel(), loader_dataset, _MeanEvaluator()) == first  # the same draws
    assert evaluate_model(_SamplingModel(), loader_dataset, _MeanEvaluator(), seed=5) != first
    unseeded = [evaluate_model(_SamplingModel(), loader_dataset, _MeanEvaluator(), seed=None) for _ in range(2)]
    assert unseeded[0] != unseeded[1]  # seed=None: the process's generators, as they come
