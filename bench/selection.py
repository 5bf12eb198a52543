"""B1 Selection: mmlego's default exact solver against LegoDNN's PuLP/CBC formulation, on the same instances.

Instances: the real profiles of the synthetic banks (``bench/results/profiles/*.json``, exported from
``work_dirs/pipelines/*/bank`` whenever those exist), >= 50 budgets each; random monotone instances at 20 / 40 / 60
blocks x 5 options (``structured``: latency and memory fall together with sparsity, as in a bank; ``independent``:
each option's latency and memory drawn apart, a harder two-resource problem); several banks under one budget.
Per instance the problem is prepared once (timed apart: ``prepare_ms``) and then each budget is answered
(``ours_ms``); CBC builds and solves the ILP per budget, as LegoDNN does. Every answer is checked: a weighted drop
above CBC's (or brute force's, where it fits) or a missed feasible budget counts in ``worse`` (must be 0); one below
CBC's counts in ``better`` (CBC stopped within its tolerances; ours is checked within the budgets exactly).
"""
from __future__ import annotations

import glob
import json
import math
import os.path as osp
import random
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import pulp

from mmlego.block_bank import BankProfiles, problem_from_profiles
from mmlego.scaling_optimizer import BlockOption, BruteForceSolver, ExactSolver, ModelProblem, budget_range

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PROFILES = osp.join(ROOT, 'bench', 'results', 'profiles')
SPARSITIES = (0.0, 0.2, 0.4, 0.6, 0.8)


def export_profiles(out_dir: str = PROFILES) -> List[str]:
    """Copies the profiles of every bank under ``work_dirs/pipelines`` into ``out_dir`` (one small JSON each)."""
    exported = []
    for manifest in sorted(glob.glob(osp.join(ROOT, 'work_dirs', 'pipelines', '*', 'bank', 'manifest.json'))):
        name = osp.basename(osp.dirname(osp.dirname(manifest)))
        data = json.load(open(manifest))
        record = dict(model=name, blocks=[b['name'] for b in data['extraction']['blocks']],
                      sparsities=data['sparsities'], profiles=data['profiles'])
        with open(osp.join(out_dir, f'{name}.json'), 'w') as f:
            json.dump(record, f, indent=1)
        exported.append(name)
    return exported


def bank_problems(profile_dir: str = PROFILES) -> Dict[str, ModelProblem]:
    problems = {}
    for path in sorted(glob.glob(osp.join(profile_dir, '*.json'))):
        record = json.load(open(path))
        problems[record['model']] = problem_from_profiles(BankProfiles.from_dict(record['profiles']),
                                                          record['blocks'], record['sparsities'],
                                                          name=record['model'])
    return problems


def random_problem(rng: random.Random, n_blocks: int, kind: str, name: str = 'model') -> ModelProblem:
    """A random monotone instance: latency, memory fall and the drop grows with sparsity (drop 0 at 0.0)."""
    blocks = {}
    for b in range(n_blocks):
        latency, memory = rng.uniform(0.5, 5.0), rng.randint(50_000, 5_000_000)
        drops = [0.0] + sorted(rng.uniform(0.0, 0.03) * s * 5 for s in SPARSITIES[1:])
        options = []
        for s, drop in zip(SPARSITIES, drops):
            if kind == 'structured':  # both resources shrink with the kept channels, with per-option noise
                keep = 1 - s
                lat, mem = latency * keep ** 1.4 * rng.uniform(0.9, 1.1), memory * keep ** 2 * rng.uniform(0.9, 1.1)
            else:
                lat, mem = latency * rng.uniform(0.2, 1.0), memory * rng.uniform(0.05, 1.0)
            options.append((s, drop, lat, int(mem)))
        lat_sorted = sorted((o[2] for o in options), reverse=True)  # monotone: more sparsity, never more cost
        mem_sorted = sorted((o[3] for o in options), reverse=True)
        blocks[f'block{b}'] = [BlockOption(s, d, lat, mem) for (s, d, _, _), lat, mem in
                               zip(options, lat_sorted, mem_sorted)]
    return ModelProblem(name, teacher_metric=0.5, blocks=blocks, frame_latency_ms=1.0, frame_memory_bytes=100_000)


