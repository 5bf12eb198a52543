"""B5 latency fidelity, measured side by side: the latency estimates of a bank against interleaved measurements.

    .venv/bin/python bench/latency_fidelity.py [--only yolov3 fcn ...] [--reprofile] [--configs 20] [--rounds 8]

(``bench/run.py --only latency`` runs it for every bank, with the bank's profile and re-profiled; run alone, the
models measured are merged into ``bench/results/latency.json``.)

A sweep (``tools/test.py --sweep``) measures each configuration once, in one stretch of 20 forwards, minutes after
the previous one: on a shared machine whose speed drifts by tens of percent between stretches, its "same
configuration re-measured" column is as large as the error it is meant to judge. Here each model (loaded as a user
loads it: ``init_lego_model``, file-backed bank) visits its five all-at-s composites and random mixed
configurations in ``rounds`` rounds, each round in a new random order; per visit: the switch, 2 untimed forwards,
the median of 5 timed ones (``LegoDNN.measure_latency_ms``, the served tensor path with the latency hooks). A
configuration's measurement is the median over its visits, so a slow phase of the machine touches every
configuration alike instead of the ones measured in it.

Reported per model (targets of issue 8):

* ``profiled``: median over configurations of |profiled estimate - measurement| / measurement (<= 10%). The profile
  is the bank's, from the pipeline run (another process, often hours earlier), so this includes the drift since;
  with ``--reprofile`` the child first re-profiles the bank's latencies in the model (``profile_latency``, what
  ``tools/profile_latency.py`` runs on a new device), so the figure is the estimator's, not the drift's.
* ``profiled_uncalibrated``: the same without the per-sparsity calibration of the block latencies (frame + the
  blocks' in-model timings as measured): what the calibration buys, on the same measurements.
* ``corrected``: per visit, the estimate the model would use at that moment (profile times the online correction,
  learned only from the forwards served *before* the visit, i.e. of other configurations) against the visit's
  measurement; median over visits (<= 5%).
* ``remeasured``: the machine against itself: per configuration, the relative difference of the medians of its odd
  and its even visits; median over configurations.
* ``over_budget``: ``budgets`` latency budgets across the range; after ``LegoDNN.scale`` and 5 served forwards with
  ``rescale_if_needed`` (what ``OnlineScalingHook`` does per iteration), the median of 20 timed forwards over the
  budget; max and median over the budgets the running configuration is feasible for (<= 1.05), and the count over
  1.05 (``misses``); budgets the online correction found below the smallest configuration are counted as
  ``infeasible_budgets``. Each budget is solved twice, in alternating order: with the learned latency headroom
  (``over_budget_*``, the default) and without (``over_budget_no_headroom_*``); ``headroom_metric_cost`` is the
  estimated metric the headroom gave up (mean over the budgets).
* ``served``: after that measurement (default headroom), 20 more forwards served with ``rescale_if_needed`` after
  each (:func:`served_stream`): the median served latency over the budget, max and median over the budgets the loop
  still found feasible at the end, misses over 1.05, and ``served_infeasible``. A fixed configuration's 20 forwards
  cannot answer a phase of the machine that starts during them; the served stream is what a user running
  ``OnlineScalingHook`` gets in it.
"""
import argparse
import json
import os.path as osp
import random
import statistics
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from child import emit, merge_results, run_child  # noqa: E402

from mmlego.profiling.latency import DEFAULT_MIN_SECONDS  # noqa: E402

TARGETS = dict(profiled=0.10, corrected=0.05, over_budget=1.05)
#: Where the banks and their teachers are by default: those of bench/pipelines.py (``--banks`` / ``--teachers``:
#: e.g. the latency-only banks of bench/latency_banks.py).
BANKS = osp.join(ROOT, 'work_dirs', 'pipelines')
TEACHERS = osp.join(ROOT, 'bench', 'results', 'teachers.json')


def _rel(a: float, b: float) -> float:
    return abs(a - b) / b


