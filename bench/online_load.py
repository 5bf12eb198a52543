"""A latency budget under a changing load: a second process starts burning one of the two cores mid-run.

    .venv/bin/python bench/online_load.py --only tsn [--budget-ratio 0.8] [--forwards 30]

For each model (the banks of bench/pipelines.py, the teachers of bench/results/teachers.json): the LegoDNN model is
scaled to a latency budget (``--budget-ratio`` x the teacher's corrected estimate), then serves batch-1 forwards
of the tensor path, calling ``rescale_if_needed()`` after each (what ``mmlego.OnlineScalingHook`` does per
iteration). After ``--forwards`` forwards a busy-looping process starts; after as many again it stops. Each
forward's wall time is measured around the call (not by the block hooks the correction uses). Recorded: how many
forwards after the load began until the median of the last three measured forwards is again <= 1.05 x budget
(the target: a few), the same after the load ends, every re-solve, and the median measured / budget in each
phase. Results: ``bench/results/online_load.json``.
"""
import argparse
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.pipelines import LEGO_CONFIGS  # noqa: E402


def serve(model, forward, inputs, count, phase, log):
    import torch
    for _ in range(count):
        start = time.perf_counter()
        with torch.no_grad():
            forward(model.architecture, inputs)
        measured = (time.perf_counter() - start) * 1000
        result = model.rescale_if_needed()
        log.append(dict(phase=phase, measured_ms=measured, ratio=model.latency_ratio,
                        estimate_ms=model.estimate()['latency_ms'], resolved=result is not None,
                        pruned=sum(1 for s in model.selection.values() if s > 0)))


def recovery(log, phase, budget):
    """Forwards into ``phase`` until the median of the last three measured is within 1.05 x budget again."""
    times = [entry['measured_ms'] for entry in log if entry['phase'] == phase]
    for i in range(3, len(times) + 1):
        if statistics.median(times[i - 3:i]) <= 1.05 * budget:
            return i
    return None


def measure(name, checkpoint, args):
    import torch

    from mmlego.apis import init_lego_model
    from mmlego.models import TENSOR_PATHS, example_batch
    config = LEGO_CONFIGS[name]
    bank = osp.join(ROOT, 'work_dirs', 'pipelines', name, 'bank')
    model = init_lego_model(osp.join(ROOT, config), bank, checkpoint=checkpoint)
    inputs = example_batch(model.cfg, model.architecture, batch_size=1)
    forward = TENSOR_PATHS[model.tensor_path or 'tensor']
    log = []
    serve(model, forward, inputs, 10, 'warmup', log)
    teacher = model.estimate({key: 0.0 for key in model.selection})['latency_ms']
    budget = args.budget_ratio * teacher
    model.scale(latency_ms=budget)
    serve(model, forward, inputs, args.forwards, 'quiet', log)
    burner = subprocess.Popen([sys.executable, '-c', 'while True: pass'])
    try:
        serve(model, forward, inputs, args.forwards, 'loaded', log)
    finally:
        burner.kill()
        burner.wait()
    serve(model, forward, inputs, args.forwards, 'quiet again', log)
    phases = {}
    for phase in ('quiet', 'loaded', 'quiet again'):
        entries = [e for e in log if e['phase'] == phase]
        phases[phase] = dict(
            median_measured_over_budget=statistics.median(e['measured_ms'] for e in entries) / budget,
            median_ratio=statistics.median(e['ratio'] for e in entries),
            resolves=sum(e['resolved'] for e in entries),
            forwards_to_meet_budget=recovery(log, phase, budget),
            pruned_blocks_at_end=entries[-1]['pruned'])
    return dict(config=config, teacher_estimate_ms=teacher, budget_ms=budget, torch_threads=torch.get_num_threads(),
                phases=phases, log=log, command=f'python bench/online_load.py --only {name} '
                f'--budget-ratio {args.budget_ratio} --forwards {args.forwards}')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--only', nargs='+', choices=sorted(LEGO_CONFIGS), default=['tsn'])
    parser.add_argument('--budget-ratio', type=float, default=0.8)
    parser.add_argument('--forwards', type=int, default=30)
    parser.add_argument('--teachers', default=osp.join(ROOT, 'bench', 'results', 'teachers.json'))
    parser.add_argument('--out', default=osp.join(ROOT, 'bench', 'results', 'online_load.json'))
    args = parser.parse_args()
    teachers = json.load(open(args.teachers))
    results = json.load(open(args.out)) if osp.exists(args.out) else {}
    for name in args.only:
        results[name] = measure(name, teachers[name]['checkpoint'], args)
        summary = {phase: {k: v for k, v in values.items()} for phase, values in results[name]['phases'].items()}
        print(f'[online_load] {name}: budget {results[name]["budget_ms"]:.2f} ms; {json.dumps(summary)}', flush=True)
        tmp = args.out + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(results, f, indent=1)
        os.replace(tmp, args.out)


if __name__ == '__main__':
    main()
