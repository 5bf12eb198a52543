"""Train the eight synthetic teachers one after another and record metric and wall time per teacher.

    .venv/bin/python bench/teachers.py [--only yolov3 fcn ...] [--out bench/results/teachers.json]

Each teacher runs exactly as a user would run it (`python tools/train.py CONFIG --work-dir work_dirs/teachers/NAME`),
on the data `tools/make_synthetic_data.py` makes by default. Results are merged into the JSON file, so teachers
can be (re)measured one at a time; `--markdown` prints README's table from it.
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TEACHERS = {
    'yolov3': ('configs/detection/yolov3/yolov3_r18_synthdet.py', 'coco/bbox_mAP_50'),
    'faster_rcnn': ('configs/detection/faster_rcnn/faster-rcnn_r18_fpn_synthdet.py', 'coco/bbox_mAP_50'),
    'fcn': ('configs/segmentation/fcn/fcn_r18-d8_synthseg.py', 'mIoU'),
    'deeplabv3': ('configs/segmentation/deeplabv3/deeplabv3_r18-d8_synthseg.py', 'mIoU'),
    'deeppose': ('configs/pose/deeppose/deeppose_res18_synthpose-128x128.py', 'coco/AP'),
    'simplebaseline': ('configs/pose/simplebaseline/simplebaseline_res18_synthpose-128x128.py', 'coco/AP'),
    'tsn': ('configs/action/tsn/tsn_r18_synthaction.py', 'acc/top1'),
    'trn': ('configs/action/trn/trn_r18_synthaction.py', 'acc/top1'),
}
# What guessing scores: 0 for detection mAP and keypoint AP; 1/6 top-1 for the 6 action classes; for mIoU,
# predicting background everywhere (about 21 on the synthetic val set: background IoU ~85, shapes 0).
CHANCE = {'coco/bbox_mAP_50': '0', 'mIoU': '~21 (all background)', 'coco/AP': '0', 'acc/top1': '0.167'}


def last_val_metrics(work_dir: str) -> dict:
    runs = sorted(d for d in os.listdir(work_dir) if osp.isdir(osp.join(work_dir, d, 'vis_data')))
    lines = open(osp.join(work_dir, runs[-1], 'vis_data', 'scalars.json')).read().splitlines()
    entries = [json.loads(line) for line in lines if line.strip()]
    val = [e for e in entries if not any(k == 'loss' or k.startswith('loss_') for k in e) and 'lr' not in e]
    return val[-1] if val else {}


def train(name: str) -> dict:
    config, metric = TEACHERS[name]
    work_dir = osp.join('work_dirs', 'teachers', name)
    cmd = [sys.executable, 'tools/train.py', config, '--work-dir', work_dir]
    start = time.time()
    with open(osp.join('work_dirs', 'teachers', f'{name}.log'), 'w') as log:
        subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True)
    minutes = (time.time() - start) / 60
    metrics = last_val_metrics(osp.join(ROOT, work_dir))
    return dict(config=config, metric=metric, value=metrics.get(metric), all_metrics=metrics,
                train_minutes=round(minutes, 1), command=' '.join(['python'] + cmd[1:3]),
                checkpoint=open(osp.join(ROOT, work_dir, 'last_checkpoint')).read().strip())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--only', nargs='+', choices=sorted(TEACHERS), default=list(TEACHERS))
    parser.add_argument('--out', default='bench/results/teachers.json')
    parser.add_argument('--markdown', action='store_true', help='only print the table from --out')
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    results = json.load(open(args.out)) if osp.exists(args.out) else {}
    if not args.markdown:
        subprocess.run([sys.executable, 'tools/make_synthetic_data.py', '--quiet'], check=True)
        os.makedirs(osp.join('work_dirs', 'teachers'), exist_ok=True)
        for name in args.only:
            print(f'[teachers] training {name}', flush=True)
            results[name] = train(name)
            print(f'[teachers] {name}: {results[name]["metric"]} = {results[name]["value"]} '
                  f'in {results[name]["train_minutes"]} min', flush=True)
            os.makedirs(osp.dirname(args.out), exist_ok=True)
            tmp = args.out + '.tmp'
            with open(tmp, 'w') as f:
                json.dump(results, f, indent=2)
            os.replace(tmp, args.out)
    print('| model | config | metric (val) | teacher | chance | train time (2 cores) |')
    print('|---|---|---|---|---|---|')
    for name, (config, metric) in TEACHERS.items():
        if name in results:
            r = results[name]
            value = r['all_metrics'].get(metric)
            value = 'n/a' if value is None else f'{value:.3f}'
            print(f'| {name} | `{config}` | {metric} | {value} | {CHANCE[metric]} | {r["train_minutes"]} min |')


if __name__ == '__main__':
    main()
