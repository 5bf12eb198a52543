"""Tests of mmlego.scaling_optimizer: the exact solvers against exhaustive search, budgets, infeasibility, errors."""
import itertools
import math
import random

import pulp
import pytest

from mmlego.scaling_optimizer import (REL_TOL, SOLVERS, BlockOption, BruteForceSolver, ExactSolver, ModelProblem,
                                      PulpSolver, ScalingResult, budget_range, solve)

SPARSITIES = (0.0, 0.2, 0.4, 0.6, 0.8)


def random_problem(rng: random.Random, name: str, n_blocks: int, n_options: int, weight: float = 1.0):
    """Options that mostly trade accuracy for cost as sparsity grows, with noise (and a non-zero drop at 0.0)."""
    blocks = {}
    for b in range(n_blocks):
        latency, memory = rng.uniform(2.0, 10.0), rng.randint(10_000, 1_000_000)
        options = []
        for s in SPARSITIES[:n_options]:
            options.append(BlockOption(
                sparsity=s,
                accuracy_drop=round(s * rng.uniform(0.0, 0.1) + rng.uniform(-0.005, 0.01), 6),
                latency_ms=latency * (1 - s * rng.uniform(0.3, 1.0)),
                memory_bytes=int(memory * (1 - s * rng.uniform(0.2, 1.0)))))
        blocks[f'layer{b}'] = options
    return ModelProblem(name, teacher_metric=rng.uniform(0.5, 0.9), blocks=blocks,
                        frame_latency_ms=rng.uniform(0.0, 3.0), frame_memory_bytes=rng.randint(0, 100_000),
                        weight=weight)


def objective(problems, result: ScalingResult) -> float:
    return sum(p.weight * result.estimated_metric[p.name] for p in problems)


def assert_consistent(problems, result: ScalingResult):
    """The result's estimates are those of its choices."""
    for p in problems:
        chosen = [next(o for o in p.blocks[b] if o.sparsity == s) for b, s in result.choices[p.name].items()]
        assert list(result.choices[p.name]) == list(p.blocks)
        assert result.estimated_metric[p.name] == pytest.approx(
            p.teacher_metric - sum(o.accuracy_drop for o in chosen), abs=1e-12)
        assert result.latency_ms[p.name] == pytest.approx(
            p.frame_latency_ms + sum(o.latency_ms for o in chosen), abs=1e-9)
        assert result.memory_bytes[p.name] == p.frame_memory_bytes + sum(o.memory_bytes for o in chosen)


def total_sparsity(result: ScalingResult) -> float:
    return sum(s for choice in result.choices.values() for s in choice.values())


def within(total, budget):
    return budget is None or total <= budget * (1 + REL_TOL) + REL_TOL


def budget_grid(problems, fractions=(0.05, 0.3, 0.6, 0.9)):
    r = budget_range(problems)
    lat = [None] + [r['min_latency_ms'] + f * (r['max_latency_ms'] - r['min_latency_ms']) for f in fractions]
    mem = [None] + [r['min_memory_bytes'] + f * (r['max_memory_bytes'] - r['min_memory_bytes']) for f in fractions]
    return list(itertools.product(lat, mem))


def compare_solvers(problems, budgets):
    """Every exact solver (PuLP/CBC; 'exact' by frontier lookup and by branch and bound) agrees with brute force on
    status, objective and tie-break, and honours the budgets; returns how many cases were binding."""
    brute = BruteForceSolver()
    solvers = {'pulp': PulpSolver(), 'exact': ExactSolver(), 'exact (branch and bound)': ExactSolver(max_frontier=1)}
    binding = 0
    unconstrained = solve(problems, solver=brute)
    for latency_ms, memory_bytes in budgets:
        reference = brute.solve(problems, latency_ms, memory_bytes)
        assert reference.solver == 'brute_force'
        for name, solver in solvers.items():
            exact = solver.solve(problems, latency_ms, memory_bytes)
            assert exact.solver == solver.name, name  # no fallback on problems this small
            assert exact.status == reference.status, (name, latency_ms, memory_bytes)
            assert objective(problems, exact) == pytest.approx(objective(problems, reference), abs=1e-6), name
            # Ties are broken the same way: toward the lowest total sparsity among the optimal configurations.
            assert total_sparsity(exact) == pytest.approx(total_sparsity(reference), abs=1e-9), \
                (name, latency_ms, memory_bytes)
            assert_consistent(problems, exact)
            if exact.status == 'optimal':
                assert within(exact.total_latency_ms, latency_ms)
                assert within(exact.total_memory_bytes, memory_bytes)
        assert_consistent(problems, reference)
        if reference.status == 'optimal' and \
                objective(problems, reference) < objective(problems, unconstrained) - 1e-9:
            binding += 1
    return binding


