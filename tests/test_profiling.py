"""Profiling: LegoDNN's accuracy-drop formula with deduplicated, cached evaluations; exact memory; portable
latency tables; and the scaling problem built from a profiled bank, whose memory estimate is the real one."""
import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmlego.block_bank import problem_from_bank, teacher_fingerprint
from mmlego.block_switcher import BlockSwitcher
from mmlego.profiling import (LatencyTable, count_flops, memory_bytes, profile_accuracy, profile_costs,
                              profile_model)
from mmlego.scaling_optimizer import budget_range, solve

from .test_block_bank import SPARSITIES, build_bank, example_input, make_tiny, perturb

BLOCKS = ['stem+b1', 'b2']


pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def shared():
    teacher = make_tiny()
    bank = perturb(build_bank(teacher), seed=3)  # "retrained" descendants
    data = example_input(seed=11, shape=(4, 3, 16, 16))
    with torch.no_grad():
        target = teacher(data)
    return teacher, bank, data, target


@pytest.fixture
def setup(shared):
    teacher, bank, data, target = shared
    return copy.deepcopy(teacher), copy.deepcopy(bank), data, target


def make_evaluate(data, target):
    """-MSE against the teacher's output on fixed data (higher is better), recording every call."""
    def evaluate(model):
        with torch.no_grad():
            metric = -float(F.mse_loss(model(data), target))
        evaluate.calls.append(metric)
        return metric
    evaluate.calls = []
    return evaluate


def key(selection: dict) -> str:
    return ','.join(f'{selection[name]:g}' for name in BLOCKS)


def live_selection(model, bank) -> dict:
    """Which descendant of each block the model runs (by module identity)."""
    found = {}
    for spec in bank.blocks:
        first = model.get_submodule(spec.members[0])
        found[spec.name] = next((s for s, d in bank.descendants[spec.name].items() if d.module.layers[0] is first),
                                0.0)  # the teacher's own modules, before any switch
    return found


# -- memory, FLOPs, latency ----------------------------------------------------------------------------------------
def test_memory_bytes_counts_parameters_and_buffers():
    module = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.Linear(4, 4).half())
    expected = sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))
    # conv 16*3*3*3+16 floats, BN 2*16 params + 2*16 stats floats + one int64 counter, half Linear 4*4+4
    assert memory_bytes(module) == expected == (448 + 64) * 4 + 8 + 20 * 2
    tied = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False))
    tied[1].weight = tied[0].weight
    assert memory_bytes(tied) == 16 * 4  # a shared tensor occupies memory once


def test_profile_costs(setup):
    model, bank, data, _ = setup
    profile_costs(bank, show_progress=False)
    for spec in bank.blocks:
        profiles = [bank.profiles.get(spec.name, s) for s in SPARSITIES]
        for sparsity, profile in zip(SPARSITIES, profiles):
            assert profile.memory_bytes == memory_bytes(bank.descendant(spec.name, sparsity).module)
            assert profile.latency_ms is None  # latency is measured inside the model, by profile_model
        flops = [p.flops for p in profiles]
        assert all(a > b > 0 for a, b in zip(flops, flops[1:])), (spec.name, flops)
        memory = [p.memory_bytes for p in profiles]
        assert all(a > b for a, b in zip(memory, memory[1:])), (spec.name, memory)
    x = torch.randn(*bank.blocks[1].input_shape)
    teacher_block = bank.descendant('b2', 0.0).module
    assert bank.profiles.get('b2', 0.0).flops == count_flops(lambda: teacher_block(x))
    profile_model(bank, model, (data,), warmup=1, repeats=3, show_progress=False, min_seconds=0)
    assert bank.profiles.device == 'cpu' and bank.profiles.latency_method == 'in-model'
    for spec in bank.blocks:
        profiles = [bank.profiles.get(spec.name, s) for s in SPARSITIES]
        assert profiles[0].latency_drop == 0.0
        assert all(p.latency_drop == pytest.approx(1 - p.latency_ms / profiles[0].latency_ms) for p in profiles)


