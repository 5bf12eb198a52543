"""Tests of the default 'exact' solver's parts: the dominance filter, the frontier, branch and bound, the cache,
and the LegoDNN wrapper's prepared problem (speed lives in bench/run.py, not here)."""
import itertools
import math
import random

import numpy as np
import pytest

from mmlego.scaling_optimizer import (BlockOption, ExactSolver, ModelProblem, PreparedProblems, PulpSolver,
                                      budget_range, solve)
from mmlego.scaling_optimizer.frontier import KEY_DECIMALS, pareto_indices

SPARSITIES = (0.0, 0.2, 0.4, 0.6, 0.8)


def naive_pareto(latency, memory, loss, sparsity):
    """O(n^2) reference: a point is dropped iff another is <= in latency and memory and better or equal in key
    (the first of several identical points stays)."""
    key = list(zip(np.round(loss, KEY_DECIMALS), np.round(sparsity, KEY_DECIMALS)))
    kept = []
    for i in range(len(latency)):
        dominated = any(latency[j] <= latency[i] and memory[j] <= memory[i] and key[j] <= key[i]
                        and (key[j], latency[j], memory[j]) != (key[i], latency[i], memory[i]) or
                        (j < i and (key[j], latency[j], memory[j]) == (key[i], latency[i], memory[i]))
                        for j in range(len(latency)) if j != i)
        if not dominated:
            kept.append(i)
    return kept


@pytest.mark.parametrize('seed', range(6))
def test_pareto_filter_matches_the_quadratic_definition(seed):
    rng = np.random.default_rng(seed)
    n = 200
    latency = rng.integers(0, 12, n).astype(float)  # small ranges: many ties in every coordinate
    memory = rng.integers(0, 12, n).astype(float)
    loss = rng.integers(0, 6, n) * 0.01
    sparsity = rng.integers(0, 4, n) * 0.2
    got = pareto_indices(latency, memory, loss, sparsity)
    assert sorted(got.tolist()) == naive_pareto(latency, memory, loss, sparsity)
    keys = list(zip(np.round(loss[got], KEY_DECIMALS), np.round(sparsity[got], KEY_DECIMALS)))
    assert keys == sorted(keys)  # best key first: the lookup takes the first point within the budgets


@pytest.mark.parametrize('seed', range(6))
def test_one_resource_filter_keeps_every_state_that_can_still_win(seed):
    """With one budget, a state is dropped iff a state of strictly better key uses at most as much of the budgeted
    resource, or one of equal key that wins the tie-break (latency, then memory; the first of exact duplicates)
    does: with a latency budget one state per key is left."""
    from mmlego.scaling_optimizer.branch_and_bound import pareto_one_resource
    rng = np.random.default_rng(seed)
    n = 300
    latency, memory = rng.integers(0, 12, n).astype(float), rng.integers(0, 12, n).astype(float)
    loss, sparsity = rng.integers(0, 6, n) * 0.01, rng.integers(0, 4, n) * 0.2
    key = list(zip(np.round(loss, KEY_DECIMALS), np.round(sparsity, KEY_DECIMALS)))
    tie_break = list(zip(latency, memory, range(n)))  # np.lexsort is stable: duplicates in index order
    for budgeted in (latency, memory):
        got = pareto_one_resource(budgeted, latency, memory, loss, sparsity)
        want = [i for i in range(n) if not any(
            budgeted[j] <= budgeted[i] and (key[j] < key[i] or (key[j] == key[i] and tie_break[j] < tie_break[i]))
            for j in range(n))]
        assert sorted(got.tolist()) == want
        if budgeted is latency:
            assert len(got) == len({key[i] for i in got})  # one per key
        kept_keys = [key[i] for i in got]
        assert kept_keys == sorted(kept_keys)  # key order, as the search's final pick expects