@pytest.mark.parametrize('seed', range(8))
def test_exact_solvers_match_brute_force_single_model(seed):
    rng = random.Random(seed)
    problems = [random_problem(rng, 'net', n_blocks=rng.randint(3, 4), n_options=rng.randint(3, 5))]
    binding = compare_solvers(problems, budget_grid(problems))
    assert binding >= 3  # the budgets really constrain, so the ILP (not a shortcut) is being compared


@pytest.mark.parametrize('seed', range(5))
def test_exact_solvers_match_brute_force_two_models_shared_budget(seed):
    rng = random.Random(100 + seed)
    problems = [random_problem(rng, 'a', 3, rng.randint(3, 4), weight=rng.choice([1.0, 2.5])),
                random_problem(rng, 'b', rng.randint(2, 3), rng.randint(3, 4), weight=rng.choice([1.0, 0.5]))]
    binding = compare_solvers(problems, budget_grid(problems, fractions=(0.1, 0.4, 0.8)))
    assert binding >= 3


def quantized_problem(rng: random.Random, name: str, n_blocks: int, n_options: int) -> ModelProblem:
    """Denoised-looking drops: zero up to some sparsity, then multiples of 0.01 (a metric on a few samples), never
    decreasing; costs fall with sparsity. Many configurations tie, within and across blocks."""
    blocks = {}
    for b in range(n_blocks):
        latency, memory = rng.uniform(2.0, 10.0), rng.randint(10_000, 1_000_000)
        drops = sorted(rng.choice([0, 0, 0, 1, 2]) * 0.01 for _ in range(n_options - 1))
        blocks[f'layer{b}'] = [BlockOption(s, drop, latency * (1 - 0.9 * s), int(memory * (1 - 0.9 * s)))
                               for s, drop in zip(SPARSITIES, [0.0] + drops)]
    return ModelProblem(name, teacher_metric=0.5, blocks=blocks, frame_latency_ms=1.0, frame_memory_bytes=1000)


@pytest.mark.parametrize('seed', range(6))
def test_exact_solvers_match_brute_force_with_many_ties(seed):
    rng = random.Random(300 + seed)
    problems = [quantized_problem(rng, 'net', n_blocks=rng.randint(3, 4), n_options=rng.randint(3, 5))]
    compare_solvers(problems, budget_grid(problems, fractions=(0.05, 0.2, 0.4, 0.6, 0.9)))


def zero_drop_problem():
    """Pruning is free up to 0.4 in layer1 and up to 0.2 in layer2 (denoised drops), and saves latency/memory."""
    return ModelProblem('net', teacher_metric=0.6, frame_latency_ms=1.0, frame_memory_bytes=100, blocks={
        'layer1': [BlockOption(0.0, 0.0, 10.0, 1000), BlockOption(0.2, 0.0, 8.0, 800),
                   BlockOption(0.4, 0.0, 6.0, 600), BlockOption(0.8, 0.05, 2.0, 200)],
        'layer2': [BlockOption(0.0, 0.0, 10.0, 1000), BlockOption(0.2, 0.0, 8.0, 800),
                   BlockOption(0.4, 0.02, 6.0, 600), BlockOption(0.8, 0.02, 2.0, 200)],
    })


@pytest.mark.parametrize('solver', ['exact', 'pulp', 'brute_force'])
def test_no_budget_chooses_the_teacher_when_pruned_options_tie(solver):
    for budgets in ((None, None), (math.inf, None), (None, 10 ** 9), (100.0, 10 ** 9)):
        result = solve(zero_drop_problem(), *budgets, solver=solver)
        assert result.status == 'optimal'
        assert result.choice() == {'layer1': 0.0, 'layer2': 0.0}, budgets
        assert result.estimated_metric['net'] == 0.6


