"""Denoised accuracy drops: monotone in sparsity, zero within the noise, raw drops kept; the teacher is chosen
without a budget. The evaluations are a fake task metric with known true drops and controlled noise."""
import copy
import logging
import math
import random
import statistics

import pytest

from mmlego.block_bank import BankProfiles
from mmlego.profiling import profile_accuracy
from mmlego.profiling.accuracy import denoise_drops, estimate_noise, isotonic_non_decreasing
from mmlego.scaling_optimizer import BlockOption, ModelProblem, solve

from .test_block_bank import SPARSITIES, build_bank, make_tiny
from .test_profiling import BLOCKS, live_selection

pytestmark = pytest.mark.usefixtures('one_torch_thread')

TEACHER_METRIC = 0.6
# True drops: stem+b1 is free at 0.4 and costs 0.05 at 0.8; b2 is free at every sparsity.
TRUE_DROPS = {('stem+b1', 0.4): 0.0, ('stem+b1', 0.8): 0.05, ('b2', 0.4): 0.0, ('b2', 0.8): 0.0}
SIGMA = 0.004  # noise of one evaluation


@pytest.fixture(scope='module')
def shared():
    teacher = make_tiny()
    return teacher, build_bank(teacher)


def noisy_evaluate(bank, seed: int, sigma: float = SIGMA):
    """The metric of the live composite: teacher - true drops + Gaussian noise fixed per (seed, composite)."""
    def evaluate(model):
        selection = live_selection(model, bank)
        composite = tuple(selection[name] for name in BLOCKS)
        noise = random.Random(f'{seed}:{composite}').gauss(0.0, sigma)
        evaluate.calls += 1
        return TEACHER_METRIC - sum(TRUE_DROPS.get(item, 0.0) for item in selection.items()) + noise
    evaluate.calls = 0
    return evaluate


def drops(bank, field='accuracy_drop') -> dict:
    return {name: [getattr(bank.profiles.get(name, s), field) for s in SPARSITIES] for name in BLOCKS}


def unconstrained_choice(bank, field='accuracy_drop') -> dict:
    """What the optimizer picks without a budget from the bank's drops (costs fall with sparsity)."""
    blocks = {name: [BlockOption(s, getattr(bank.profiles.get(name, s), field), 10.0 * (1 - s), int(1000 * (1 - s)))
                     for s in SPARSITIES] for name in BLOCKS}
    problem = ModelProblem('tiny', TEACHER_METRIC, blocks)
    choices = [solve(problem, solver=solver).choice() for solver in ('pulp', 'brute_force')]
    assert choices[0] == choices[1]
    return choices[0]


# -- the building blocks -------------------------------------------------------------------------------------------
def test_isotonic_regression_pools_adjacent_violators():
    assert isotonic_non_decreasing([1.0, 3.0, 2.0, 4.0]) == [1.0, 2.5, 2.5, 4.0]
    assert isotonic_non_decreasing([3.0, 2.0, 1.0]) == [2.0, 2.0, 2.0]
    assert isotonic_non_decreasing([0.0, 5.0, 1.0, 1.0]) == pytest.approx([0.0, 7 / 3, 7 / 3, 7 / 3])
    assert isotonic_non_decreasing([0.1, 0.2, 0.2]) == [0.1, 0.2, 0.2]
    assert isotonic_non_decreasing([]) == []


def test_denoise_is_monotone_zero_within_the_threshold_and_never_negative():
    raw = {'a': {0.0: 0.0, 0.2: -0.01, 0.4: 0.004, 0.6: 0.03, 0.8: 0.02},
           'b': {0.0: 0.0, 0.2: 0.02, 0.4: -0.03, 0.6: 0.001, 0.8: 0.009}}
    out = denoise_drops(raw, threshold=0.005)
    # a: PAV of [-0.01, 0.004, 0.03, 0.02] is [-0.01, 0.004, 0.025, 0.025]; <= 0.005 -> 0.
    assert out['a'] == pytest.approx({0.0: 0.0, 0.2: 0.0, 0.4: 0.0, 0.6: 0.025, 0.8: 0.025})
    # b: 0.02 and -0.03 pool to -0.005 (a single noisy 0.02 does not survive its neighbour), 0.001 -> 0.
    assert out['b'] == {0.0: 0.0, 0.2: 0.0, 0.4: 0.0, 0.6: 0.0, 0.8: 0.009}
    assert denoise_drops(raw, threshold=0.0)['a'] == pytest.approx({0.0: 0.0, 0.2: 0.0, 0.4: 0.004, 0.6: 0.025,
                                                                     0.8: 0.025})
    assert raw['a'][0.2] == -0.01  # the input is left alone
    with pytest.raises(ValueError, match='threshold'):
        denoise_drops(raw, threshold=math.nan)


def test_noise_is_the_pooled_standard_error_over_reference_composites():
    replicates = {('a', 0.0): [0.0, 0.0], ('a', 0.4): [1.0, 3.0], ('a', 0.8): [2.0, 6.0]}
    noise, method = estimate_noise(replicates, [0.0, 0.4, 0.8])
    # Sparsity 0.0 is excluded (exactly 0 by construction); pooled variance (2 + 8) / 2, two replicates per mean.
    assert noise == pytest.approx(math.sqrt(5.0 / 2)) and '2 reference composites' in method
    single = {('a', 0.4): [0.01], ('b', 0.4): [0.03], ('a', 0.8): [0.5], ('b', 0.8): [0.1], ('a', 0.0): [0.0]}
    noise, method = estimate_noise(single, [0.0, 0.4, 0.8])
    assert noise == pytest.approx(statistics.stdev([0.01, 0.03])) and 'sparsity 0.4' in method
    assert estimate_noise({('a', 0.4): [0.01], ('a', 0.8): [0.5]}, [0.0, 0.4, 0.8])[0] is None


