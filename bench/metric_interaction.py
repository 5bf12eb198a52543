"""B5 metric fidelity with compound damage: the pipeline sweeps' metric estimates, additive (LegoDNN's sum of drops)
against ``D + c D^2`` (``profiles.accuracy_interaction``), each against the metric the sweep measured on the test split.

    .venv/bin/python bench/metric_interaction.py [--banks work_dirs/pipelines] [--out bench/results/metric_interaction.json]

Reads, per model, the bank of ``bench/pipelines.py`` (``<banks>/<model>/bank/manifest.json``) and its accuracy
profiling's cache of evaluated composites (``<banks>/<model>/legodnn/accuracy_cache.json``), fits ``c`` to the
reference composites exactly as accuracy profiling does (:func:`mmlego.profiling.fit_drop_interaction`), and re-scores
every sweep row of ``bench/results/pipelines.json`` that measured one pruned configuration: its summed drop ``D`` is
recomputed from the bank (and checked against the row's: ``D``, or ``D + c D^2`` where the bank stores ``c`` and the
sweep used it), its estimate is the test split's teacher minus ``D`` or ``D + c D^2``. The choices are the sweeps' own: ``c`` does not change what the optimizer picks for one model.
"""
import argparse
import json
import os.path as osp
import statistics
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from mmlego.apis.sweep import anchor_metric_estimates, measured_one_configuration, runs_teacher  # noqa: E402
from mmlego.profiling.accuracy import fit_drop_interaction, reference_composite_damage  # noqa: E402
from mmlego.utils.atomic_io import atomic_write_json  # noqa: E402


def _drop(drops: dict, block: str, sparsity: float) -> float:
    return next(p['accuracy_drop'] for s, p in drops[block].items() if float(s) == float(sparsity))


def interaction_of(bank_dir: str) -> tuple[float, list, dict, float, float]:
    """``(c, composites, drops, profiling teacher metric, c the bank stores)`` of one bank, from its manifest and
    accuracy cache (the stored c is 0 for banks profiled before it existed: their sweeps estimated additively)."""
    profiles = json.load(open(osp.join(bank_dir, 'bank', 'manifest.json')))['profiles']
    cache = json.load(open(osp.join(bank_dir, 'legodnn', 'accuracy_cache.json')))
    drops, teacher = profiles['descendants'], profiles['teacher_metric']
    by_block = {block: {float(s): p['accuracy_drop'] for s, p in drops[block].items()} for block in cache['blocks']}
    composites = reference_composite_damage(by_block, teacher, cache['metrics'], cache['blocks'])
    return (fit_drop_interaction(composites), sorted(composites), drops, teacher,
            float(profiles.get('accuracy_interaction') or 0.0))


def rescore(model: dict, bank_dir: str) -> dict:
    """Median and max |estimate - measured| (points, 0-100) of one model's pruned sweep rows, both estimates."""
    interaction, composites, drops, teacher, stored = interaction_of(bank_dir)
    points = 1.0 if model['metric'] == 'mIoU' else 100.0
    errors = {'additive': [], 'compound': []}
    for sweep in (model['sweep'], model.get('latency_sweep', [])):
        sweep = [dict(row) for row in sweep]
        teachers = [row for row in sweep if row.get('measured_metric') is not None and runs_teacher(row)]
        if not teachers:
            continue
        report_teacher = teachers[-1]['measured_metric']
        anchor_metric_estimates(sweep, teacher, report_teacher)
        for row in sweep:
            if not measured_one_configuration(row) or row in teachers:
                continue
            total = sum(_drop(drops, block, s) for block, s in row['choice'].items())
            swept = total + stored * max(total, 0.0) ** 2  # what the sweep estimated with the bank's own c
            if abs(swept - row['estimated_drop']) > 1e-6 * max(1.0, abs(swept)):
                raise ValueError(f"{model['config']}: a sweep row's drop {row['estimated_drop']} is not its bank's "
                                 f'{swept}: the bank in {bank_dir} is not the one the sweep ran; re-run '
                                 'bench/pipelines.py for it')
            for name, drop in (('additive', total), ('compound', total + interaction * max(total, 0.0) ** 2)):
                errors[name].append(abs(report_teacher - drop - row['measured_metric']) * points)
    return dict(interaction=interaction, composites=composites, rows=len(errors['additive']),
                **{f'{name}_median_points': statistics.median(e) if e else None for name, e in errors.items()},
                **{f'{name}_max_points': max(e) if e else None for name, e in errors.items()})


def markdown(results: dict) -> str:
    lines = ['| model | c | reference composites: sum of drops -> measured drop | pruned rows | median error, additive '
             '/ compound (points) | max error, additive / compound (points) |', '|---|---|---|---|---|---|']
    for name, r in results.items():
        composites = ', '.join(f'{total:.3g} -> {actual:.3g}' for total, actual in r['composites'])
        lines.append(f"| {name} | {r['interaction']:.3f} | {composites} | {r['rows']} | "
                     f"{r['additive_median_points']:.2f} / {r['compound_median_points']:.2f} | "
                     f"{r['additive_max_points']:.2f} / {r['compound_max_points']:.2f} |")
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--banks', default=osp.join(ROOT, 'work_dirs', 'pipelines'))
    parser.add_argument('--pipelines', default=osp.join(ROOT, 'bench', 'results', 'pipelines.json'))
    parser.add_argument('--out', default=osp.join(ROOT, 'bench', 'results', 'metric_interaction.json'))
    args = parser.parse_args()
    pipelines = json.load(open(args.pipelines))
    results = {}
    for name, model in pipelines.items():
        bank_dir = osp.join(args.banks, name)
        if not osp.isfile(osp.join(bank_dir, 'legodnn', 'accuracy_cache.json')):
            print(f'[metric_interaction] {name}: no bank at {bank_dir} (bench/pipelines.py --only {name} builds it)')
            continue
        results[name] = rescore(model, bank_dir)
    if args.out:
        atomic_write_json(args.out, results)
    print(markdown(results))


if __name__ == '__main__':
    main()