@pytest.mark.parametrize('solver', ['exact', 'pulp', 'brute_force'])
def test_binding_budget_prunes_no_more_than_it_needs_among_ties(solver):
    # 1 + 8 + 10 = 19 ms needs one block at 0.2; layer1@0.4 (17 ms) and layer2@0.2 (19 ms) tie at drop 0, and
    # so do both together: the lowest total sparsity is a single block at 0.2 (either one).
    result = solve(zero_drop_problem(), latency_ms=19.0, solver=solver)
    assert result.estimated_metric['net'] == 0.6 and sorted(result.choice().values()) == [0.0, 0.2]
    # 15 ms: layer1@0.4 + layer2@0.2 is the only zero-drop configuration (1 + 6 + 8); nothing is pruned further.
    result = solve(zero_drop_problem(), latency_ms=15.0, solver=solver)
    assert result.choice() == {'layer1': 0.4, 'layer2': 0.2}
    # 13 ms: a drop of 0.02 is unavoidable. It ties across layer2@0.4 and layer2@0.8; the least total sparsity
    # (0.8) is layer1@0.4 + layer2@0.4 (1 + 6 + 6) or layer1@0.0 + layer2@0.8 (1 + 10 + 2), never layer1@0.4 +
    # layer2@0.8 (1.2, 9 ms).
    result = solve(zero_drop_problem(), latency_ms=13.0, solver=solver)
    assert result.choice() in ({'layer1': 0.4, 'layer2': 0.4}, {'layer1': 0.0, 'layer2': 0.8})
    assert result.estimated_metric['net'] == pytest.approx(0.58)


@pytest.mark.parametrize('solver', ['exact', 'pulp', 'brute_force'])
def test_tie_breaking_never_trades_accuracy_for_sparsity(solver):
    # layer1@0.8 costs 1e-6 less than layer1@0.2: not a tie, so the higher sparsity must win.
    problem = ModelProblem('net', teacher_metric=0.5, blocks={
        'layer1': [BlockOption(0.0, 0.01, 10.0, 1000), BlockOption(0.2, 0.001, 9.0, 900),
                   BlockOption(0.8, 0.001 - 1e-6, 9.5, 950)],
        'layer2': [BlockOption(0.0, 0.0, 10.0, 1000), BlockOption(0.5, 0.004, 5.0, 500)]})
    assert solve(problem, solver=solver).choice() == {'layer1': 0.8, 'layer2': 0.0}
    assert solve(problem, latency_ms=15.0, solver=solver).choice() == {'layer1': 0.8, 'layer2': 0.5}
    assert solve(problem, latency_ms=19.5, solver=solver).choice() == {'layer1': 0.8, 'layer2': 0.0}


@pytest.mark.parametrize('seed', range(4))
def test_budgets_exactly_at_a_configuration_are_feasible(seed):
    """Budgets equal to (or within 1e-9 relative below) a configuration's totals admit that configuration."""
    rng = random.Random(200 + seed)
    problems = [random_problem(rng, 'a', 3, 4), random_problem(rng, 'b', 2, 4)]
    for _ in range(3):
        picked = {p.name: {b: rng.choice(opts) for b, opts in p.blocks.items()} for p in problems}
        latency = sum(p.frame_latency_ms + sum(o.latency_ms for o in picked[p.name].values()) for p in problems)
        memory = sum(p.frame_memory_bytes + sum(o.memory_bytes for o in picked[p.name].values()) for p in problems)
        target = sum(p.teacher_metric - sum(o.accuracy_drop for o in picked[p.name].values()) for p in problems)
        for shrink in (0.0, 0.5 * REL_TOL):
            budgets = [(latency * (1 - shrink), memory * (1 - shrink))]
            compare_solvers(problems, budgets)
            result = solve(problems, *budgets[0])
            assert result.status == 'optimal'
            assert objective(problems, result) >= target - 1e-9


def hand_problem():
    """Two blocks; the unconstrained optimum is layer1@0.2 (negative drop) and layer2@0.0."""
    return ModelProblem('net', teacher_metric=0.7, frame_latency_ms=1.0, frame_memory_bytes=100, blocks={
        'layer1': [BlockOption(0.0, 0.01, 10.0, 1000), BlockOption(0.2, -0.005, 8.0, 800),
                   BlockOption(0.5, 0.05, 5.0, 300)],
        'layer2': [BlockOption(0.0, 0.0, 20.0, 2000), BlockOption(0.5, 0.02, 12.0, 1500),
                   BlockOption(0.8, 0.10, 4.0, 1600)],
    })


