"""Run the LegoDNN pipeline and a budget sweep for each synthetic teacher; record README's table.

    .venv/bin/python bench/pipelines.py [--only tsn fcn ...] [--cfg-options k=v ...] [--sweep 5]
    .venv/bin/python bench/pipelines.py --markdown

For each model: ``tools/train.py <legodnn config> --cfg-options load_from=<teacher from bench/results/teachers.json>``
(the pipeline, timed), then ``tools/test.py <legodnn config> <work_dir>/bank --sweep N`` (measured metric, memory and
latency at N memory budgets from the smallest configuration to the full model). Results are merged into
``bench/results/pipelines.json``, so models can be (re)measured one at a time. Run them one after another on a quiet
machine: latency is measured.
"""
import argparse
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
LEGO_CONFIGS = {
    'yolov3': 'configs/detection/yolov3/yolov3_r18_legodnn_synthdet.py',
    'faster_rcnn': 'configs/detection/faster_rcnn/faster-rcnn_r18_fpn_legodnn_synthdet.py',
    'fcn': 'configs/segmentation/fcn/fcn_r18-d8_legodnn_synthseg.py',
    'deeplabv3': 'configs/segmentation/deeplabv3/deeplabv3_r18-d8_legodnn_synthseg.py',
    'deeppose': 'configs/pose/deeppose/deeppose_res18_legodnn_synthpose-128x128.py',
    'simplebaseline': 'configs/pose/simplebaseline/simplebaseline_res18_legodnn_synthpose-128x128.py',
    'tsn': 'configs/action/tsn/tsn_r18_legodnn_synthaction.py',
    'trn': 'configs/action/trn/trn_r18_legodnn_synthaction.py',
}


def run(cmd, log):
    with open(log, 'w') as out:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f'{" ".join(cmd)} failed, see {log}')


def measure(name, teachers, args):
    config = LEGO_CONFIGS[name]
    checkpoint = teachers[name]['checkpoint']
    work_dir = osp.join(ROOT, 'work_dirs', 'pipelines', name)
    options = [f'load_from={checkpoint}', *args.cfg_options]
    start = time.time()
    run([sys.executable, 'tools/train.py', config, '--work-dir', work_dir, '--cfg-options', *options],
        osp.join(ROOT, 'work_dirs', 'pipelines', f'{name}.log'))
    minutes = (time.time() - start) / 60
    bank = osp.join(work_dir, 'bank')
    run([sys.executable, 'tools/test.py', config, bank, '--work-dir', osp.join(work_dir, 'test'), '--sweep',
         str(args.sweep), '--out', osp.join(work_dir, 'sweep'), '--cfg-options', f'load_from={checkpoint}'],
        osp.join(ROOT, 'work_dirs', 'pipelines', f'{name}_sweep.log'))
    manifest = json.load(open(osp.join(bank, 'manifest.json')))
    profiles = manifest['profiles']
    rows = json.load(open(osp.join(work_dir, 'sweep', 'sweep.json')))['rows']
    tensors = glob.glob(osp.join(bank, '*.safetensors'))[0]
    blocks = manifest['extraction']['blocks']
    return dict(
        config=config, teacher=checkpoint, pipeline_options=args.cfg_options, pipeline_minutes=round(minutes, 1),
        metric=profiles['metric_name'], teacher_metric=profiles['teacher_metric'], blocks=len(blocks),
        sparsities=manifest['sparsities'], convs=f"{manifest['extraction']['num_convs_covered']}/"
        f"{manifest['extraction']['num_convs_total']}", teacher_mb=profiles['model_memory_bytes'] / 2 ** 20,
        bank_mb=os.path.getsize(tensors) / 2 ** 20, sweep=rows,
        commands=[f'python tools/train.py {config} --cfg-options {" ".join(options)}',
                  f'python tools/test.py {config} {osp.relpath(bank, ROOT)} --sweep {args.sweep}'])


def markdown(results):
    def cell(row):
        return f"{row['measured_metric']:.3f} @ {row['measured_memory_mb']:.1f} MB"
    lines = ['| model | metric | teacher | blocks (convs) | choices | teacher / bank MB | pipeline | smallest budget '
             '| middle budget | full budget |', '|---|---|---|---|---|---|---|---|---|---|']
    for name, r in results.items():
        sweep = r['sweep']
        lines.append(f"| {name} | {r['metric']} | {r['teacher_metric']:.3f} | {r['blocks']} ({r['convs']}) | "
                     f"{len(r['sparsities'])}^{r['blocks']} | {r['teacher_mb']:.1f} / {r['bank_mb']:.1f} | "
                     f"{r['pipeline_minutes']} min | {cell(sweep[0])} | {cell(sweep[len(sweep) // 2])} | "
                     f"{cell(sweep[-1])} |")
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--only', nargs='+', choices=sorted(LEGO_CONFIGS))
    parser.add_argument('--cfg-options', nargs='*', default=[], help='pipeline overrides, e.g. '
                        "train_cfg.references=\"['teacher']\"")
    parser.add_argument('--sweep', type=int, default=5)
    parser.add_argument('--out', default=osp.join(ROOT, 'bench', 'results', 'pipelines.json'))
    parser.add_argument('--teachers', default=osp.join(ROOT, 'bench', 'results', 'teachers.json'))
    parser.add_argument('--markdown', action='store_true', help='only print the table from --out')
    args = parser.parse_args()
    results = json.load(open(args.out)) if osp.exists(args.out) else {}
    if not args.markdown:
        teachers = json.load(open(args.teachers))
        os.makedirs(osp.join(ROOT, 'work_dirs', 'pipelines'), exist_ok=True)
        for name in args.only or list(LEGO_CONFIGS):
            results[name] = measure(name, teachers, args)
            print(f"[pipelines] {name}: {results[name]['blocks']} blocks in {results[name]['pipeline_minutes']} min")
            tmp = args.out + '.tmp'
            with open(tmp, 'w') as f:
                json.dump(results, f, indent=1)
            os.replace(tmp, args.out)
    print(markdown({k: results[k] for k in LEGO_CONFIGS if k in results}))


if __name__ == '__main__':
    main()
