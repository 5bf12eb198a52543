"""Run the LegoDNN pipeline and a budget sweep for each synthetic teacher; record README's table.

    .venv/bin/python bench/pipelines.py [--only tsn fcn ...] [--cfg-options k=v ...] [--sweep 5] [--latency-threads 1]
    .venv/bin/python bench/pipelines.py --markdown

For each model: ``tools/train.py <legodnn config> --cfg-options load_from=<teacher from bench/results/teachers.json>``
(the pipeline, timed), then ``tools/test.py <legodnn config> <work_dir>/bank --sweep N`` over memory budgets and
again with ``--sweep-by latency`` (each row: estimated and measured metric on the test split, profiled / corrected /
measured latency, weight and resident bytes). Results are merged into ``bench/results/pipelines.json``, so models can
be (re)measured one at a time; ``--markdown`` prints README's tables, including the fidelity of every estimate
(issue 8's targets: latency error <= 10% before and <= 5% after the online correction, measured latency <= 1.05 x
budget, resident <= 1.1 x weights at the smallest configuration, metric error <= 2 points, full-budget estimate
<= teacher + 1 point). Run them one after another on a quiet machine: latency is measured.
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
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
from machine import cpu_times, steal_share  # noqa: E402

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


def measure(name, teachers, args, previous):
    config = LEGO_CONFIGS[name]
    checkpoint = teachers[name]['checkpoint']
    work_dir = osp.join(ROOT, 'work_dirs', 'pipelines', name)
    # The model's options apply to the sweeps too (e.g. model.latency_threads: profiled and served alike).
    model_options = [f'load_from={checkpoint}'] + ([f'model.latency_threads={args.latency_threads}']
                                                   if args.latency_threads else [])
    options = [*model_options, *args.cfg_options]
    bank = osp.join(work_dir, 'bank')
    start, cpu_before = time.time(), cpu_times()
    if args.sweeps_only and osp.exists(osp.join(bank, 'manifest.json')):
        minutes = previous.get('pipeline_minutes')  # the bank of an earlier run of this script
    else:
        run([sys.executable, 'tools/train.py', config, '--work-dir', work_dir, '--cfg-options', *options,
             'train_cfg.overwrite=True'],
            osp.join(ROOT, 'work_dirs', 'pipelines', f'{name}.log'))
        minutes = round((time.time() - start) / 60, 1)
    sweeps = {}
    for by in ('memory', 'latency'):
        out = osp.join(work_dir, f'sweep_{by}')
        run([sys.executable, 'tools/test.py', config, bank, '--work-dir', osp.join(work_dir, 'test'), '--sweep',
             str(args.sweep), '--sweep-by', by, '--sweep-dir', out, '--cfg-options', *model_options],
            osp.join(ROOT, 'work_dirs', 'pipelines', f'{name}_sweep_{by}.log'))
        sweeps[by] = json.load(open(osp.join(out, 'sweep.json')))['rows']
    manifest = json.load(open(osp.join(bank, 'manifest.json')))
    profiles = manifest['profiles']
    rows = sweeps['memory']
    tensors = glob.glob(osp.join(bank, '*.safetensors'))[0]
    blocks = manifest['extraction']['blocks']
    return dict(
        config=config, teacher=checkpoint, pipeline_options=args.cfg_options, pipeline_minutes=minutes,
        latency_threads=args.latency_threads, num_threads_profiled=profiles.get('num_threads'),
        metric=profiles['metric_name'], teacher_metric=profiles['teacher_metric'], blocks=len(blocks),
        sparsities=manifest['sparsities'], convs=f"{manifest['extraction']['num_convs_covered']}/"
        f"{manifest['extraction']['num_convs_total']}", teacher_mb=profiles['model_memory_bytes'] / 2 ** 20,
        bank_mb=os.path.getsize(tensors) / 2 ** 20, sweep=rows, latency_sweep=sweeps['latency'],
        latency_check=profiles.get('latency_check'), cpu_steal_share=steal_share(cpu_before, cpu_times()),
        commands=[f'python tools/train.py {config} --cfg-options {" ".join(options)}',
                  f'python tools/test.py {config} {osp.relpath(bank, ROOT)} --sweep {args.sweep} --cfg-options '
                  f'{" ".join(model_options)}',
                  f'python tools/test.py {config} {osp.relpath(bank, ROOT)} --sweep {args.sweep} --sweep-by latency '
                  f'--cfg-options {" ".join(model_options)}'])


def _median(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def fidelity(r):
    """Issue 8's fidelity figures of one model from its two sweeps (None where a sweep lacks the numbers)."""
    rows = r['sweep'] + r.get('latency_sweep', [])
    points = 1.0 if r['metric'] == 'mIoU' else 100.0  # every metric on a 0-100 scale

    def rel(key, measured='measured_latency_ms'):
        return _median(abs(row[key] - row[measured]) / row[measured] for row in rows
                       if row.get(key) is not None and row.get(measured))
    over = [row['measured_latency_ms'] / row['budget_latency_ms'] for row in r.get('latency_sweep', [])
            if row.get('measured_latency_ms') and row.get('budget_latency_ms') and row['status'] != 'infeasible']
    # The configuration measured where it was chosen: right after the hook settled it, before the epoch ran.
    settled = [row['settled_measured_latency_ms'] / row['budget_latency_ms'] for row in r.get('latency_sweep', [])
               if row.get('settled_measured_latency_ms') and row.get('budget_latency_ms')
               and row['status'] != 'infeasible']
    settled_error = _median(abs(row['settled_corrected_latency_ms'] - row['settled_measured_latency_ms'])
                            / row['settled_measured_latency_ms'] for row in r.get('latency_sweep', [])
                            if row.get('settled_measured_latency_ms') and row.get('settled_corrected_latency_ms'))
    # Every configuration the online correction chose or kept, measured there: at the solve; after the epoch the one
    # that ran it if the correction kept it, or the one it re-solved to (settled and measured) if it did not.
    kept, rescaled, infeasible_after = [], [], 0
    for row in r.get('latency_sweep', []):
        if not row.get('budget_latency_ms') or row['status'] == 'infeasible':
            continue
        if row.get('rescaled_status') == 'infeasible':
            # re-solved after the epoch under a correction that finds no configuration fitting the budget (the
            # device ran slower than the fastest configuration can meet): infeasible then, as a solve says
            infeasible_after += 1
        elif row.get('rescaled_measured_latency_ms'):
            rescaled.append(row['rescaled_measured_latency_ms'] / row['budget_latency_ms'])
        elif row.get('measured_latency_ms'):
            kept.append(row['measured_latency_ms'] / row['budget_latency_ms'])
    chosen = settled + kept + rescaled
    smallest = r['sweep'][0]
    resident = (smallest['resident_memory_mb'] / smallest['estimated_memory_mb']
                if smallest.get('resident_memory_mb') else None)
    # Metric: a configuration's estimate on the report split is the teacher measured there minus the estimated drop,
    # what tools/test.py --sweep shows (anchor_metric_estimates; rows of sweeps made before it showed the val teacher
    # minus the drop and are re-based the same way, each sweep on its own teacher row); over the rows that run a
    # pruned configuration (the teacher's own row is exact by construction). Beside it the val teacher's estimate.
    from mmlego.apis.sweep import anchor_metric_estimates, measured_one_configuration, runs_teacher
    errors, errors_val, teacher_test = [], [], None
    for sweep in (r['sweep'], r.get('latency_sweep', [])):
        sweep = [dict(row) for row in sweep]  # re-based copies; the stored rows stay as measured
        teachers = [row for row in sweep if row.get('measured_metric') is not None and runs_teacher(row)]
        anchor_metric_estimates(sweep, r['teacher_metric'], teachers[-1]['measured_metric'] if teachers else None)
        if not teachers:
            continue
        teacher_test = teachers[-1]['measured_metric'] if teacher_test is None else teacher_test
        for row in sweep:  # a row whose epoch switched configurations measured a mixture: no estimate of it
            if measured_one_configuration(row) and row not in teachers:
                errors.append(abs(row['estimated_metric'] - row['measured_metric']) * points)
                errors_val.append(abs(row['estimated_metric_profiling'] - row['measured_metric']) * points)
    last = dict(r['sweep'][-1])
    anchor_metric_estimates([last], r['teacher_metric'], None)
    full = round(-last['estimated_drop'] * points, 9) + 0.0  # + 0.0: no negative zero for an exact estimate
    # The machine's own noise: the same configuration measured twice (in both sweeps, or twice in one).
    seen: dict[str, list[float]] = {}
    for row in rows:
        if row.get('measured_latency_ms') and row.get('choice') is not None:
            seen.setdefault(json.dumps(row['choice'], sort_keys=True), []).append(row['measured_latency_ms'])
    spread = [abs(a - b) / ((a + b) / 2) for times in seen.values() for i, a in enumerate(times) for b in times[i + 1:]]
    return dict(latency_error_profiled=rel('profiled_latency_ms'), latency_error_corrected=rel('corrected_latency_ms'),
                # the profile (spanning seconds) against the rows measured in visits interleaved over seconds
                latency_error_profiled_interleaved=rel('profiled_latency_ms', 'interleaved_latency_ms'),
                latency_remeasured_spread=_median(spread),
                max_latency_over_budget=max(over) if over else None,
                max_settled_latency_over_budget=max(settled) if settled else None,
                settled_latency_error=settled_error, rescaled_after_epoch=len(rescaled),
                rescaled_infeasible=infeasible_after,
                max_rescaled_latency_over_budget=max(rescaled) if rescaled else None,
                max_chosen_latency_over_budget=max(chosen) if chosen else None, resident_over_weights=resident,
                metric_error_points=_median(errors), full_budget_over_teacher_points=full,
                teacher_profiling_metric=r['teacher_metric'], teacher_report_metric=teacher_test,
                metric_error_val_anchor_points=_median(errors_val))