# -- profile_accuracy with a noisy metric ----------------------------------------------------------------------------
def test_noise_level_drops_are_zeroed_and_real_drops_kept(shared):
    teacher, bank = shared
    model = copy.deepcopy(teacher)
    zeroed = total = 0
    ratios, raw_picks_pruned = [], 0
    for seed in range(30):
        evaluate = noisy_evaluate(bank, seed)
        profile_accuracy(bank, model, evaluate, show_progress=False)
        assert evaluate.calls == 9
        raw, denoised = drops(bank, 'accuracy_drop_raw'), drops(bank)
        for name in BLOCKS:
            assert denoised[name][0] == raw[name][0] == 0.0
            assert all(0.0 <= a <= b for a, b in zip(denoised[name], denoised[name][1:])), (seed, denoised)
            assert all(d == 0.0 or d > bank.profiles.accuracy_noise for d in denoised[name])
        # The real drop survives (noise ~0.003 per mean drop); the free ones are mostly zeroed.
        assert denoised['stem+b1'][2] == pytest.approx(0.05, abs=0.015)
        free = [denoised['stem+b1'][1], denoised['b2'][1], denoised['b2'][2]]
        zeroed += sum(d == 0.0 for d in free)
        total += len(free)
        # The estimated noise is the standard error of a mean over the 3 composites of a difference of two
        # evaluations: SIGMA * sqrt(2 / 3).
        ratios.append(bank.profiles.accuracy_noise / (SIGMA * math.sqrt(2 / 3)))
        raw_picks_pruned += unconstrained_choice(bank, 'accuracy_drop_raw') != dict.fromkeys(BLOCKS, 0.0)
        assert unconstrained_choice(bank) == dict.fromkeys(BLOCKS, 0.0), (seed, denoised)
    assert zeroed / total >= 0.75, (zeroed, total)  # 1 standard error: ~84% of true zeros, more after pooling
    assert 0.6 <= statistics.median(ratios) <= 1.4, ratios
    assert raw_picks_pruned >= 10  # the winner's curse the denoising removes: raw drops often "beat" the teacher


def test_single_reference_uses_the_spread_at_the_lowest_sparsity(shared):
    teacher, bank = shared
    profile_accuracy(bank, copy.deepcopy(teacher), noisy_evaluate(bank, seed=1), references=('teacher',),
                     show_progress=False)
    raw = drops(bank, 'accuracy_drop_raw')
    assert bank.profiles.accuracy_noise == pytest.approx(statistics.stdev([raw[name][1] for name in BLOCKS]))
    for name in BLOCKS:
        assert all(0.0 <= a <= b for a, b in zip(drops(bank)[name], drops(bank)[name][1:]))


def test_raw_and_denoised_drops_and_the_noise_are_kept_in_the_manifest(shared):
    teacher, bank = shared
    profile_accuracy(bank, copy.deepcopy(teacher), noisy_evaluate(bank, seed=2), show_progress=False)
    data = bank.profiles.to_dict()
    assert data['accuracy_noise'] == bank.profiles.accuracy_noise > 0
    for name in BLOCKS:
        for s in SPARSITIES:
            stored = data['descendants'][name][f'{s:g}']
            profile = bank.profiles.get(name, s)
            assert (stored['accuracy_drop'], stored['accuracy_drop_raw']) == (profile.accuracy_drop,
                                                                              profile.accuracy_drop_raw)
    assert any(data['descendants'][n][f'{s:g}']['accuracy_drop'] != data['descendants'][n][f'{s:g}']
               ['accuracy_drop_raw'] for n in BLOCKS for s in SPARSITIES)
    assert BankProfiles.from_dict(data) == bank.profiles


def test_denoise_off_keeps_the_raw_drops_and_bad_thresholds_fail_early(shared):
    teacher, bank = shared
    evaluate = noisy_evaluate(bank, seed=3)
    profile_accuracy(bank, copy.deepcopy(teacher), evaluate, denoise=False, show_progress=False)
    assert drops(bank) == drops(bank, 'accuracy_drop_raw')
    evaluate.calls = 0
    with pytest.raises(ValueError, match='noise_threshold'):
        profile_accuracy(bank, copy.deepcopy(teacher), evaluate, noise_threshold=-1.0, show_progress=False)
    assert evaluate.calls == 0


def test_noise_is_logged_through_mmengine(shared):
    from mmengine.logging import MMLogger
    teacher, bank = shared
    logger = MMLogger.get_instance('test_accuracy_denoising', log_level='INFO')  # now the current logger
    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger.addHandler(handler)
    try:
        profile_accuracy(bank, copy.deepcopy(teacher), noisy_evaluate(bank, seed=4), show_progress=False)
    finally:
        logger.removeHandler(handler)
    assert any('accuracy noise' in message and f'{bank.profiles.accuracy_noise:.4g}' in message
               for message in records), records
