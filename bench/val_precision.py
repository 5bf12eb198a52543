"""How precise is a teacher's metric on its val split? The metric on two disjoint random halves, many times.

Issue 13 asks for validation sets "large enough that a metric moves less than 0.5 points between two evaluations of
different random halves" (0-100 scale). This runs the teacher once over the split, keeps the evaluator's per-sample
results, and for ``--splits`` random partitions of the samples into two halves computes the metric on each half
from those results (the task package's own ``compute_metrics``; COCO metrics restricted to the half's images), and
reports the absolute differences: median, mean, 90th percentile and max, and the standard error of the whole split
that the spread implies (the difference of two halves has twice the variance of one half, each half twice the
variance of the whole: SE(whole) ~ sd(difference) / 2).

    .venv/bin/python bench/val_precision.py --teachers bench/results/teachers.json [--only tsn fcn] [--splits 50] \
        [--split val] [--out bench/results/val_precision.json]
"""
import argparse
import copy
import json
import os.path as osp
import random
import statistics
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from mmlego.utils.atomic_io import atomic_write_json  # noqa: E402

TARGET_POINTS = 0.5


def _sample_key(result: dict, index: int):
    """What identifies a sample's image across the results: COCO metrics group instances by image."""
    if isinstance(result, tuple) and result and isinstance(result[0], dict):  # mmpose's CocoMetric: (pred, gt)
        result = result[0]
    return result.get('img_id', index) if isinstance(result, dict) else index


def _subset_metric(metric, results: list, keep: set) -> dict:
    """``metric.compute_metrics`` over the results whose sample key is in ``keep`` (COCO GT restricted alike)."""
    subset = [r for i, r in enumerate(results) if _sample_key(r, i) in keep]
    saved = {}
    if hasattr(metric, '_coco_api') and hasattr(metric, 'img_ids'):  # mmdet CocoMetric: evaluates metric.img_ids
        saved['img_ids'] = metric.img_ids
        metric.img_ids = sorted(keep)
    elif getattr(metric, 'coco', None) is not None:  # mmpose CocoMetric: evaluates every image of metric.coco
        saved['coco'] = metric.coco
        full = metric.coco.dataset
        part = type(metric.coco)()  # mmpose's is xtcocotools' COCO, whose COCOeval also reads anno_file
        part.dataset = dict(full, images=[im for im in full['images'] if im['id'] in keep],
                            annotations=[a for a in full['annotations'] if a['image_id'] in keep])
        part.createIndex()
        if hasattr(metric.coco, 'anno_file'):
            part.anno_file = metric.coco.anno_file
        metric.coco = part
    try:
        return metric.compute_metrics(copy.deepcopy(subset))
    finally:
        for name, value in saved.items():
            setattr(metric, name, value)


def measure(config: str, checkpoint: str, metric_name: str, splits: int, split: str, seed: int = 0) -> dict:
    """Runs the teacher once over ``split`` and evaluates ``splits`` random pairs of halves; returns the figures."""
    import torch
    from mmengine.config import Config
    from mmengine.evaluator import Evaluator
    from mmengine.runner import Runner

    from mmlego.models import build_model
    cfg = Config.fromfile(osp.join(ROOT, config))
    loader_cfg = copy.deepcopy(cfg.val_dataloader if split == 'val' else cfg.test_dataloader)
    evaluator_cfg = copy.deepcopy(cfg.val_evaluator if split == 'val' else cfg.test_evaluator)
    model = build_model(cfg, checkpoint).eval()
    loader = Runner.build_dataloader(loader_cfg)
    evaluator = Evaluator(evaluator_cfg)
    evaluator.dataset_meta = getattr(loader.dataset, 'metainfo', None)
    with torch.no_grad():
        for batch in loader:
            evaluator.process(data_samples=model.val_step(batch), data_batch=batch)
    for metric in evaluator.metrics:  # the one reporting metric_name, evaluated once on the whole split
        results = list(metric.results)
        keys = sorted({_sample_key(r, i) for i, r in enumerate(results)}, key=str)
        metrics = _subset_metric(metric, results, set(keys))
        if metric_name.split('/')[-1] in metrics:
            break
    else:
        raise KeyError(f'no metric of {config} reports {metric_name}')
    whole = _scaled(metric_name, metrics)
    rng = random.Random(seed)
    differences = []
    for _ in range(splits):
        shuffled = keys[:]
        rng.shuffle(shuffled)
        half = len(shuffled) // 2
        a = _scaled(metric_name, _subset_metric(metric, results, set(shuffled[:half])))
        b = _scaled(metric_name, _subset_metric(metric, results, set(shuffled[half:2 * half])))
        differences.append(abs(a - b))
    differences.sort()
    sd = statistics.pstdev(differences + [-d for d in differences])  # |a - b| of a symmetric difference
    return dict(config=config, checkpoint=checkpoint, split=split, metric=metric_name, samples=len(keys),
                whole_points=whole, splits=splits, median_points=statistics.median(differences),
                mean_points=statistics.fmean(differences), p90_points=differences[int(0.9 * (len(differences) - 1))],
                max_points=differences[-1], whole_standard_error_points=sd / 2)


def _scaled(metric_name: str, metrics: dict) -> float:
    """The named metric on a 0-100 scale (mIoU is already in points, the others in 0-1)."""
    value = float(metrics[metric_name.split('/')[-1]])
    return value if metric_name == 'mIoU' else 100.0 * value


def markdown(results: dict) -> str:
    lines = ['| model | metric | split (samples) | metric on it | difference of two halves (absolute), median / p90 / max '
             '(points) | implied standard error of the split | target (< 0.5 between halves) |',
             '|---|---|---|---|---|---|---|']
    for name, r in results.items():
        lines.append(f"| {name} | {r['metric']} | {r['split']} ({r['samples']}) | {r['whole_points']:.1f} | "
                     f"{r['median_points']:.2f} / {r['p90_points']:.2f} / {r['max_points']:.2f} | "
                     f"{r['whole_standard_error_points']:.2f} | "
                     f"{'met' if r['median_points'] < TARGET_POINTS else 'not met'} |")
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--teachers', default=osp.join(ROOT, 'bench', 'results', 'teachers.json'))
    parser.add_argument('--only', nargs='+')
    parser.add_argument('--splits', type=int, default=50)
    parser.add_argument('--split', choices=('val', 'test'), default='val')
    parser.add_argument('--out', default=osp.join(ROOT, 'bench', 'results', 'val_precision.json'))
    parser.add_argument('--markdown', action='store_true', help='only print the table from --out')
    args = parser.parse_args(argv)
    results = json.load(open(args.out)) if osp.exists(args.out) else {}
    if not args.markdown:
        teachers = json.load(open(args.teachers))
        for name, record in teachers.items():
            if args.only and name not in args.only:
                continue
            if not osp.exists(record['checkpoint']):
                print(f"[val_precision] {name}: skipped, its checkpoint {record['checkpoint']} is missing "
                      f"(train it: bench/teachers.py --only {name})", flush=True)
                continue
            results[name] = measure(record['config'], record['checkpoint'], record['metric'], args.splits,
                                    args.split)
            atomic_write_json(args.out, results)
            print(f"[val_precision] {name}: median |difference| {results[name]['median_points']:.2f} points",
                  flush=True)
    print(markdown(results))


if __name__ == '__main__':
    main()