def fidelity_markdown(fidelities: dict) -> str:
    """The fidelity table (issue 8's figures per model, from :func:`fidelity`)."""
    def fmt(value, spec):
        return '-' if value is None else format(value, spec)
    lines = ['| model | latency error, profiled | profiled vs interleaved | after online correction | '
             'same configuration re-measured | '
             'max measured / latency budget, after the epoch | at the solve (error there) | '
             're-solved after the epoch: count (+ found infeasible), max measured / budget | '
             'every configuration chosen or kept | '
             'resident / weights (smallest) | metric error, pruned rows (points) | '
             'full-budget estimate - teacher (points) | teacher val / test | error if anchored on the val teacher |',
             '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    for name, f in fidelities.items():
        lines.append(f"| {name} | {fmt(f['latency_error_profiled'], '.1%')} | "
                     f"{fmt(f.get('latency_error_profiled_interleaved'), '.1%')} | {fmt(f['latency_error_corrected'], '.1%')} "
                     f"| {fmt(f.get('latency_remeasured_spread'), '.1%')} | {fmt(f['max_latency_over_budget'], '.3f')} | "
                     f"{fmt(f.get('max_settled_latency_over_budget'), '.3f')} "
                     f"({fmt(f.get('settled_latency_error'), '.1%')}) | {f.get('rescaled_after_epoch', '-')}"
                     f"{' + %d infeasible' % f['rescaled_infeasible'] if f.get('rescaled_infeasible') else ''}, "
                     f"{fmt(f.get('max_rescaled_latency_over_budget'), '.3f')} | "
                     f"{fmt(f.get('max_chosen_latency_over_budget'), '.3f')} | "
                     f"{fmt(f['resident_over_weights'], '.3f')} | {fmt(f['metric_error_points'], '.2f')} | "
                     f"{fmt(f['full_budget_over_teacher_points'], '+.2f')} | "
                     f"{fmt(f.get('teacher_profiling_metric'), '.3f')} / {fmt(f.get('teacher_report_metric'), '.3f')} | "
                     f"{fmt(f.get('metric_error_val_anchor_points'), '.2f')} |")
    return '\n'.join(lines)


def markdown(results):
    def cell(row):
        return f"{row['measured_metric']:.3f} @ {row.get('resident_memory_mb') or row['estimated_memory_mb']:.1f} MB"
    lines = ['| model | metric | teacher | blocks (convs) | choices | teacher / bank MB | pipeline | smallest budget '
             '| middle budget | full budget |', '|---|---|---|---|---|---|---|---|---|---|']
    for name, r in results.items():
        sweep = r['sweep']
        lines.append(f"| {name} | {r['metric']} | {r['teacher_metric']:.3f} | {r['blocks']} ({r['convs']}) | "
                     f"{len(r['sparsities'])}^{r['blocks']} | {r['teacher_mb']:.1f} / {r['bank_mb']:.1f} | "
                     f"{r['pipeline_minutes']} min | {cell(sweep[0])} | {cell(sweep[len(sweep) // 2])} | "
                     f"{cell(sweep[-1])} |")

    lines += ['', fidelity_markdown({name: fidelity(r) for name, r in results.items()})]
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--only', nargs='+', choices=sorted(LEGO_CONFIGS))
    parser.add_argument('--cfg-options', nargs='*', default=[], help='pipeline overrides, e.g. '
                        "train_cfg.references=\"['teacher']\"")
    parser.add_argument('--sweep', type=int, default=5)
    parser.add_argument('--latency-threads', type=int, help='model.latency_threads for the pipeline and its sweeps '
                        '(CPU threads the latencies are profiled and served with; default: as the process runs)')
    parser.add_argument('--sweeps-only', action='store_true',
                        help='reuse the bank of an earlier run in work_dirs/pipelines/<model> (only the sweeps run)')
    parser.add_argument('--out', default=osp.join(ROOT, 'bench', 'results', 'pipelines.json'))
    parser.add_argument('--teachers', default=osp.join(ROOT, 'bench', 'results', 'teachers.json'),
                        help='teacher checkpoints by model (bench/teachers.py writes it)')
    parser.add_argument('--markdown', action='store_true', help='only print the table from --out')
    args = parser.parse_args()
    results = json.load(open(args.out)) if osp.exists(args.out) else {}
    if not args.markdown:
        teachers = json.load(open(args.teachers))
        subprocess.run([sys.executable, 'tools/make_synthetic_data.py', '--quiet'], cwd=ROOT, check=True)
        os.makedirs(osp.join(ROOT, 'work_dirs', 'pipelines'), exist_ok=True)
        for name in args.only or list(LEGO_CONFIGS):
            results[name] = measure(name, teachers, args, results.get(name, {}))
            print(f"[pipelines] {name}: {results[name]['blocks']} blocks in {results[name]['pipeline_minutes']} min")
            tmp = args.out + '.tmp'
            with open(tmp, 'w') as f:
                json.dump(results, f, indent=1)
            os.replace(tmp, args.out)
    print(markdown({k: results[k] for k in LEGO_CONFIGS if k in results}))


if __name__ == '__main__':
    main()