@pytest.mark.parametrize('solver', ['exact', 'pulp', 'brute_force'])
def test_no_constraint_takes_minimal_drop_per_block(solver):
    for budgets in ((None, None), (math.inf, math.inf)):
        result = solve(hand_problem(), *budgets, solver=solver)
        assert result.status == 'optimal'
        assert result.choice() == {'layer1': 0.2, 'layer2': 0.0}
        assert result.estimated_metric['net'] == pytest.approx(0.705)
        assert result.latency_ms['net'] == pytest.approx(29.0) and result.memory_bytes['net'] == 2900


@pytest.mark.parametrize('solver', ['exact', 'pulp', 'brute_force'])
def test_only_latency_constraint(solver):
    # 1 + 8 + 12 = 21 (drop 0.015) beats 1 + 5 + 12 = 18 and 1 + 8 + 4 = 13 (drop 0.095).
    result = solve(hand_problem(), latency_ms=21.0, solver=solver)
    assert result.choice() == {'layer1': 0.2, 'layer2': 0.5}
    assert result.estimated_metric['net'] == pytest.approx(0.685)
    # Within the relative tolerance the 21 ms configuration still fits; beyond it, it does not.
    assert solve(hand_problem(), latency_ms=21.0 * (1 - 0.5 * REL_TOL), solver=solver).choice() == \
        {'layer1': 0.2, 'layer2': 0.5}
    assert solve(hand_problem(), latency_ms=21.0 * (1 - 10 * REL_TOL), solver=solver).choice() == \
        {'layer1': 0.5, 'layer2': 0.5}
    result = solve(hand_problem(), latency_ms=17.0, solver=solver)  # layer2 must drop to 4 ms
    assert result.choice() == {'layer1': 0.2, 'layer2': 0.8}
    assert result.total_latency_ms <= 17.0


@pytest.mark.parametrize('solver', ['exact', 'pulp', 'brute_force'])
def test_only_memory_constraint(solver):
    # layer2@0.8 is faster but bigger than layer2@0.5: under memory only, 0.5 must be chosen.
    result = solve(hand_problem(), memory_bytes=2400, solver=solver)
    assert result.choice() == {'layer1': 0.2, 'layer2': 0.5}
    assert result.total_memory_bytes == 2400
    assert solve(hand_problem(), memory_bytes=2400 * (1 - 0.5 * REL_TOL), solver=solver).choice() == \
        {'layer1': 0.2, 'layer2': 0.5}
    assert solve(hand_problem(), memory_bytes=2399.9, solver=solver).choice() == {'layer1': 0.5, 'layer2': 0.5}
    result = solve(hand_problem(), memory_bytes=2000, solver=solver)
    assert result.choice() == {'layer1': 0.5, 'layer2': 0.5}


@pytest.mark.parametrize('solver', ['exact', 'pulp', 'brute_force'])
def test_both_constraints(solver):
    result = solve(hand_problem(), latency_ms=17.0, memory_bytes=2000, solver=solver)
    assert result.status == 'optimal'
    assert result.choice() == {'layer1': 0.5, 'layer2': 0.8}  # 1+5+4 ms, 100+300+1600 bytes


def tie_problem():
    """Ties on the minimal resource, so the tie-breaking of the smallest configuration is visible."""
    return ModelProblem('net', teacher_metric=0.7, frame_latency_ms=1.0, frame_memory_bytes=100, blocks={
        'layer1': [BlockOption(0.0, 0.0, 10.0, 500), BlockOption(0.4, 0.03, 4.0, 500),
                   BlockOption(0.8, 0.09, 4.0, 200)],
        'layer2': [BlockOption(0.0, 0.0, 6.0, 300), BlockOption(0.4, 0.01, 6.0, 300),
                   BlockOption(0.8, 0.05, 2.0, 900)],
    })


