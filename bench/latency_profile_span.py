"""Does profiling over a longer span describe the device better? Short and long profiles side by side.

    .venv/bin/python bench/latency_profile_span.py [--only deeppose tsn ...] [--spans 0 10] [--cycles 3]
        [--threads 1] [--banks DIR --teachers JSON] [--out FILE]

A shared VM changes speed in phases: on this project's 2-vCPU machine (2026-12-07) the median of half a second of
a quarter-width DeepLabv3's forwards moved between 8.5 and 12.6 ms from one half second to the next, a pure-Python
loop by up to 1.8x. The in-model profile of a model that serves in a few milliseconds took under a second (4 rounds
over the five all-at-s composites), i.e. one or two phases: it described them, not the device.
``profile_latency(min_seconds=...)`` goes on in more rounds until its visits span that long.

Per model (loaded as a user loads it, ``init_lego_model``, file-backed bank), in one process, ``cycles`` times: the
bank re-profiled in the model with each span of ``--spans`` (the order alternating between cycles), then the five
composites measured in interleaved visits for ``--measure-seconds`` (per visit: the switch, 2 untimed forwards,
the median of 5 timed ones, ``LegoDNN.measure_latency_ms``). A composite's reference is the median of its visits
over every cycle: the whole run's typical speed. Reported per span: the median and the largest |profile - reference|
/ reference over cycles and composites ("error"), and how far the same span's profiles of one composite differ
between cycles ((max - min) / reference, median over composites: "reproducibility"); beside them the machine
against itself: the odd against the even visits of a composite (phases shorter than a cycle), and the same
(max - min) / reference over the cycles' own measurements (phases as long as a cycle). Results merge into ``--out``
(default ``bench/results/latency_profile_span.json``) under ``threads_<N>``.
"""
import argparse
import json
import os.path as osp
import random
import statistics
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from child import emit, merge_results, run_child  # noqa: E402
from latency_fidelity import BANKS, TEACHERS, load_lego, reprofile_in_model  # noqa: E402


def _measure_composites(model, example, sparsities, seconds: float, rng: random.Random) -> dict:
    """Interleaved visits of the all-at-s composites for ``seconds``: sparsity -> list of visit medians."""
    names = [spec.name for spec in model.bank.blocks]
    visits = {s: [] for s in sparsities}
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or min(len(v) for v in visits.values()) < 2:
        order = list(sparsities)
        rng.shuffle(order)
        for sparsity in order:
            model.switch({name: sparsity for name in names})
            visits[sparsity].append(model.measure_latency_ms(example, warmup=2, repeats=5))
    return visits


def summarize(profiles: dict, visits: dict) -> dict:
    """Per span: error and reproducibility of its profiles (see the module docstring) against the visits."""
    reference = {s: statistics.median(v) for s, v in visits.items()}
    out = {}
    for span, cycles in profiles.items():
        errors = [abs(cycle[s] - reference[s]) / reference[s] for cycle in cycles for s in reference]
        spread = [(max(c[s] for c in cycles) - min(c[s] for c in cycles)) / reference[s] for s in reference]
        out[span] = dict(median_error=statistics.median(errors), max_error=max(errors),
                         reproducibility=statistics.median(spread))
    return out


def measure_model(name: str, spans: list, cycles: int, measure_seconds: float, banks: str, teachers: str,
                  threads: int | None) -> dict:
    import torch
    model, example = load_lego(name, banks, teachers, threads)
    sparsities = list(model.bank.sparsities)
    rng = random.Random(0)
    profiles = {str(span): [] for span in spans}
    durations = {str(span): [] for span in spans}
    visits = {s: [] for s in sparsities}
    cycle_medians = {s: [] for s in sparsities}  # the machine against itself at the profiles' time scale
    for cycle in range(cycles):
        for span in (spans if cycle % 2 == 0 else spans[::-1]):
            start = time.perf_counter()
            reprofile_in_model(model, example, min_seconds=span)
            durations[str(span)].append(time.perf_counter() - start)
            composites = model.bank.profiles.composite_latency_ms
            profiles[str(span)].append({s: composites[next(k for k in composites if float(k) == s)]
                                        for s in sparsities})
        for s, times in _measure_composites(model, example, sparsities, measure_seconds, rng).items():
            visits[s].extend(times)
            cycle_medians[s].append(statistics.median(times))
    odd = {s: statistics.median(v[1::2]) for s, v in visits.items()}
    even = {s: statistics.median(v[0::2]) for s, v in visits.items()}
    remeasured = statistics.median(abs(odd[s] - even[s]) / ((odd[s] + even[s]) / 2) for s in sparsities)
    reference = {s: statistics.median(v) for s, v in visits.items()}
    measured_reproducibility = statistics.median((max(m) - min(m)) / reference[s] for s, m in cycle_medians.items())
    return dict(model=name, num_threads=torch.get_num_threads(), spans=spans, cycles=cycles,
                profile_seconds={k: statistics.median(v) for k, v in durations.items()},
                reference_ms={str(s): statistics.median(v) for s, v in visits.items()},
                profiles={k: [{str(s): ms for s, ms in c.items()} for c in v] for k, v in profiles.items()},
                cycle_measured_ms={str(s): m for s, m in cycle_medians.items()},
                remeasured=remeasured, measured_reproducibility=measured_reproducibility,
                by_span=summarize(profiles, visits))