def configurations(names: list, sparsities: list, count: int, seed: int) -> list:
    """The all-at-s composites, then ``count`` - len(sparsities) random mixed selections (no duplicates)."""
    rng = random.Random(seed)
    chosen = [{n: s for n in names} for s in sparsities]
    seen = {tuple(c[n] for n in names) for c in chosen}
    while len(chosen) < max(count, len(sparsities)) and len(seen) < len(sparsities) ** len(names):
        pick = tuple(rng.choice(sparsities) for _ in names)
        if pick not in seen:
            seen.add(pick)
            chosen.append(dict(zip(names, pick)))
    return chosen


def reprofile_in_model(model, example, min_seconds: float = DEFAULT_MIN_SECONDS) -> dict:
    """Re-profiles a loaded LegoDNN model's bank in the model (what the pipeline and ``tools/profile_latency.py``
    run) and re-attaches it (a fresh problem, the correction reset); returns ``profile_latency``'s check.
    ``min_seconds``: the span of the profiling (``profile_latency``'s)."""
    from mmlego.models import TENSOR_PATHS
    from mmlego.profiling import profile_latency
    model.switcher.reset()
    model.switcher.detach()
    model.timer.detach()
    model.switcher = model.timer = None
    check = profile_latency(model.bank, model.architecture, (example,),
                            TENSOR_PATHS[model.bank.meta.get('tensor_path', 'tensor')], show_progress=False,
                            min_seconds=min_seconds)
    model.attach_bank(model.bank)
    return check


def load_lego(name: str, banks: str = BANKS, teachers: str = TEACHERS, threads: int | None = None):
    """A model's bank loaded as a user loads it (``init_lego_model``, file-backed bank) with its teacher, and the
    example batch of its profiles; ``threads`` sets the process's CPU intra-op threads first (default: the count
    the bank was profiled with)."""
    import torch
    if threads:
        torch.set_num_threads(threads)  # the process's; LegoDNN warns if the bank was profiled with another count
    from mmlego.apis import init_lego_model
    from mmlego.models.tensor_path import example_batch
    from pipelines import LEGO_CONFIGS
    checkpoint = json.load(open(teachers))[name]['checkpoint']
    bank = osp.join(banks, name, 'bank')
    model = init_lego_model(osp.join(ROOT, LEGO_CONFIGS[name]), bank, device='cpu', checkpoint=checkpoint,
                            cfg_options=None if threads else profiled_threads_options(bank))
    return model, example_batch(model.cfg, model.architecture, batch_size=1)


def profiled_threads_options(bank: str) -> dict:
    """Config options that serve (and re-profile) with the CPU thread count the bank was profiled with, as its
    load warning tells a user to (``model.latency_threads``): with another count every estimate starts off by the
    ratio of the two speeds."""
    threads = json.load(open(osp.join(bank, 'manifest.json')))['profiles'].get('num_threads')
    return {'model.latency_threads': threads} if threads else {}


