"""Benchmarks side by side: both sides of every comparison in one process, on the same inputs; ratios reported.

    .venv/bin/python bench/run.py [--quick] [--only selection end_to_end switching offline fidelity latency] [--out bench/results]

* ``selection`` (B1, ``bench/selection.py``): the default exact solver vs LegoDNN's PuLP/CBC formulation.
* ``end_to_end`` (B1, ``bench/end_to_end.py``): a budget change until the new configuration serves (``LegoDNN.scale``:
  solve + switch) on each bank ``bench/pipelines.py`` built (``--quick``: 15 budgets per bank).
* ``switching`` (B2, ``bench/switching.py``): an in-memory block switch vs loading the composite from disk.
* ``offline`` (B3, ``bench/offline_cost.py``): a block-retraining step vs a teacher training step vs fine-tuning
  uniformly pruned models, per model on the same batches (``--quick``: DeepPose only).
* ``fidelity`` (B5): estimate vs measurement per model, from ``bench/results/pipelines.json`` (measured by
  ``bench/pipelines.py``, which runs the pipelines and sweeps; too long to rerun here).
* ``latency`` (B5, ``bench/latency_fidelity.py``): the latency estimates of each bank against interleaved
  measurements (side by side, so the machine's drift touches every configuration alike), before and after online
  correction, with the bank's own profile and re-profiled here (``--quick``: re-profiled only, fewer rounds).

Writes one JSON per benchmark, ``summary.md`` (every figure against its target; benchmarks not rerun are taken from
their JSON in ``--out``) and PNG plots into ``--out``.
Absolute times drift on shared machines; the ratios are what the targets are about. ``--quick`` takes a few
minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

from machine import cpu_times, steal_share  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
BENCHMARKS = ('selection', 'end_to_end', 'switching', 'offline', 'fidelity', 'latency')


def _selection(quick: bool) -> dict:
    import selection
    if not quick:
        selection.export_profiles()  # the banks of this machine, if bench/pipelines.py built them
    return selection.run(quick=quick)


def _switching(quick: bool) -> dict:
    import switching
    return switching.run(quick=quick)


def _end_to_end(quick: bool) -> dict:
    import end_to_end
    from pipelines import LEGO_CONFIGS
    return end_to_end.run(list(LEGO_CONFIGS), 15 if quick else 50)


def _offline(quick: bool) -> dict:
    import offline_cost
    from pipelines import LEGO_CONFIGS
    return offline_cost.run(['deeppose'] if quick else list(LEGO_CONFIGS), 3 if quick else 4)


def _fidelity(quick: bool) -> dict:
    from pipelines import fidelity
    results = json.load(open(osp.join(ROOT, 'bench', 'results', 'pipelines.json')))
    return {name: fidelity(r) for name, r in results.items()}


def _latency(quick: bool) -> dict:
    import latency_fidelity
    from pipelines import LEGO_CONFIGS
    names = list(LEGO_CONFIGS)
    if quick:
        return dict(reprofiled=latency_fidelity.run(names, 12, 4, 4, reprofile=True))
    return dict(bank_profile=latency_fidelity.run(names, 20, 8, 10),
                reprofiled=latency_fidelity.run(names, 20, 8, 10, reprofile=True))


def _mark(ok: bool | None) -> str:
    return '-' if ok is None else ('met' if ok else '**not met**')


def summary(results: dict) -> str:
    lines = []
    if 'selection' in results:
        lines += ['## B1 Selection (exact; targets: >= 100x CBC on the banks, >= 10x at 60 x 5 and with 4 / 8 banks)',
                  '', '| instances | budgets | ours median / p95 ms | CBC median / p95 ms | speedup | prepare ms '
                  '(once) | first answer vs CBC | worse than CBC | better than CBC (CBC tolerance) | target |',
                  '|---|---|---|---|---|---|---|---|---|---|']
        for row in results['selection']['rows']:
            name = row['instances']
            target = 100 if 'synthetic banks' in name else (10 if ('60 x 5' in name or 'banks under' in name) else None)
            ok = None if target is None else row['speedup'] >= target and row['worse'] == 0
            lines.append(f"| {name} | {row['budgets']} | {row['ours_median_ms']:.3f} / {row['ours_p95_ms']:.3f} | "
                         f"{row['cbc_median_ms']:.1f} / {row['cbc_p95_ms']:.1f} | {row['speedup']:.1f}x | "
                         f"{row['prepare_median_ms']:.1f} | {row['first_answer_speedup']:.2f}x | {row['worse']} | "
                         f"{row['better']} | {'' if target is None else f'>= {target}x: '}{_mark(ok)} |")
    if results.get('end_to_end'):
        import end_to_end
        lines += ['', '## B1 End to end: budget change -> new configuration serving (target: median <= 1 ms)', '',
                  end_to_end.markdown(results['end_to_end'])]
    if 'switching' in results:
        s = results['switching']
        lines += ['', f"## B2 Switching ({s['model']}, {s['blocks']} blocks, {s['switches']} random switches)", '',
                  '| figure | value | target |', '|---|---|---|',
                  f"| switch (file-backed bank, page-in included), median / p95 | {s['ours_median_ms']:.2f} / "
                  f"{s['ours_p95_ms']:.2f} ms | |",
                  f"| composite state_dict from disk into a built model, median | {s['state_dict_median_ms']:.1f} ms "
                  "| |",
                  f"| speedup vs state_dict load | {s['speedup_vs_state_dict']:.1f}x | >= 50x (>= 20x with page-in): "
                  f"{_mark(s['speedup_vs_state_dict'] >= 20)} |",
                  f"| LegoDNN's way (changed blocks from their files), median | {s['legodnn_median_ms']:.1f} ms "
                  f"({s['speedup_vs_legodnn']:.1f}x slower than ours) | |",
                  f"| first forward after a switch / steady forward | {s['first_over_steady']:.3f} | <= 1.05: "
                  f"{_mark(s['first_over_steady'] <= 1.05)} |",
                  f"| bank + teacher vs the {s['distinct_models']} distinct models of a 100-budget sweep | "
                  f"{s['bank_plus_teacher_mb']:.1f} MB vs {s['distinct_models_mb']:.1f} MB | |"]
    if 'offline' in results:
        import offline_cost
        lines += ['', '## B3 Offline cost (per training batch, same batches; target: retraining <= 3x teacher)', '',
                  offline_cost.markdown(results['offline'])]
    if 'fidelity' in results:
        from pipelines import fidelity_markdown
        lines += ['', '## B5 Fidelity (from bench/results/pipelines.json; targets: latency error <= 10% profiled, '
                  '<= 5% corrected, measured <= 1.05 x budget, resident <= 1.1 x weights, metric error <= 2 points, '
                  'full-budget estimate <= teacher + 1)', '', fidelity_markdown(results['fidelity'])]
    if 'latency' in results:
        import latency_fidelity
        lines += ['', '## B5 Latency fidelity, interleaved measurements (bench/latency_fidelity.py)', '']
        for key, variant in results['latency'].items():  # bank_profile, reprofiled, ..._N_threads
            if variant:
                lines += [f'{key}:', '', latency_fidelity.markdown(variant), '']
    return '\n'.join(lines) + '\n'


def plot(results: dict, out: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    if 'selection' in results:
        rows = results['selection']['rows']
        fig, ax = plt.subplots(figsize=(10, 4.5))
        names = [r['instances'].split(' (')[0] for r in rows]
        ax.bar(range(len(rows)), [r['speedup'] for r in rows], color='tab:blue')
        ax.axhline(100, color='tab:red', ls='--', label='banks target 100x')
        ax.axhline(10, color='tab:orange', ls='--', label='60 x 5 / multi-bank target 10x')
        ax.set_yscale('log')
        ax.set_xticks(range(len(rows)), names, rotation=30, ha='right', fontsize=8)
        ax.set_ylabel('median CBC time / median ours')
        ax.set_title('B1: exact selection vs LegoDNN PuLP/CBC (same instances, same budgets)')
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(osp.join(out, 'selection.png'), dpi=110)
        plt.close(fig)
    if 'switching' in results:
        s = results['switching']
        fig, ax = plt.subplots(figsize=(6, 3.5))
        labels = ['mmlego switch', "LegoDNN's files", 'state_dict load']
        ax.bar(labels, [s['ours_median_ms'], s['legodnn_median_ms'], s['state_dict_median_ms']],
               color=['tab:green', 'tab:gray', 'tab:gray'])
        ax.set_yscale('log')
        ax.set_ylabel('median ms per configuration change')
        ax.set_title('B2: switching (ResNet-18)')
        fig.tight_layout()
        fig.savefig(osp.join(out, 'switching.png'), dpi=110)
        plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='fewer instances and switches (a few minutes)')
    parser.add_argument('--only', nargs='+', choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument('--out', default=osp.join(ROOT, 'bench', 'results'))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    runners = dict(selection=_selection, end_to_end=_end_to_end, switching=_switching, offline=_offline,
                   fidelity=_fidelity, latency=_latency)
    results = {}
    for name in args.only:
        start, cpu_before = time.time(), cpu_times()
        results[name] = runners[name](args.quick)
        results[name + '_seconds'] = round(time.time() - start, 1)
        steal = steal_share(cpu_before, cpu_times())
        with open(osp.join(args.out, f'{name}.json'), 'w') as f:
            json.dump(dict(quick=args.quick, seconds=results[name + '_seconds'], cpu_steal_share=steal,
                           results=results[name]), f, indent=1)
        print(f'[bench] {name}: {results[name + "_seconds"]} s', flush=True)
    for name in BENCHMARKS:  # the summary covers every benchmark: earlier runs' results where not rerun now
        path = osp.join(args.out, f'{name}.json')
        if name not in results and osp.exists(path):
            results[name] = json.load(open(path))['results']
    text = summary(results)
    with open(osp.join(args.out, 'summary.md'), 'w') as f:
        f.write(text)
    plot(results, args.out)
    print(text)


if __name__ == '__main__':
    main()
