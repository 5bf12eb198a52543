"""The task-family adapter: which metric scores a model, and how one evaluation runs.

Every OpenMMLab 2.x family already has a data preprocessor, ``val_step`` and an evaluator; the only family
knowledge LegoDNN needs is which of the evaluator's metrics to maximize. Configs can name it (``metric=...``).
"""
from __future__ import annotations

import logging
from typing import Any, Iterable

import torch

# Preferred metric per task family and dataset format, higher is better; the first one the evaluator reports wins.
DEFAULT_METRICS = (
    'coco/bbox_mAP_50', 'pascal_voc/mAP',  # mmdet: CocoMetric, VOCMetric
    'mIoU',  # mmseg: IoUMetric
    'coco/AP', 'PCK', 'PCKh',  # mmpose: CocoMetric, PCKAccuracy, MpiiPCKAccuracy
    'acc/top1',  # mmaction: AccMetric
)


def pick_metric(metrics: dict[str, Any], metric: str | None = None) -> str:
    """The metric key to optimize: ``metric`` if given, else the first of :data:`DEFAULT_METRICS` reported."""
    if metric is not None:
        if metric not in metrics:
            raise KeyError(f'the evaluator reports {sorted(metrics)}, not {metric!r}; set metric= to one of them')
        return metric
    for key in DEFAULT_METRICS:
        if key in metrics:
            return key
    raise KeyError(f'none of the known task metrics {DEFAULT_METRICS} is reported by the evaluator '
                   f'({sorted(metrics)}); set metric= in the LegoDNN loop config')


def reported_metric(metrics: dict[str, Any], key: str) -> float:
    """``metrics[key]``, or 0.0 (with a warning) when the evaluator reported nothing at all.

    mmdet's ``CocoMetric`` returns no metric when the model predicted no box on the whole split ("The testing results
    of the whole dataset is empty."): a heavily pruned detector, e.g. LegoDNN's all-max-sparsity reference composite,
    does that, and its score is the worst one, 0, not a crash of accuracy profiling.

    Raises:
        KeyError: The evaluator reported metrics, but not ``key``.
    """
    if not metrics:
        from mmengine.logging import print_log
        print_log(f'the evaluator reported no metric (a detector that predicted nothing on the whole split?): '
                  f'{key} counts as 0', logger='current', level=logging.WARNING)
        return 0.0
    if key not in metrics:
        raise KeyError(f'the evaluator reports {sorted(metrics)}, not {key!r}')
    return float(metrics[key])


def bank_metric(metrics: dict[str, Any] | None, preferred: str | None) -> tuple[str | None, float | None]:
    """The evaluator's value of the bank's metric (``preferred``), else of the task's default one.

    Returns:
        ``(name, value)``; ``(preferred, 0.0)`` with a warning when the evaluator ran and reported nothing at all
        (as :func:`reported_metric`: a detector that predicted no box); ``(None, None)`` without an evaluation
        (``metrics`` None) or when the evaluator reported no metric a bank could be scored by.
    """
    if metrics is None:
        return None, None
    if not metrics:
        return preferred, reported_metric({}, preferred or 'the metric')
    if preferred not in metrics:
        try:
            preferred = pick_metric(dict(metrics))
        except KeyError:
            return None, None
    return preferred, float(metrics[preferred])


def evaluate_model(model: torch.nn.Module, dataloader: Iterable, evaluator: Any,
                   max_batches: int | None = None, seed: int | None = 0) -> dict[str, float]:
    """Runs ``model.val_step`` over ``dataloader`` and returns the evaluator's metrics.

    Every evaluation draws the same random numbers (``seed``; None: the process's, as they come): a model that
    samples at inference (mmaction2's TRN head) is compared with the same draws across composites
    (:func:`mmlego.utils.random_state.same_random_numbers`).
    """
    from ..utils.random_state import same_random_numbers
    with same_random_numbers(seed):
        return _evaluate(model, dataloader, evaluator, max_batches)


def _evaluate(model: torch.nn.Module, dataloader: Iterable, evaluator: Any, max_batches: int | None) -> dict:
    model.eval()
    seen = 0
    with torch.no_grad():
        for index, batch in enumerate(dataloader):
            if max_batches is not None and index >= max_batches:
                break
            outputs = model.val_step(batch)
            evaluator.process(data_samples=outputs, data_batch=batch)
            seen += len(outputs)
    if max_batches is not None:
        # Data parallel: the evaluator gathers every rank's results and keeps the first `size`: all of them.
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            device = 'cuda' if dist.get_backend() == 'nccl' else 'cpu'  # nccl reduces CUDA tensors only
            total = torch.tensor([seen], dtype=torch.int64, device=device)
            dist.all_reduce(total)
            seen = int(total.item())
    if seen == 0:
        raise ValueError('the val dataloader yielded no sample; check the val dataset of the config')
    size = len(dataloader.dataset) if max_batches is None else seen
    return evaluator.evaluate(size)