def measure_model(name: str, count: int, rounds: int, budgets: int, reprofile: bool = False, seed: int = 0,
                  banks: str = BANKS, teachers: str = TEACHERS, threads: int | None = None) -> dict:
    import torch
    model, example = load_lego(name, banks, teachers, threads)
    if reprofile:
        reprofile_in_model(model, example)
    names = [spec.name for spec in model.bank.blocks]
    chosen = configurations(names, list(model.bank.sparsities), count, seed)
    rng = random.Random(seed + 1)
    model.measure_latency_ms(example, warmup=10, repeats=10)  # settle (clock, allocator, the first page faults)
    visits = {i: [] for i in range(len(chosen))}
    corrected_errors = []
    for _ in range(rounds):
        order = list(range(len(chosen)))
        rng.shuffle(order)
        for i in order:
            model.switch(chosen[i])
            corrected = model.estimate(chosen[i])['latency_ms']  # ratio from the forwards served before
            measured = model.measure_latency_ms(example, warmup=2, repeats=5)
            visits[i].append(measured)
            corrected_errors.append(_rel(corrected, measured))
    rows = []
    import dataclasses

    from mmlego.block_bank.profiles import problem_from_profiles
    # The same profiles without the per-sparsity calibration: frame + the blocks' in-model timings as measured.
    uncalibrated = problem_from_profiles(dataclasses.replace(model.bank.profiles, latency_calibration=None), names,
                                         model.bank.sparsities)
    for i, selection in enumerate(chosen):
        measured = statistics.median(visits[i])
        odd, even = statistics.median(visits[i][1::2]), statistics.median(visits[i][0::2])
        rows.append(dict(selection=selection, measured_ms=measured,
                         profiled_ms=model.estimate(selection, corrected=False)['latency_ms'],
                         # frame + in-model block timings without the per-sparsity calibration
                         uncalibrated_ms=uncalibrated.estimate(selection)['latency_ms'],
                         remeasured=abs(odd - even) / ((odd + even) / 2)))
    over = budget_misses(model, example, budgets)
    return dict(model=name, configurations=len(chosen), rounds=rounds, reprofiled=reprofile,
                num_threads=torch.get_num_threads(), profiled_num_threads=model.bank.profiles.num_threads,
                teacher_profiled_ms=rows[0]['profiled_ms'], teacher_measured_ms=rows[0]['measured_ms'],
                profiled=statistics.median(_rel(r['profiled_ms'], r['measured_ms']) for r in rows),
                profiled_uncalibrated=statistics.median(_rel(r['uncalibrated_ms'], r['measured_ms']) for r in rows),
                calibration=dict(model.bank.profiles.latency_calibration or {}),
                corrected=statistics.median(corrected_errors),
                remeasured=statistics.median(r['remeasured'] for r in rows),
                composites_profiled=[_rel(r['profiled_ms'], r['measured_ms'])
                                     for r in rows[:len(model.bank.sparsities)]],
                **over, rows=rows)


def served_stream(model, example, forwards: int = 20) -> dict:
    """What serving delivers with the online loop running: ``forwards`` forwards, each timed alone and followed by
    ``rescale_if_needed`` (``OnlineScalingHook``'s per-iteration step), so a phase of the machine that starts during
    them is met by a re-solve (a smaller configuration, or ``infeasible`` when even the smallest is over budget).
    ``served_ms``: the median of the served forwards; ``served_status``: the solver's status at the end;
    ``served_switches``: how often the loop changed the configuration."""
    times, switches = [], 0
    for _ in range(forwards):
        times.append(model.measure_latency_ms(example, warmup=0, repeats=1))
        before = dict(model.selection)
        model.rescale_if_needed()
        switches += dict(model.selection) != before
    return dict(served_ms=statistics.median(times), served_status=model.last_result.status, served_switches=switches)