def draw_budgets(problems: Sequence[ModelProblem], rng: random.Random, count: int) -> List[tuple]:
    """Budgets across the feasible range: a third latency only, a third memory only, a third both."""
    r = budget_range(list(problems))
    budgets = []
    for i in range(count):
        latency = r['min_latency_ms'] + rng.uniform(0.02, 1.0) * (r['max_latency_ms'] - r['min_latency_ms'])
        memory = r['min_memory_bytes'] + rng.uniform(0.02, 1.0) * (r['max_memory_bytes'] - r['min_memory_bytes'])
        budgets.append([(latency, None), (None, memory), (latency, memory)][i % 3])
    return budgets


def cbc_legodnn(problems: Sequence[ModelProblem], latency_ms: Optional[float],
                memory_bytes: Optional[float]) -> Optional[float]:
    """LegoDNN's formulation, built and solved per budget: the optimal weighted drop, or None if infeasible."""
    model = pulp.LpProblem('legodnn', pulp.LpMinimize)
    objective, latency, memory, chosen = [], [], [], []
    frame_latency = sum(p.frame_latency_ms for p in problems)
    frame_memory = sum(p.frame_memory_bytes for p in problems)
    for m, problem in enumerate(problems):
        for b, options in enumerate(problem.blocks.values()):
            x = [pulp.LpVariable(f'x_{m}_{b}_{i}', cat=pulp.LpBinary) for i in range(len(options))]
            model += pulp.lpSum(x) == 1
            chosen += [(problem.weight * o.accuracy_drop, v) for o, v in zip(options, x)]
            objective += [problem.weight * o.accuracy_drop * v for o, v in zip(options, x)]
            latency += [o.latency_ms * v for o, v in zip(options, x)]
            memory += [o.memory_bytes * v for o, v in zip(options, x)]
    model += pulp.lpSum(objective)
    if latency_ms is not None:
        model += pulp.lpSum(latency) <= latency_ms - frame_latency
    if memory_bytes is not None:
        model += pulp.lpSum(memory) <= memory_bytes - frame_memory
    model.solve(pulp.PULP_CBC_CMD(msg=False, gapAbs=0))
    if model.status != pulp.LpStatusOptimal:
        return None
    return math.fsum(drop for drop, v in chosen if (v.value() or 0.0) > 0.5)


def weighted_drop(problems: Sequence[ModelProblem], result) -> Optional[float]:
    """The objective every solver minimizes: the weighted sum of the chosen options' accuracy drops. Not the
    estimated metrics: their compound damage (``drop_interaction``) is an increasing function of one model's summed
    drops, which CBC's linear objective does not hold, so comparing metrics would count equal answers as worse."""
    if result.status == 'infeasible':
        return None
    return math.fsum(p.weight * next(o for o in p.blocks[block] if o.sparsity == sparsity).accuracy_drop
                     for p in problems for block, sparsity in result.choices[p.name].items())