def random_problem(rng, name, n_blocks, zero_drops=0, weight=1.0):
    """Monotone options (less latency and memory, more drop as sparsity grows), the first ``zero_drops`` free."""
    blocks = {}
    for b in range(n_blocks):
        latency, memory = rng.uniform(1.0, 10.0), rng.randint(10_000, 1_000_000)
        drops = sorted(rng.uniform(0.0, 0.05) for _ in SPARSITIES)
        drops = [0.0 if i < max(zero_drops, 1) else d for i, d in enumerate(drops)]
        blocks[f'layer{b}'] = [BlockOption(s, d, latency * (1 - s * rng.uniform(0.5, 1.0)),
                                           int(memory * (1 - s * rng.uniform(0.5, 1.0))))
                               for s, d in zip(SPARSITIES, drops)]
    return ModelProblem(name, teacher_metric=0.5, blocks=blocks, frame_latency_ms=1.0, frame_memory_bytes=1000,
                        weight=weight)


def test_frontier_holds_the_optimum_of_every_budget():
    """Every configuration's (latency, memory) pair, as a budget, is answered from the frontier with the optimum."""
    rng = random.Random(0)
    problem = random_problem(rng, 'net', 4, zero_drops=2)
    prepared = PreparedProblems(problem)
    assert prepared.frontier is not None and len(prepared.frontier) < 5 ** 4
    for combo in itertools.product(range(5), repeat=4):
        options = [opts[i] for opts, i in zip(problem.blocks.values(), combo)]
        budgets = (1.0 + sum(o.latency_ms for o in options), 1000 + sum(o.memory_bytes for o in options))
        got = prepared.solve(*budgets)
        want = solve(problem, *budgets, solver='brute_force')
        assert got.estimated_metric == pytest.approx(want.estimated_metric, abs=1e-12)
        assert sum(got.choice().values()) == pytest.approx(sum(want.choice().values()), abs=1e-9)


def budgets_across(problems, rng, count):
    r = budget_range(problems)
    for _ in range(count):
        latency = r['min_latency_ms'] + rng.uniform(0, 1) * (r['max_latency_ms'] - r['min_latency_ms'])
        memory = r['min_memory_bytes'] + rng.uniform(0, 1) * (r['max_memory_bytes'] - r['min_memory_bytes'])
        yield rng.choice([(latency, None), (None, memory), (latency, memory)])


@pytest.mark.parametrize('zero_drops', [0, 3])
def test_branch_and_bound_matches_cbc_beyond_brute_force(zero_drops):
    """24 blocks (5^24 configurations), one and two models: frontier lookup, branch and bound and CBC agree."""
    rng = random.Random(10 + zero_drops)
    cases = [[random_problem(rng, 'net', 24, zero_drops)],
             [random_problem(rng, 'a', 12, zero_drops, 1.0), random_problem(rng, 'b', 10, zero_drops, 0.5)]]
    searched = ExactSolver(max_frontier=1)  # no frontier: every budget searched
    for problems in cases:
        for budgets in budgets_across(problems, rng, 6):
            reference = PulpSolver().solve(problems, *budgets)
            for solver in (ExactSolver(), searched):
                got = solver.solve(problems, *budgets)
                assert got.solver == 'exact' and got.status == reference.status, budgets
                weighted = [sum(p.weight * r.estimated_metric[p.name] for p in problems) for r in (got, reference)]
                assert weighted[0] == pytest.approx(weighted[1], abs=1e-9), budgets
                assert sum(s for c in got.choices.values() for s in c.values()) == pytest.approx(
                    sum(s for c in reference.choices.values() for s in c.values()), abs=1e-9), budgets