def budget_misses(model, example, budgets: int) -> dict:
    """``budgets`` latency budgets across the range, each solved twice in alternating order: with the learned
    latency headroom (the default, ``'auto'``) and without (0). Per solve: ``LegoDNN.scale``, 5 served forwards
    with ``rescale_if_needed`` (what ``OnlineScalingHook`` does per iteration), the median of 20 timed forwards
    (the issue's measurement: >= 20).
    Both modes teach the one headroom (it learns from every configuration switched in)."""
    limits = model.budget_range()
    runs = {'auto': [], 'none': []}
    for k in range(budgets):
        budget = limits['min_latency_ms'] + (limits['max_latency_ms'] - limits['min_latency_ms']) * (k + 0.5) / budgets
        for mode in (('auto', 'none') if k % 2 == 0 else ('none', 'auto')):
            model.headroom.fixed = None if mode == 'auto' else 0.0
            model.scale(latency_ms=budget)
            headroom = model.last_headroom
            for _ in range(5):
                model.measure_latency_ms(example, warmup=0, repeats=1)
                model.rescale_if_needed()
            # The status of the configuration that runs now: a budget the correction found below the smallest
            # configuration runs that one, infeasible, and is no miss of the optimizer (counted apart).
            runs[mode].append(dict(budget_ms=budget, measured_ms=model.measure_latency_ms(example, warmup=1, repeats=20),
                                   status=model.last_result.status, headroom=headroom,
                                   estimated_metric=model.estimate()['metric'], choice=dict(model.selection)))
            if mode == 'auto':
                runs[mode][-1].update(served_stream(model, example))
    model.headroom.fixed = None

    def summary(rows: list, prefix: str) -> dict:
        ratios = [o['measured_ms'] / o['budget_ms'] for o in rows if o['status'] != 'infeasible']
        return {f'{prefix}max': max(ratios) if ratios else None,
                f'{prefix}median': statistics.median(ratios) if ratios else None,
                f'{prefix}misses': sum(r > TARGETS['over_budget'] for r in ratios)}
    served = [o['served_ms'] / o['budget_ms'] for o in runs['auto'] if o['served_status'] != 'infeasible']
    feasible = [(a, b) for a, b in zip(runs['auto'], runs['none'])
                if a['status'] != 'infeasible' and b['status'] != 'infeasible']
    return dict(**summary(runs['auto'], 'over_budget_'), **summary(runs['none'], 'over_budget_no_headroom_'),
                headroom_mean=statistics.mean(o['headroom'] for o in runs['auto']),
                headroom_max=max(o['headroom'] for o in runs['auto']),
                # what the headroom costs: estimated metric given up, mean over budgets both modes could meet
                headroom_metric_cost=statistics.mean(b['estimated_metric'] - a['estimated_metric'] for a, b in feasible)
                if feasible else None,
                served_max=max(served) if served else None,
                served_median=statistics.median(served) if served else None,
                served_misses=sum(r > TARGETS['over_budget'] for r in served),
                served_infeasible=sum(o['served_status'] == 'infeasible' for o in runs['auto']),
                budgets=runs['auto'], budgets_no_headroom=runs['none'],
                infeasible_budgets=sum(o['status'] == 'infeasible' for o in runs['auto']))


def run(names, count: int, rounds: int, budgets: int, reprofile: bool = False, banks: str = BANKS,
        teachers: str = TEACHERS, threads: int | None = None) -> dict:
    results = {}
    for name in names:
        if not osp.exists(osp.join(banks, name, 'bank', 'manifest.json')):
            print(f'[latency_fidelity] {name}: no bank in {banks} (run bench/pipelines.py --only {name}, or '
                  f'bench/latency_banks.py --only {name} and pass --banks work_dirs/latency_banks)')
            continue
        result, stderr = run_child(__file__, ['--child', name, '--configs', str(count), '--rounds', str(rounds),
                                              '--budgets', str(budgets), '--banks', banks, '--teachers', teachers]
                                   + ['--reprofile'] * reprofile
                                   + (['--threads', str(threads)] if threads else []), ROOT)
        if result is None:
            raise SystemExit(f'latency fidelity of {name} failed:\n{stderr}')
        result['banks'] = osp.relpath(banks, ROOT)
        results[name] = result
        print(f"[latency_fidelity] {name}: profiled {result['profiled']:.1%}, corrected {result['corrected']:.1%}, "
              f"re-measured {result['remeasured']:.1%}, max over budget {result['over_budget_max']}", flush=True)
    return results


def _pair(r: dict, prefix: str) -> str:
    if r.get(f'{prefix}max') is None:
        return '-'
    return f"{r[f'{prefix}median']:.3f} / {r[f'{prefix}max']:.3f}, {r[f'{prefix}misses']}"


def _served(r: dict) -> str:
    if r.get('served_misses') is None:  # results of runs before the served stream
        return '-'
    return f"{_pair(r, 'served_')} ({r['served_infeasible']})"