@pytest.mark.parametrize('solver', ['exact', 'pulp', 'brute_force'])
def test_infeasible_returns_smallest_configuration(solver):
    problem = tie_problem()
    # Only latency violated (min latency 1+4+2 = 7): least latency, ties by memory -> layer1@0.8.
    result = solve(problem, latency_ms=6.5, solver=solver)
    assert result.status == 'infeasible'
    assert result.choice() == {'layer1': 0.8, 'layer2': 0.8}
    assert result.latency_ms['net'] == pytest.approx(7.0) and result.memory_bytes['net'] == 1200
    assert result.estimated_metric['net'] == pytest.approx(0.7 - 0.14)
    assert solve(problem, latency_ms=7.0 * (1 - 0.5 * REL_TOL), solver=solver).status == 'optimal'
    # Memory violated (min memory 100+200+300 = 600): least memory, ties by latency then drop -> layer2@0.0.
    for latency_ms in (None, 6.5, 100.0):
        result = solve(problem, latency_ms=latency_ms, memory_bytes=599, solver=solver)
        assert result.status == 'infeasible'
        assert result.choice() == {'layer1': 0.8, 'layer2': 0.0}
        assert result.memory_bytes['net'] == 600 and result.latency_ms['net'] == pytest.approx(11.0)
    # Each budget fits alone (7 ms; 600 bytes) but not both together: memory-first configuration.
    result = solve(problem, latency_ms=7.0, memory_bytes=600, solver=solver)
    assert result.status == 'infeasible'
    assert result.choice() == {'layer1': 0.8, 'layer2': 0.0}
    assert solve(problem, latency_ms=7.0, solver=solver).status == 'optimal'
    assert solve(problem, memory_bytes=600, solver=solver).status == 'optimal'


@pytest.mark.parametrize('solver', ['exact', 'pulp', 'brute_force'])
def test_shared_budget_follows_weights(solver):
    def model(name, weight):
        return ModelProblem(name, 0.8, weight=weight, frame_latency_ms=1.0, blocks={
            'b': [BlockOption(0.0, 0.0, 10.0, 100), BlockOption(0.5, 0.1, 5.0, 50)]})

    # 2 frames + 10 + 5 = 17 ms allows only one unpruned model; the heavier one keeps it.
    for heavy in ('a', 'b'):
        problems = [model('a', 3.0 if heavy == 'a' else 1.0), model('b', 3.0 if heavy == 'b' else 1.0)]
        result = solve(problems, latency_ms=17.0, memory_bytes=150, solver=solver)
        assert result.status == 'optimal'
        assert result.choice(heavy) == {'b': 0.0}
        assert result.choice('b' if heavy == 'a' else 'a') == {'b': 0.5}
        assert result.total_latency_ms == pytest.approx(17.0) and result.total_memory_bytes == 150
        assert set(result.latency_ms) == {'a', 'b'}
        with pytest.raises(ValueError, match='2 models'):
            result.choice()
        with pytest.raises(ValueError, match="no model 'c'"):
            result.choice('c')


def test_budget_range():
    r = budget_range(hand_problem())
    assert r == {'min_latency_ms': pytest.approx(10.0), 'max_latency_ms': pytest.approx(31.0),
                 'min_memory_bytes': 100 + 300 + 1500, 'max_memory_bytes': 100 + 1000 + 2000}
    assert isinstance(r['min_memory_bytes'], int)
    two = budget_range([hand_problem(), ModelProblem('other', 0.5, hand_problem().blocks)])
    assert two['min_latency_ms'] == pytest.approx(19.0) and two['max_memory_bytes'] == 3100 + 3000


def test_solver_objects_and_custom_pulp_command():
    problem = hand_problem()
    expected = {'layer1': 0.2, 'layer2': 0.5}
    assert solve(problem, 21.0, solver=PulpSolver(solver_cmd=pulp.PULP_CBC_CMD(msg=False))).choice() == expected
    assert solve(problem, 21.0, solver=PulpSolver(time_limit_s=10)).choice() == expected
    assert solve(problem, 21.0, solver=BruteForceSolver(max_combinations=9)).choice() == expected
    assert set(SOLVERS) == {'exact', 'pulp', 'brute_force'}


def option(s=0.0, drop=0.0, lat=1.0, mem=10):
    return BlockOption(s, drop, lat, mem)