# -- accuracy ------------------------------------------------------------------------------------------------------
def test_profile_accuracy_is_legodnns_formula(setup):
    model, bank, data, target = setup
    evaluate = make_evaluate(data, target)
    seen = []
    counting = lambda m: (seen.append(key(live_selection(m, bank))), evaluate(m))[1]  # noqa: E731
    metrics = profile_accuracy(bank, model, counting, metric_name='neg_mse', show_progress=False)
    # References: all-0.0, all-0.4 (middle), all-0.8 (max). With 2 blocks x 3 sparsities every composite is
    # needed, and each is evaluated exactly once although 2 * 3 * 3 + 1 were asked for.
    assert len(seen) == len(set(seen)) == len(metrics) == 9
    assert set(metrics) == {key(dict(zip(BLOCKS, c))) for c in itertools.product(SPARSITIES, repeat=2)}
    assert set(seen) == set(metrics)
    # Each returned metric is that of the composite it names (checked on an independent copy of the teacher).
    teacher, _, _, _ = setup
    check_model, check_bank = copy.deepcopy(teacher), copy.deepcopy(bank)
    switcher = BlockSwitcher(check_model, check_bank, guard_forward=False)
    check = make_evaluate(data, target)
    for composite, metric in metrics.items():
        switcher.switch(dict(zip(BLOCKS, map(float, composite.split(',')))))
        assert check(check_model) == metric, composite
    # drop(b, s) = mean over references e of [metric(e with b = 0.0) - metric(e with b = s)], by hand:
    for block, sparsity in itertools.product(BLOCKS, SPARSITIES):
        terms = []
        for ref in (0.0, 0.4, 0.8):
            base = dict.fromkeys(BLOCKS, ref)
            terms.append(metrics[key({**base, block: 0.0})] - metrics[key({**base, block: sparsity})])
        assert bank.profiles.get(block, sparsity).accuracy_drop_raw == pytest.approx(sum(terms) / 3, abs=1e-15)
    assert bank.profiles.get('b2', 0.0).accuracy_drop == bank.profiles.get('b2', 0.0).accuracy_drop_raw == 0.0
    assert bank.profiles.get('b2', 0.8).accuracy_drop_raw > 0
    # The denoised drops (tests/test_accuracy_denoising.py): monotone in sparsity, never negative.
    for block in BLOCKS:
        drops = [bank.profiles.get(block, s).accuracy_drop for s in SPARSITIES]
        assert drops[0] == 0.0 and all(0 <= a <= b for a, b in zip(drops, drops[1:])), (block, drops)
    assert bank.profiles.teacher_metric == metrics['0,0'] == 0.0 and bank.profiles.metric_name == 'neg_mse'
    # The live model is the teacher again, and no switcher hook is left on it.
    with torch.no_grad():
        assert torch.equal(model(data), target)
    assert not model._forward_pre_hooks and not model._forward_hooks and 'forward' not in model.__dict__


def test_teacher_reference_only(setup):
    model, bank, data, target = setup
    evaluate = make_evaluate(data, target)
    metrics = profile_accuracy(bank, model, evaluate, references=('teacher',), show_progress=False)
    assert len(evaluate.calls) == len(metrics) == 1 + 2 * (3 - 1)
    for block, sparsity in itertools.product(BLOCKS, SPARSITIES):
        selection = {**dict.fromkeys(BLOCKS, 0.0), block: sparsity}
        assert bank.profiles.get(block, sparsity).accuracy_drop_raw == metrics['0,0'] - metrics[key(selection)]
    with pytest.raises(ValueError, match='unknown reference'):
        profile_accuracy(bank, model, evaluate, references=('median',), show_progress=False)


def test_accuracy_cache_resumes_and_skips_everything(setup, tmp_path):
    model, bank, data, target = setup
    cache = tmp_path / 'accuracy.json'
    evaluate = make_evaluate(data, target)

    def interrupted(m):
        if len(evaluate.calls) == 4:
            raise KeyboardInterrupt
        return evaluate(m)

    with pytest.raises(KeyboardInterrupt):
        profile_accuracy(bank, model, interrupted, cache_file=cache, show_progress=False)
    with torch.no_grad():
        assert torch.equal(model(data), target)  # restored after the interruption too
    resumed = make_evaluate(data, target)
    metrics = profile_accuracy(bank, model, resumed, cache_file=cache, show_progress=False)
    assert len(evaluate.calls) == 4 and len(resumed.calls) == 9 - 4
    drops = {(b, s): bank.profiles.get(b, s).accuracy_drop for b in BLOCKS for s in SPARSITIES}

    def never(m):
        raise AssertionError('everything is cached')

    again = copy.deepcopy(setup[1])
    assert profile_accuracy(again, model, never, cache_file=cache, show_progress=False) == metrics
    assert {(b, s): again.profiles.get(b, s).accuracy_drop for b in BLOCKS for s in SPARSITIES} == drops
    # A cache written for another teacher, or for other (e.g. retrained again) descendants, is ignored.
    other = copy.deepcopy(setup[1])
    other.fingerprint = teacher_fingerprint(make_tiny(seed=1))
    fresh = make_evaluate(data, target)
    profile_accuracy(other, model, fresh, cache_file=cache, show_progress=False)
    assert len(fresh.calls) == 9
    retrained = perturb(copy.deepcopy(setup[1]), seed=4)
    profile_accuracy(retrained, model, make_evaluate(data, target), cache_file=cache,
                     show_progress=False)  # rewrites the cache for these weights ...
    with pytest.raises(AssertionError, match='everything is cached'):
        profile_accuracy(again, model, never, cache_file=cache, show_progress=False)  # ... so it misses here