@pytest.mark.parametrize('zero_drops', [0, 3])
def test_budgets_answered_from_each_budgets_own_frontier_match_brute_force(zero_drops, monkeypatch):
    """Where the frontier of both budgets is too large (several models): a budget alone is a lookup in its own
    frontier, both budgets too when that answer fits the other one, the joint search otherwise; every answer is
    brute force's."""
    from mmlego.scaling_optimizer import exact
    rng = random.Random(20 + zero_drops)
    problems = [random_problem(rng, 'a', 3, zero_drops, 1.0), random_problem(rng, 'b', 3, zero_drops, 0.5)]
    searched = []
    search = exact.branch_and_bound
    monkeypatch.setattr(exact, 'branch_and_bound', lambda data, *lefts, **kw: searched.append(lefts) or
                        search(data, *lefts, **kw))
    prepared = exact.PreparedProblems(problems)
    prepared._frontier, prepared._frontier_tried = None, True  # as if the frontier of both were too large
    budgets = list(budgets_across(problems, rng, 60))
    for budget in budgets:
        got, want = prepared.solve(*budget), solve(problems, *budget, solver='brute_force')
        assert got.solver == 'exact' and got.status == want.status, budget
        weighted = [sum(p.weight * r.estimated_metric[p.name] for p in problems) for r in (got, want)]
        assert weighted[0] == pytest.approx(weighted[1], abs=1e-12), budget
        assert sum(s for c in got.choices.values() for s in c.values()) == pytest.approx(
            sum(s for c in want.choices.values() for s in c.values()), abs=1e-9), budget
    assert prepared.frontier_alone('latency') is not None and prepared.frontier_alone('memory') is not None
    assert all(math.isfinite(latency) and math.isfinite(memory) for latency, memory in searched)  # one: lookups
    assert len(searched) < sum(None not in budget for budget in budgets)  # and most pairs too


def test_single_budget_search_with_its_filter_on_every_layer_matches_brute_force(monkeypatch):
    """The one-resource dominance filter run at every layer (threshold 1 state) keeps the optimum."""
    from mmlego.scaling_optimizer import branch_and_bound
    monkeypatch.setattr(branch_and_bound, 'DOMINANCE_FROM_ONE_RESOURCE', 1)
    rng = random.Random(5)
    for zero_drops in (0, 2):
        problem = random_problem(rng, 'net', 7, zero_drops)
        budgets = [b for b in budgets_across([problem], rng, 40) if (b[0] is None) != (b[1] is None)][:12]
        for latency_ms, memory_bytes in budgets:
            got = ExactSolver(max_frontier=1).solve(problem, latency_ms, memory_bytes)
            want = solve(problem, latency_ms, memory_bytes, solver='brute_force')
            assert got.solver == 'exact' and got.status == want.status
            assert got.estimated_metric == pytest.approx(want.estimated_metric, abs=1e-12)
            assert sum(got.choice().values()) == pytest.approx(sum(want.choice().values()), abs=1e-9)


def test_a_search_that_grows_too_large_falls_back_to_cbc():
    rng = random.Random(3)
    problem = random_problem(rng, 'net', 10)
    budgets = next(b for b in budgets_across([problem], rng, 50) if None not in b)
    got = ExactSolver(max_frontier=1, max_states=1).solve(problem, *budgets)
    reference = PulpSolver().solve(problem, *budgets)
    assert got.solver == 'exact/pulp' and got.choice() == reference.choice()


def test_problems_are_prepared_once_per_content():
    rng = random.Random(4)
    problem = random_problem(rng, 'net', 5)
    solver = ExactSolver()
    prepared = solver.prepare(problem)
    assert solver.prepare(random_problem(random.Random(4), 'net', 5)) is prepared  # equal content, same object
    changed = ModelProblem('net', 0.5, dict(problem.blocks), frame_latency_ms=2.0, frame_memory_bytes=1000)
    assert solver.prepare(changed) is not prepared


def test_options_dominated_within_their_block_are_never_chosen():
    problem = ModelProblem('net', 0.5, blocks={
        'a': [BlockOption(0.0, 0.0, 10.0, 100), BlockOption(0.2, 0.05, 12.0, 120),  # worse in everything
              BlockOption(0.4, 0.01, 5.0, 50)],
        'b': [BlockOption(0.0, 0.0, 10.0, 100), BlockOption(0.5, 0.02, 4.0, 40)]})
    prepared = PreparedProblems(problem)
    assert prepared.groups[0].index.tolist() == [0, 2]
    for latency in (9.0, 15.0, 20.0, None):
        assert prepared.solve(latency).choice() == solve(problem, latency, solver='brute_force').choice()
    assert prepared.solve(8.0).status == 'infeasible'