def _headroom(r: dict) -> str:
    if r.get('headroom_mean') is None:
        return '- | -'
    cost = '-' if r.get('headroom_metric_cost') is None else f"{r['headroom_metric_cost']:.4f}"
    return f"{r['headroom_mean']:.1%} / {r['headroom_max']:.1%} | {cost}"


def markdown(results: dict) -> str:
    def mark(value, target, fmt):
        if value is None:
            return '-'
        return f"{format(value, fmt)} ({'met' if value <= target else '**not met**'})"
    lines = ['| model | profile | configurations x rounds | teacher profiled / measured ms | error, profiled (<= 10%) | '
             'uncalibrated | corrected online (<= 5%) | same configuration re-measured | '
             'measured / budget, median / max (<= 1.05) | misses over 1.05 | without headroom: median / max, misses | '
             'headroom mean / max | metric given up | served with the online loop: median / max, misses (infeasible) |',
             '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    for name, r in results.items():
        median_over = '-' if r['over_budget_median'] is None else f"{r['over_budget_median']:.3f}"
        profile = 're-profiled' if r.get('reprofiled') else "the bank's"
        raw = '-' if r.get('profiled_uncalibrated') is None else f"{r['profiled_uncalibrated']:.1%}"
        lines.append(f"| {name} | {profile} | {r['configurations']} x {r['rounds']} | {r['teacher_profiled_ms']:.2f} / "
                     f"{r['teacher_measured_ms']:.2f} | {mark(r['profiled'], TARGETS['profiled'], '.1%')} | "
                     f"{raw} | "
                     f"{mark(r['corrected'], TARGETS['corrected'], '.1%')} | {r['remeasured']:.1%} | {median_over} / "
                     f"{mark(r['over_budget_max'], TARGETS['over_budget'], '.3f')} | {r.get('over_budget_misses', '-')} | "
                     f"{_pair(r, 'over_budget_no_headroom_')} | {_headroom(r)} | {_served(r)} |")
    return '\n'.join(lines)


def main() -> None:
    from pipelines import LEGO_CONFIGS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--only', nargs='+', choices=sorted(LEGO_CONFIGS), default=list(LEGO_CONFIGS))
    parser.add_argument('--configs', type=int, default=20, help='configurations per model (composites included)')
    parser.add_argument('--rounds', type=int, default=8)
    parser.add_argument('--budgets', type=int, default=10)
    parser.add_argument('--reprofile', action='store_true', help='re-profile the latencies in the model first')
    parser.add_argument('--banks', default=BANKS, help='directory of <model>/bank (default: bench/pipelines.py\'s)')
    parser.add_argument('--teachers', default=TEACHERS, help='model -> checkpoint JSON of those banks\' teachers')
    parser.add_argument('--threads', type=int, help='CPU intra-op threads of the measuring process (default: the '
                        'count each bank was profiled with); a bank profiled with another count is off by that')
    parser.add_argument('--child', help=argparse.SUPPRESS)
    parser.add_argument('--out', default=osp.join(ROOT, 'bench', 'results', 'latency.json'),
                        help="merged into (bench/run.py's format: the models measured now replace their entries)")
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error('--rounds must be >= 2 (odd and even visits are compared for the re-measured column)')
    if args.child:
        emit(measure_model(args.child, args.configs, args.rounds, args.budgets, args.reprofile, banks=args.banks,
                           teachers=args.teachers, threads=args.threads))
        return
    results = run(args.only, args.configs, args.rounds, args.budgets, args.reprofile, args.banks, args.teachers,
                  args.threads)
    if results and args.out:
        variant = ('reprofiled' if args.reprofile else 'bank_profile') + (f'_{args.threads}_threads'
                                                                          if args.threads else '')
        merge_results(args.out, lambda merged: merged.setdefault(variant, {}).update(results))
    print(markdown(results))


if __name__ == '__main__':
    main()
