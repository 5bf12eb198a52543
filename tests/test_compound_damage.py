"""Compound damage in the metric estimate: drops measured one block at a time add up to less than many pruned
blocks do together; accuracy profiling fits ``c`` of ``D + c D^2`` to its reference composites, every estimate
uses it, and the optimizer's choices do not change (the estimate is increasing in ``D``)."""
import copy
import random

import pytest

from mmlego.profiling import fit_drop_interaction, profile_accuracy
from mmlego.scaling_optimizer import BlockOption, ModelProblem, solve

from .test_block_bank import SPARSITIES, build_bank, make_tiny
from .test_profiling import BLOCKS, live_selection

pytestmark = pytest.mark.usefixtures('one_torch_thread')

TEACHER_METRIC = 0.6
# A metric that collapses when every block is pruned hard, as FCN and DeepPose do at 0.8-0.85 (all background, AP
# near 0): measured block by block in the reference composites, the drops add up to much less than that collapse.
COMPOSITE_DROP = {(0.0, 0.0): 0.0, (0.4, 0.0): 0.01, (0.0, 0.4): 0.01, (0.8, 0.0): 0.05, (0.0, 0.8): 0.05,
                  (0.4, 0.4): 0.03, (0.8, 0.4): 0.10, (0.4, 0.8): 0.10, (0.8, 0.8): 0.50}


def collapsing_metric(selection: dict) -> float:
    return TEACHER_METRIC - COMPOSITE_DROP[tuple(selection[name] for name in BLOCKS)]


def test_fit_recovers_the_interaction_and_holds_it_non_negative():
    points = [(total, total + 0.4 * total ** 2) for total in (0.05, 0.2, 0.5)]
    assert fit_drop_interaction(points) == pytest.approx(0.4)
    assert fit_drop_interaction([(0.1, 0.05)]) == 0.0  # lost less than the sum: additive, not decreasing
    assert fit_drop_interaction([]) == 0.0
    assert fit_drop_interaction([(0.0, 0.02)]) == 0.0  # nothing to scale: every drop denoised to zero


def random_problem(seed: int, interaction: float) -> ModelProblem:
    rng = random.Random(seed)
    blocks = {f'b{i}': [BlockOption(s, 0.0 if s == 0 else rng.uniform(0, 0.05) * s * 4, 10 * (1 - s) + rng.random(),
                                    int(1000 * (1 - s)) + rng.randrange(50))
                        for s in SPARSITIES] for i in range(5)}
    return ModelProblem('net', TEACHER_METRIC, blocks, frame_memory_bytes=100, drop_interaction=interaction)


def test_estimate_adds_compound_damage_and_the_choice_does_not_change():
    for seed in range(5):
        additive, compound = random_problem(seed, 0.0), random_problem(seed, 2.0)
        full = sum(max(o.memory_bytes for o in options) for options in additive.blocks.values()) + 100
        for fraction in (0.3, 0.45, 0.6, 0.8, 1.0):
            budget = int(full * fraction)
            for solver in ('exact', 'pulp', 'brute_force'):
                plain, with_c = (solve(p, memory_bytes=budget, solver=solver) for p in (additive, compound))
                assert with_c.choice() == plain.choice(), (seed, fraction, solver)
                total = TEACHER_METRIC - plain.estimated_metric['net']
                assert with_c.estimated_metric['net'] == pytest.approx(TEACHER_METRIC - total - 2.0 * total ** 2)
                assert compound.estimate(with_c.choice())['metric'] == pytest.approx(with_c.estimated_metric['net'])
    with pytest.raises(ValueError, match='drop_interaction must be a finite number >= 0'):
        random_problem(0, -0.1)


def test_profiling_fits_the_reference_composites_and_the_estimate_moves_toward_the_measured_collapse():
    from mmlego.block_switcher import BlockSwitcher
    teacher = make_tiny()
    bank = build_bank(teacher)
    model = copy.deepcopy(teacher)
    profile_accuracy(bank, model, lambda live: collapsing_metric(live_selection(live, bank)), denoise=False,
                     show_progress=False)
    interaction = bank.profiles.accuracy_interaction
    drops = {name: {s: bank.profiles.get(name, s).accuracy_drop for s in SPARSITIES} for name in BLOCKS}
    composites = [(sum(drops[name][s] for name in BLOCKS), COMPOSITE_DROP[(s, s)]) for s in (0.4, 0.8)]
    assert interaction == pytest.approx(fit_drop_interaction(composites)) and interaction > 0
    blocks = {name: [BlockOption(s, drops[name][s], 1.0, 1) for s in SPARSITIES] for name in BLOCKS}
    compound = ModelProblem('tiny', bank.profiles.teacher_metric, blocks, drop_interaction=interaction)
    additive = ModelProblem('tiny', bank.profiles.teacher_metric, blocks)
    # Least squares over the reference composites: never further from them than the additive estimate (c = 0).
    residual = {name: sum((problem.estimate(dict.fromkeys(BLOCKS, s))['metric'] - collapsing_metric(
        dict.fromkeys(BLOCKS, s))) ** 2 for s in (0.4, 0.8)) for name, problem in (('compound', compound),
                                                                                      ('additive', additive))}
    assert residual['compound'] < residual['additive']
    # The all-0.8 composite, evaluated on the live model after switching to it (a measurement, not the table).
    switcher = BlockSwitcher(model, bank, guard_forward=False)
    try:
        switcher.switch(dict.fromkeys(BLOCKS, 0.8))
        measured = collapsing_metric(live_selection(model, bank))
    finally:
        switcher.reset()
        switcher.detach()
    smallest = dict.fromkeys(BLOCKS, 0.8)
    assert abs(compound.estimate(smallest)['metric'] - measured) < 0.5 * abs(
        additive.estimate(smallest)['metric'] - measured)


def test_reference_composites_are_found_in_a_cache_by_their_keys_as_profiling_names_them():
    """The composites the fit uses, from an accuracy cache's keys (what bench/metric_interaction.py reads) or from
    the reference sparsities profiling evaluated: the same pairs; the teacher and mixed composites are not among them."""
    from mmlego.profiling.accuracy import reference_composite_damage
    drops = {'a': {0.0: 0.0, 0.4: 0.01, 0.85: 0.05}, 'b': {0.0: 0.0, 0.4: 0.02, 0.85: 0.04}}
    metrics = {'0,0': 0.6, '0.4,0': 0.59, '0.4,0.4': 0.56, '0.85,0.4': 0.5, '0.85,0.85': 0.3}
    found = reference_composite_damage(drops, 0.6, metrics, ['a', 'b'])
    assert [pair for composite in found for pair in composite] == pytest.approx([0.03, 0.04, 0.09, 0.3])
    assert reference_composite_damage(drops, 0.6, metrics, ['a', 'b'], [0.0, 0.4, 0.85]) == found