def markdown(results: dict) -> str:
    spans = next(iter(results.values()))['spans'] if results else []
    head = ' | '.join(f'span {s:g} s: seconds, error median / max, reproducibility' for s in spans)
    lines = [f'| model | teacher ms (reference) | {head} | measured: odd / even visits, between cycles |',
             '|---|---|' + '---|' * len(spans) + '---|']
    for name, r in results.items():
        cells = []
        for span in spans:
            b = r['by_span'][str(span)]
            cells.append(f"{r['profile_seconds'][str(span)]:.1f} s, {b['median_error']:.1%} / {b['max_error']:.1%}, "
                         f"{b['reproducibility']:.1%}")
        between = '-' if r.get('measured_reproducibility') is None else f"{r['measured_reproducibility']:.1%}"
        lines.append(f"| {name} | {r['reference_ms']['0.0']:.2f} | {' | '.join(cells)} | {r['remeasured']:.1%}, "
                     f"{between} |")
    return '\n'.join(lines)


def main() -> None:
    from pipelines import LEGO_CONFIGS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--only', nargs='+', choices=sorted(LEGO_CONFIGS), default=list(LEGO_CONFIGS))
    parser.add_argument('--spans', nargs='+', type=float, default=[0.0, 10.0], help='min_seconds of the profiles')
    parser.add_argument('--cycles', type=int, default=3)
    parser.add_argument('--measure-seconds', type=float, default=10.0)
    parser.add_argument('--threads', type=int, help='CPU intra-op threads (default: as the process runs)')
    parser.add_argument('--banks', default=BANKS)
    parser.add_argument('--teachers', default=TEACHERS)
    parser.add_argument('--markdown', action='store_true', help='only print the table of --out')
    parser.add_argument('--child', help=argparse.SUPPRESS)
    parser.add_argument('--out', default=osp.join(ROOT, 'bench', 'results', 'latency_profile_span.json'))
    args = parser.parse_args()
    if args.cycles < 1 or (args.threads is not None and args.threads < 1) or min(args.spans) < 0:
        parser.error('--cycles and --threads must be >= 1, --spans >= 0')
    if args.markdown:
        for key, results in json.load(open(args.out))['results'].items():
            print(f'{key}:\n{markdown(results)}')
        return
    if args.child:
        emit(measure_model(args.child, args.spans, args.cycles, args.measure_seconds, args.banks, args.teachers,
                           args.threads))
        return
    results = {}
    for name in args.only:
        if not osp.exists(osp.join(args.banks, name, 'bank', 'manifest.json')):
            print(f'[latency_profile_span] {name}: no bank in {args.banks}, skipped')
            continue
        result, stderr = run_child(__file__, ['--child', name, '--cycles', str(args.cycles), '--measure-seconds',
                                              str(args.measure_seconds), '--banks', args.banks, '--teachers',
                                              args.teachers, '--spans', *map(str, args.spans)]
                                   + (['--threads', str(args.threads)] if args.threads else []), ROOT)
        if result is None:
            raise SystemExit(f'{name} failed:\n{stderr}')
        results[name] = result
        print(markdown({name: result}).splitlines()[-1], flush=True)
    if results:
        threads = next(iter(results.values()))['num_threads']
        merge_results(args.out, lambda merged: merged.setdefault(f'threads_{threads}', {}).update(results))
        print(markdown(results))


if __name__ == '__main__':
    main()
