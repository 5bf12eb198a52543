"""Profile and measurement alternated in one process: does the in-model profile describe what is served?

    .venv/bin/python bench/latency_phases.py [--only deeppose yolov3 ...] [--cycles 3] [--threads 1]
        [--banks DIR --teachers JSON]

A model's latency estimate sometimes runs uniformly 18-26% off measurements minutes later (README, B5). Two
explanations predict different things: if the profiler's method (its own switcher, block timing, visits in
rounds) measured other than the served forward, the offset would show within one process between a profile and
a measurement right after it, every time; if the machine changes speed between phases (a shared VM), profile and
measurement taken back to back agree, and the drift shows only between phases. Each cycle here re-profiles the
bank in the model (``profile_latency``, as the pipeline does) and then measures every all-at-s composite the way a
sweep does (``LegoDNN.measure_latency_ms``: 3 warm-up, median of 20), in the same process, seconds apart.

Reported per model and cycle: the profiled and the measured composite latencies and their relative difference;
``bench/results/latency_phases.json``, under ``threads_<N>``: ``--threads N`` runs both with N CPU intra-op threads
(default: as the process runs, i.e. every core).
"""
import argparse
import os.path as osp
import statistics
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from child import emit, merge_results, run_child  # noqa: E402
from latency_fidelity import BANKS, TEACHERS, load_lego, reprofile_in_model  # noqa: E402


def measure_model(name: str, cycles: int, banks: str, teachers: str, threads: int | None) -> dict:
    import torch
    model, example = load_lego(name, banks, teachers, threads)
    names = [spec.name for spec in model.bank.blocks]
    results = []
    for _ in range(cycles):
        reprofile_in_model(model, example)
        composites = model.bank.profiles.composite_latency_ms
        cycle = []
        for sparsity in model.bank.sparsities:
            model.switch({block: sparsity for block in names})
            measured = model.measure_latency_ms(example, warmup=3, repeats=20)
            profiled = composites[next(k for k in composites if float(k) == sparsity)]
            cycle.append(dict(sparsity=sparsity, profiled_ms=profiled, measured_ms=measured,
                              difference=measured / profiled - 1))
        results.append(cycle)
    differences = [abs(row['difference']) for cycle in results for row in cycle]
    return dict(model=name, num_threads=torch.get_num_threads(), cycles=results,
                median_abs_difference=statistics.median(differences), max_abs_difference=max(differences))


def main() -> None:
    from pipelines import LEGO_CONFIGS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--only', nargs='+', choices=sorted(LEGO_CONFIGS), default=list(LEGO_CONFIGS))
    parser.add_argument('--cycles', type=int, default=3)
    parser.add_argument('--threads', type=int, help='CPU intra-op threads (default: as the process runs)')
    parser.add_argument('--banks', default=BANKS)
    parser.add_argument('--teachers', default=TEACHERS)
    parser.add_argument('--child', help=argparse.SUPPRESS)
    parser.add_argument('--out', default=osp.join(ROOT, 'bench', 'results', 'latency_phases.json'))
    args = parser.parse_args()
    if args.cycles < 1 or (args.threads is not None and args.threads < 1):
        parser.error('--cycles and --threads must be >= 1')
    if args.child:
        emit(measure_model(args.child, args.cycles, args.banks, args.teachers, args.threads))
        return
    results = {}
    for name in args.only:
        result, stderr = run_child(__file__, ['--child', name, '--cycles', str(args.cycles), '--banks', args.banks,
                                              '--teachers', args.teachers]
                                   + (['--threads', str(args.threads)] if args.threads else []), ROOT)
        if result is None:
            raise SystemExit(f'{name} failed:\n{stderr}')
        results[name] = result
        print(f'| {name} | ' + ' | '.join(' '.join(f"{row['difference']:+.1%}" for row in cycle)
                                          for cycle in result['cycles'])
              + f" | {result['median_abs_difference']:.1%} / {result['max_abs_difference']:.1%} |", flush=True)
    threads = next(iter(results.values()))['num_threads'] if results else None
    merge_results(args.out, lambda merged: merged.setdefault(f'threads_{threads}', {}).update(results))


if __name__ == '__main__':
    main()