@pytest.mark.parametrize('kwargs, match', [
    (dict(blocks={}), 'non-empty dict'),
    (dict(blocks={'conv1': []}), "block 'conv1': needs a non-empty list"),
    (dict(blocks={'conv1': [option(0.2), option(0.2, 0.1)]}), "block 'conv1': sparsity 0.2 appears twice"),
    (dict(blocks={'conv1': [option(drop=math.nan)]}), "block 'conv1', sparsity 0.0: accuracy_drop"),
    (dict(blocks={'conv1': [option(lat=-1.0)]}), "block 'conv1', sparsity 0.0: latency_ms must be .* >= 0"),
    (dict(blocks={'conv1': [option(lat=math.inf)]}), "block 'conv1', sparsity 0.0: latency_ms"),
    (dict(blocks={'conv1': [option(mem=1.5)]}), r"memory_bytes must be an integer .* int\(round"),
    (dict(blocks={'conv1': [option(mem=-3)]}), 'memory_bytes must be an integer >= 0'),
    (dict(blocks={'conv1': [option(s=math.nan)]}), "block 'conv1': sparsity must be a finite"),
    (dict(blocks={'conv1': [(0.0, 0.0, 1.0, 10)]}), 'must be BlockOption instances'),
    (dict(blocks={'conv1': [option()]}, teacher_metric=math.nan), 'teacher_metric must be a finite'),
    (dict(blocks={'conv1': [option()]}, frame_latency_ms=-0.1), 'frame_latency_ms'),
    (dict(blocks={'conv1': [option()]}, frame_memory_bytes=-1), 'frame_memory_bytes'),
    (dict(blocks={'conv1': [option()]}, weight=-1.0), 'weight must be'),
])
def test_invalid_problem(kwargs, match):
    fields = dict(name='net', teacher_metric=0.7)
    fields.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ModelProblem(**fields)


@pytest.mark.parametrize('solver', ['exact', 'pulp', 'brute_force'])
def test_invalid_budgets_and_problem_lists(solver):
    problem = hand_problem()
    for budgets, match in (((-1.0, None), 'latency_ms must be'), ((None, -5), 'memory_bytes must be'),
                           ((math.nan, None), 'latency_ms must be'), ((None, math.nan), 'memory_bytes must be'),
                           (('10', None), 'latency_ms must be')):
        with pytest.raises(ValueError, match=match):
            solve(problem, *budgets, solver=solver)
    with pytest.raises(ValueError, match="two problems are named 'net'"):
        solve([problem, hand_problem()], solver=solver)
    with pytest.raises(ValueError, match='non-empty sequence'):
        solve([], solver=solver)


def test_unknown_solver_and_invalid_solver_arguments():
    with pytest.raises(ValueError, match=r"unknown solver 'gurobi'; known solvers: \['brute_force', 'exact', 'pulp'\]"):
        solve(hand_problem(), solver='gurobi')
    with pytest.raises(ValueError, match='an object with a solve'):
        solve(hand_problem(), solver=object())
    with pytest.raises(ValueError, match='exceed max_combinations=8'):
        solve(hand_problem(), solver=BruteForceSolver(max_combinations=8))
    with pytest.raises(ValueError, match='either time_limit_s or solver_cmd'):
        PulpSolver(time_limit_s=1.0, solver_cmd=pulp.PULP_CBC_CMD(msg=False))
    with pytest.raises(ValueError, match='time_limit_s must be'):
        PulpSolver(time_limit_s=0)


def test_pulp_cuts_off_configurations_its_tolerance_let_over_budget(monkeypatch):
    """Emulate a solver tolerance of 3.5 ms: the ILP's answer (21 ms) is over 18 ms, cut off and re-solved."""
    from mmlego.scaling_optimizer import pulp_solver
    monkeypatch.setattr(pulp_solver, 'budget_slack', lambda budget: 3.5)
    result = solve(hand_problem(), latency_ms=18.0, solver='pulp')
    assert result.status == 'optimal' and result.choice() == {'layer1': 0.5, 'layer2': 0.5}
    assert result.choice() == solve(hand_problem(), latency_ms=18.0, solver='brute_force').choice()
    stubborn = PulpSolver()
    stubborn.max_resolves = 0
    with pytest.raises(RuntimeError, match='over budget'):
        stubborn.solve(hand_problem(), 18.0, None)


def test_every_drop_zero_with_a_binding_budget_solves_in_both_solvers():
    """All drops denoised to zero (an action bank): the first ILP has an empty objective; the tie-break still runs."""
    blocks = {f'b{i}': [BlockOption(s, 0.0, 10.0 - 10 * s, int(1000 - 1000 * s)) for s in (0.0, 0.4, 0.8)]
              for i in range(4)}
    problem = ModelProblem('zero', teacher_metric=1.0, blocks=blocks)
    budget = 2500
    pulp_result = solve(problem, memory_bytes=budget, solver='pulp')
    brute = solve(problem, memory_bytes=budget, solver='brute_force')
    assert pulp_result.status == brute.status == 'optimal'
    assert pulp_result.memory_bytes['zero'] <= budget
    assert sum(pulp_result.choice().values()) == pytest.approx(sum(brute.choice().values()))