# -- latency tables ------------------------------------------------------------------------------------------------
def test_latency_table_round_trip(setup, tmp_path):
    model, bank, data, _ = setup
    with pytest.raises(ValueError, match='model latency'):
        LatencyTable.from_bank(bank)
    bank.profiles.model_latency_ms = 1.0
    with pytest.raises(ValueError, match='latenc'):  # block latencies not measured yet
        LatencyTable.from_bank(bank)
    profile_costs(bank, show_progress=False)
    profile_model(bank, model, (data,), warmup=1, repeats=3, show_progress=False, min_seconds=0)
    table = LatencyTable.from_bank(bank)
    assert set(table.composites) == {f'{s:g}' for s in SPARSITIES}
    table.save(tmp_path / 'latency.json')
    loaded = LatencyTable.load(tmp_path / 'latency.json')
    assert loaded == table
    target = copy.deepcopy(bank)
    for spec in target.blocks:
        for sparsity in target.sparsities:
            profile = target.profiles.get(spec.name, sparsity)
            profile.latency_ms = profile.latency_drop = None
    target.profiles.model_latency_ms = target.profiles.composite_latency_ms = None
    loaded.apply(target)
    for spec in bank.blocks:
        for sparsity in bank.sparsities:
            a, b = target.profiles.get(spec.name, sparsity), bank.profiles.get(spec.name, sparsity)
            assert (a.latency_ms, a.latency_drop) == (b.latency_ms, b.latency_drop)
    assert target.profiles.model_latency_ms == bank.profiles.model_latency_ms
    assert target.profiles.composite_latency_ms == bank.profiles.composite_latency_ms
    assert target.profiles.latency_check == pytest.approx(bank.profiles.latency_check)
    other = copy.deepcopy(bank)
    other.fingerprint = teacher_fingerprint(make_tiny(seed=1))
    with pytest.raises(ValueError, match='another teacher'):
        loaded.apply(other)
    (tmp_path / 'bad.json').write_text('{"version": 1}')
    with pytest.raises(ValueError, match='not a latency table'):
        LatencyTable.load(tmp_path / 'bad.json')


# -- the scaling problem -------------------------------------------------------------------------------------------
def test_problem_from_unprofiled_bank_lists_what_is_missing(setup):
    _, bank, _, _ = setup
    with pytest.raises(ValueError, match=r'teacher metric \(accuracy profiling\), model memory \(cost profiling\), '
                                         r'model latency \(latency profiling\), stem\+b1@0, '):
        problem_from_bank(bank)
    bank.profiles.teacher_metric, bank.profiles.model_memory_bytes, bank.profiles.model_latency_ms = 0.5, 10 ** 6, 9.0
    for block, sparsity in itertools.product(BLOCKS, SPARSITIES):
        profile = bank.profiles.get(block, sparsity)
        profile.accuracy_drop, profile.memory_bytes, profile.latency_ms = sparsity / 10, 1000, 1.0
    bank.profiles.get('b2', 0.8).latency_ms = None
    with pytest.raises(ValueError, match=r'missing: b2@0.8;'):
        problem_from_bank(bank)
    bank.profiles.get('b2', 0.8).latency_ms = 0.5
    assert problem_from_bank(bank).frame_memory_bytes == 10 ** 6 - 2000


def test_solved_selection_runs_with_the_estimated_memory(setup):
    model, bank, data, target = setup
    profile_accuracy(bank, model, make_evaluate(data, target), show_progress=False)
    profile_costs(bank, show_progress=False)
    profile_model(bank, model, (data,), warmup=1, repeats=3, show_progress=False, min_seconds=0)
    assert bank.profiles.model_memory_bytes == memory_bytes(model)
    problem = problem_from_bank(bank, name='tiny')
    switcher = BlockSwitcher(model, bank)
    # Frame + blocks is exact for memory: every composite's estimate is the live model's real footprint.
    for combo in itertools.product(SPARSITIES, repeat=2):
        selection = dict(zip(BLOCKS, combo))
        switcher.switch(selection)
        estimate = problem.frame_memory_bytes + sum(
            next(o.memory_bytes for o in problem.blocks[b] if o.sparsity == s) for b, s in selection.items())
        assert estimate == memory_bytes(model), selection
    limits = budget_range(problem)
    budget = (limits['min_memory_bytes'] + limits['max_memory_bytes']) // 2
    result = solve(problem, memory_bytes=budget)
    assert result.status == 'optimal' and result.memory_bytes['tiny'] <= budget
    switcher.switch(result.choice())
    assert switcher.selection == result.choice() != dict.fromkeys(BLOCKS, 0.0)
    assert result.memory_bytes['tiny'] == memory_bytes(model)
    with torch.no_grad():
        out = model(data)
    assert result.estimated_metric['tiny'] < bank.profiles.teacher_metric
    assert out.shape == target.shape
    switcher.reset()
    with torch.no_grad():
        assert torch.equal(model(data), target)
