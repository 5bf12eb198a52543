"""Banks of all eight models for latency measurements alone, in minutes instead of hours.

    .venv/bin/python bench/latency_banks.py [--only tsn trn ...] [--out work_dirs/latency_banks] [--latency-threads 1]

A latency profile depends on the model's structure (blocks, the kept channels of every descendant, the input size),
not on how well its weights are trained: L1 pruning at a sparsity keeps the same number of channels whatever the
weights. So for the latency benchmark (``bench/latency_fidelity.py --banks work_dirs/latency_banks``) each teacher is
trained briefly (one epoch, or 20 iterations for the iteration-based segmentors) and its pipeline runs with one
retraining epoch and the accuracy profiled on 2 val batches against the teacher alone, through the same
``tools/train.py`` a user runs. The accuracy numbers of these banks mean nothing and are never reported; the
metric's fidelity is measured on the banks of ``bench/pipelines.py``. Writes ``<out>/<model>/bank`` and
``<out>/teachers.json`` (model -> ``checkpoint``, the format of ``bench/results/teachers.json``).
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from pipelines import LEGO_CONFIGS  # noqa: E402
from teachers import TEACHERS  # noqa: E402

PIPELINE_OPTIONS = ['train_cfg.retrain.epochs=1', 'train_cfg.max_val_batches=2', "train_cfg.references=['teacher']",
                    'train_cfg.overwrite=True']


def short_schedule(config: str) -> list:
    """``--cfg-options`` that shorten a teacher config's schedule to one epoch (or 20 iterations), no validation."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(ROOT, config))
    if 'max_iters' in cfg.train_cfg:
        return ['train_cfg.max_iters=20', 'train_cfg.val_interval=1000']
    return ['train_cfg.max_epochs=1', 'train_cfg.val_interval=1000']


def run(cmd: list, log: str) -> None:
    with open(log, 'w') as out:
        if subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
            raise SystemExit(f'{" ".join(cmd)} failed, see {log}')


def build(name: str, out: str, latency_threads: int | None = None) -> dict:
    teacher_config = TEACHERS[name][0]
    work = osp.join(out, name)
    os.makedirs(work, exist_ok=True)
    start = time.time()
    run([sys.executable, 'tools/train.py', teacher_config, '--work-dir', osp.join(work, 'teacher'), '--cfg-options',
         *short_schedule(teacher_config)], osp.join(work, 'teacher.log'))
    checkpoint = open(osp.join(work, 'teacher', 'last_checkpoint')).read().strip()
    run([sys.executable, 'tools/train.py', LEGO_CONFIGS[name], '--work-dir', work, '--cfg-options',
         f'load_from={checkpoint}', *PIPELINE_OPTIONS,
         *([f'model.latency_threads={latency_threads}'] if latency_threads else [])], osp.join(work, 'pipeline.log'))
    return dict(checkpoint=checkpoint, minutes=round((time.time() - start) / 60, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--only', nargs='+', choices=sorted(LEGO_CONFIGS), default=list(LEGO_CONFIGS))
    parser.add_argument('--out', default=osp.join(ROOT, 'work_dirs', 'latency_banks'))
    parser.add_argument('--latency-threads', type=int, help='CPU threads the latencies are profiled with '
                        '(model.latency_threads; measure with bench/latency_fidelity.py --threads the same)')
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    subprocess.run([sys.executable, 'tools/make_synthetic_data.py', '--quiet'], cwd=ROOT, check=True)
    index = osp.join(args.out, 'teachers.json')
    teachers = json.load(open(index)) if osp.exists(index) else {}
    for name in args.only:
        teachers[name] = build(name, args.out, args.latency_threads)
        print(f'[latency_banks] {name}: bank in {osp.join(args.out, name, "bank")} '
              f'({teachers[name]["minutes"]} min)', flush=True)
        with open(index + '.tmp', 'w') as file:
            json.dump(teachers, file, indent=2)
        os.replace(index + '.tmp', index)


if __name__ == '__main__':
    main()