def test_the_wrapper_moves_the_latency_budget_instead_of_rebuilding_its_problem():
    """What LegoDNN.scale does with its prepared problem (latency budget / scale) equals PuLP on the problem with
    every latency scaled (tests/test_latency.py runs scale() itself on a real bank)."""
    rng = random.Random(5)
    problem = random_problem(rng, 'model', 8, zero_drops=2)
    prepared = PreparedProblems(problem)
    scale = 1.7
    scaled = ModelProblem('model', 0.5, {b: [BlockOption(o.sparsity, o.accuracy_drop, o.latency_ms * scale,
                                                         o.memory_bytes) for o in opts]
                                         for b, opts in problem.blocks.items()},
                          frame_latency_ms=1.0 * scale, frame_memory_bytes=1000)
    for latency, memory in budgets_across([scaled], rng, 12):
        got = prepared.solve(None if latency is None else latency / scale, memory)
        want = solve(scaled, latency, memory, solver='pulp')
        assert got.status == want.status
        assert got.estimated_metric['model'] == pytest.approx(want.estimated_metric['model'], abs=1e-12)
        assert sum(got.choice().values()) == pytest.approx(sum(want.choice().values()), abs=1e-9)
        if got.status == 'optimal' and latency is not None:  # the answer fits the scaled budget
            assert sum(o.latency_ms for b, opts in scaled.blocks.items() for o in opts
                       if o.sparsity == got.choice()[b]) + scaled.frame_latency_ms <= latency * (1 + 1e-9)


@pytest.mark.parametrize('retry_states', [1, 500])
def test_search_finds_the_optimum_below_any_incumbent_with_negative_drops(retry_states):
    """Negative drops in later blocks: the drop so far is no bound (it was, and pruned optima); the search from
    a worse incumbent (the LP rounding, or the beam after a retry) still ends at brute force's optimum."""
    from mmlego.scaling_optimizer import branch_and_bound as bb
    rng = random.Random(7)
    problem = random_problem(rng, 'net', 6)
    for options in list(problem.blocks.values())[3:]:  # later blocks gain from pruning a little
        options[1] = BlockOption(options[1].sparsity, -0.01 * rng.uniform(0.5, 1.5), options[1].latency_ms,
                                 options[1].memory_bytes)
    prepared = ExactSolver(max_frontier=1).prepare([problem]).ready()
    data, _ = prepared._search_data
    checked = 0
    for latency_ms, memory_bytes in budgets_across([problem], rng, 30):
        want = solve(problem, latency_ms, memory_bytes, solver='brute_force')
        if want.status == 'infeasible':
            continue
        latency_left = bb.block_budget(latency_ms, prepared.frame_latency)
        memory_left = bb.block_budget(memory_bytes, prepared.frame_memory)
        relaxations = data.relaxations(latency_left, memory_left)
        optimum = bb._search(data, latency_left, memory_left, relaxations, None, None, 10 ** 6)
        worse = (optimum[0] + 0.005, optimum[1])  # an incumbent the optimum beats
        again = bb._search(data, latency_left, memory_left, relaxations, worse, None, 10 ** 6)
        assert again is not None and again[0] == pytest.approx(optimum[0], abs=1e-12)
        positions = bb.branch_and_bound(data, latency_left, memory_left, retry_states=retry_states)
        got = ExactSolver(max_frontier=1).solve(problem, latency_ms, memory_bytes)
        assert positions is not None and got.solver == 'exact'
        assert got.estimated_metric == pytest.approx(want.estimated_metric, abs=1e-12)
        checked += 1
    assert checked >= 15
