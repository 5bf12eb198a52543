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