def measure_instance(problems: List[ModelProblem], budgets: List[tuple], brute: bool) -> dict:
    """Prepare once, then per budget: ours, CBC, and brute force when it fits; times in ms and disagreements."""
    ExactSolver._cache.clear()
    start = time.perf_counter()
    prepared = ExactSolver().prepare(problems).ready()  # every budget-independent step (else the first budget's)
    prepare_ms = (time.perf_counter() - start) * 1000
    ours, cbc, worse, better, fallbacks, results = [], [], 0, 0, 0, []
    for latency_ms, memory_bytes in budgets:  # ours first, all budgets, then CBC: neither evicts the other's caches
        start = time.perf_counter()
        results.append(prepared.solve(latency_ms, memory_bytes))
        ours.append((time.perf_counter() - start) * 1000)
    for (latency_ms, memory_bytes), result in zip(budgets, results):
        start = time.perf_counter()
        reference = cbc_legodnn(problems, latency_ms, memory_bytes)
        cbc.append((time.perf_counter() - start) * 1000)
        fallbacks += result.solver != 'exact'
        got = weighted_drop(problems, result)
        references = [reference]
        if brute:
            references.append(weighted_drop(problems, BruteForceSolver().solve(problems, latency_ms, memory_bytes)))
        for want in references:
            if (got is None) != (want is None) or (got is not None and got > want + 1e-9 * max(1, abs(want))):
                worse += 1  # infeasible where a reference found a configuration, or a larger drop
            elif got is not None and got < want - 1e-9 * max(1, abs(want)):
                better += 1  # CBC stopped within its own tolerances (our answer is checked within the budgets)
    return dict(prepare_ms=prepare_ms, ours_ms=ours, cbc_ms=cbc, worse=worse, better=better, fallbacks=fallbacks,
                frontier_points=None if prepared.frontier is None else len(prepared.frontier))


def summarize(name: str, measured: List[dict]) -> dict:
    ours = np.concatenate([m['ours_ms'] for m in measured])
    cbc = np.concatenate([m['cbc_ms'] for m in measured])
    prepare = np.array([m['prepare_ms'] for m in measured])
    first = np.array([m['prepare_ms'] + m['ours_ms'][0] for m in measured])
    first_cbc = np.array([m['cbc_ms'][0] for m in measured])
    points = [m['frontier_points'] for m in measured]
    return dict(instances=name, budgets=int(len(ours)), ours_median_ms=float(np.median(ours)),
                ours_p95_ms=float(np.percentile(ours, 95)), cbc_median_ms=float(np.median(cbc)),
                cbc_p95_ms=float(np.percentile(cbc, 95)), speedup=float(np.median(cbc) / np.median(ours)),
                prepare_median_ms=float(np.median(prepare)),
                first_answer_speedup=float(np.median(first_cbc) / np.median(first)),
                frontier_built=sum(p is not None for p in points), searched=sum(p is None for p in points),
                worse=int(sum(m['worse'] for m in measured)), better=int(sum(m['better'] for m in measured)),
                fallbacks=int(sum(m['fallbacks'] for m in measured)))


def run(quick: bool = False, seed: int = 0) -> dict:
    """All B1 rows; the bank rows need ``bench/results/profiles`` (see :func:`export_profiles`)."""
    rng = random.Random(seed)
    rows, details = [], {}
    banks = bank_problems()
    per_bank = 50 if not quick else 20
    bank_measured = []
    for name, problem in banks.items():
        count = math.prod(len(o) for o in problem.blocks.values())
        measured = measure_instance([problem], draw_budgets([problem], rng, per_bank), brute=count <= 20_000)
        details[name] = summarize(name, [measured])
        bank_measured.append(measured)
    if bank_measured:
        rows.append(summarize(f'{len(banks)} synthetic banks ({", ".join(banks)})', bank_measured))
    instances, budgets = (30, 3) if not quick else (8, 2)
    for kind in ('structured', 'independent'):
        for blocks in (20, 40, 60):
            measured = []
            for _ in range(instances):
                problem = random_problem(rng, blocks, kind)
                measured.append(measure_instance([problem], draw_budgets([problem], rng, budgets), False))
            rows.append(summarize(f'random {kind} {blocks} x 5', measured))
    names = list(banks)
    for together in (4, 8):
        if not names:
            break
        measured = []
        for i in range(10 if not quick else 3):
            chosen = [names[(i + j) % len(names)] for j in range(together)]
            problems = [ModelProblem(f'{n}_{j}', banks[n].teacher_metric, banks[n].blocks, banks[n].frame_latency_ms,
                                     banks[n].frame_memory_bytes) for j, n in enumerate(chosen)]
            measured.append(measure_instance(problems, draw_budgets(problems, rng, 6 if not quick else 3), False))
        rows.append(summarize(f'{together} banks under one budget', measured))
    return dict(rows=rows, banks=details)
