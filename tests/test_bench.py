"""The benchmark code is correct: its CBC baseline and instances (bench/selection.py), its report (bench/run.py)."""
import copy
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'bench'))

import selection  # noqa: E402

from mmlego.scaling_optimizer import solve  # noqa: E402


@pytest.mark.parametrize('kind', ['structured', 'independent'])
def test_random_instances_are_monotone(kind):
    problem = selection.random_problem(random.Random(0), 12, kind)
    for options in problem.blocks.values():
        assert [o.sparsity for o in options] == sorted(o.sparsity for o in options)
        for a, b in zip(options, options[1:]):
            assert b.latency_ms <= a.latency_ms and b.memory_bytes <= a.memory_bytes
            assert b.accuracy_drop >= a.accuracy_drop
        assert options[0].accuracy_drop == 0.0


def test_cbc_baseline_finds_the_brute_force_optimum():
    rng = random.Random(1)
    problem = selection.random_problem(rng, 5, 'independent')
    for latency_ms, memory_bytes in selection.draw_budgets([problem], rng, 9):
        want = selection.weighted_drop([problem], solve(problem, latency_ms, memory_bytes, solver='brute_force'))
        got = selection.cbc_legodnn([problem], latency_ms, memory_bytes)
        assert (got is None) == (want is None)
        assert got is None or got == pytest.approx(want, abs=1e-9)


def test_measure_instance_checks_every_answer():
    rng = random.Random(2)
    problems = [selection.random_problem(rng, 4, 'structured', 'a'),
                selection.random_problem(rng, 3, 'structured', 'b')]
    measured = selection.measure_instance(problems, selection.draw_budgets(problems, rng, 6), brute=True)
    assert measured['worse'] == 0 and measured['fallbacks'] == 0
    assert len(measured['ours_ms']) == len(measured['cbc_ms']) == 6
    row = selection.summarize('two models', [measured])
    assert row['budgets'] == 6 and row['speedup'] == pytest.approx(row['cbc_median_ms'] / row['ours_median_ms'])


def test_an_answer_is_compared_on_the_summed_drops_not_on_the_metric_with_compound_damage():
    """A bank with compound damage (c > 0) estimates its metric as teacher - (D + c D^2), CBC minimizes D: the same
    choices must count as equal (2026-12-07: 83 of 400 bank answers counted as worse once banks carried c)."""
    import dataclasses
    rng = random.Random(3)
    problem = dataclasses.replace(selection.random_problem(rng, 4, 'structured'), drop_interaction=2.0)
    measured = selection.measure_instance([problem], selection.draw_budgets([problem], rng, 6), brute=True)
    assert measured['worse'] == 0 and measured['better'] == 0


def test_run_writes_the_summary_and_plots(tmp_path):
    subprocess.run([sys.executable, str(ROOT / 'bench' / 'run.py'), '--only', 'fidelity', '--out', str(tmp_path)],
                   check=True, capture_output=True, cwd=ROOT, timeout=300)
    text = (tmp_path / 'summary.md').read_text()
    assert '## B5 Fidelity' in text and '| tsn |' in text
    assert (tmp_path / 'fidelity.json').exists()


def test_offline_cost_schedule_and_report():
    import offline_cost
    assert offline_cost._teacher_epochs({'type': 'EpochBasedTrainLoop', 'max_epochs': 12}, 50) == 12
    assert offline_cost._teacher_epochs({'type': 'IterBasedTrainLoop', 'max_iters': 600}, 50) == 12
    calls = []
    per_batch = offline_cost._timed_steps(calls.append, list(range(6)), warmup=2)
    assert calls == list(range(6)) and per_batch >= 0
    row = dict(batch_size=8, blocks=2, retrained=6, teacher_s_per_batch=0.1, retrain_s_per_batch=0.35,
               retrain_over_teacher=3.5, uniform_over_teacher={'0.8': 0.4},
               configurations_per_hour=dict(legodnn=1e6, uniform=2, teacher=1))
    # the ratio is the median of the side-by-side rounds' ratios, not the ratio of the two medians
    table = offline_cost.markdown({'a': row, 'b': dict(row, retrain_over_teacher=2.9)})
    assert '| a |' in table and '3.50 (not met)' in table and '2.90 (met)' in table


class _Residual(torch.nn.Module):
    """A small CNN with a residual add (coupled channels) and a linear output layer."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.a = torch.nn.Conv2d(16, 32, 3, padding=1)
        self.b = torch.nn.Conv2d(32, 16, 3, padding=1)
        self.head = torch.nn.Linear(16, 5)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = x + self.b(torch.relu(self.a(x)))
        return self.head(x.mean(dim=(2, 3)))


def test_uniform_baseline_keeps_outputs_and_fits_the_budget():
    import uniform_baseline
    torch.manual_seed(0)
    model, x = _Residual().eval(), torch.randn(2, 3, 8, 8)
    forward = lambda m, inputs: m(inputs)  # noqa: E731
    assert uniform_baseline.output_layer_names(model, x, forward) == {'head'}
    full = uniform_baseline.parameter_bytes(model)
    sizes = []
    for sparsity in (0.25, 0.5, 0.75):
        pruned = uniform_baseline.prune_uniformly(copy.deepcopy(model), x, forward, sparsity)
        assert pruned(x).shape == (2, 5) and pruned.head.out_features == 5
        assert pruned.a.out_channels == 32 - int(32 * sparsity)
        sizes.append(uniform_baseline.parameter_bytes(pruned))
    assert full > sizes[0] > sizes[1] > sizes[2]
    budget = (sizes[0] + sizes[1]) / 2
    fitted, sparsity = uniform_baseline.prune_to_bytes(model, x, forward, budget)
    assert uniform_baseline.parameter_bytes(fitted) <= budget and 0.25 < sparsity <= 0.5
    assert uniform_baseline.parameter_bytes(model) == full  # the teacher is not touched
    with pytest.raises(ValueError, match='still takes'):
        uniform_baseline.prune_to_bytes(model, x, forward, 10)


class _Recognizer(torch.nn.Module):
    """Like mmaction's recognizers: ``mode='tensor'`` returns the backbone's features unless ``stage='head'``."""

    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.cls_head = torch.nn.Linear(16, 4)
        self.with_cls_head = True

    def _forward(self, inputs, stage='backbone'):
        features = self.backbone(inputs)
        return self.cls_head(features.mean(dim=(2, 3))) if stage == 'head' else features

    def forward(self, inputs, data_samples=None, mode='tensor', **kwargs):
        return self._forward(inputs, **kwargs)


def test_the_tensor_path_of_a_recognizer_runs_to_the_class_scores_so_uniform_pruning_prunes_up_to_the_head():
    import uniform_baseline
    from mmlego.models.tensor_path import tensor_mode as tensor_path
    model, x = _Recognizer().eval(), torch.randn(2, 3, 8, 8)
    assert tensor_path(model, x).shape == (2, 4)  # stage='head', not the backbone's features
    assert uniform_baseline.output_layer_names(model, x, tensor_path) == {'cls_head'}
    assert uniform_baseline.prune_uniformly(copy.deepcopy(model), x, tensor_path, 0.5).backbone.out_channels == 8
    model.with_cls_head = False  # no head to run to: mode='tensor' as it is
    assert tensor_path(model, x).shape == (2, 16, 8, 8)
    assert uniform_baseline.output_layer_names(model, x, tensor_path) == {'backbone', 'cls_head'}  # head: not run


def test_quality_summary_counts_ties_as_won():
    import quality
    rows = [dict(mmlego=0.5, untrained=0.1, uniform_a=0.5), dict(mmlego=0.4, untrained=0.2, uniform_a=0.6)]
    summary = quality.summarize(rows)
    assert summary['share_won'] == 0.5
    assert summary['mean_metric'] == pytest.approx(dict(mmlego=0.45, untrained=0.15, uniform_a=0.55))
    assert summary['uniform_a_seed_spread'] is None  # one fine-tuning each


def test_quality_compares_with_the_mean_over_fine_tuning_seeds_and_reports_their_spread(tmp_path):
    import quality
    rows = [dict(budget_mb=10.0, mmlego=0.50, untrained=0.1, uniform_a=0.48, uniform_a_seeds=[0.40, 0.50, 0.54]),
            dict(budget_mb=20.0, mmlego=0.55, untrained=0.2, uniform_a=0.56, uniform_a_seeds=[0.55, 0.56, 0.57])]
    summary = quality.summarize(rows)
    assert summary['share_won'] == 0.5  # against each mean (0.50 >= 0.48 although one seed reached 0.54)
    assert summary['uniform_a_seed_spread'] == pytest.approx((0.14 + 0.02) / 2)
    result = dict(model='fcn', metric='mIoU', teacher_metric=0.6, retraining_seconds=60.0, seeds=3, rows=rows,
                  **summary)
    assert '| 3, 0.080 | 1.0 min |' in quality.markdown({'fcn': result})
    quality.plot(result, str(tmp_path / 'q.png'))  # the seeds' range drawn around the mean
    assert (tmp_path / 'q.png').stat().st_size > 0


def test_quality_passes_banks_and_config_overrides_to_its_child(tmp_path, monkeypatch, capsys):
    """``--banks`` and ``--cfg-options`` (a bank retrained longer, and the compute the baseline gets with it) reach
    the measuring child; the plot is named after the results file."""
    import quality
    calls, plots = [], []
    monkeypatch.setattr(quality, 'run_child', lambda script, args, root: (calls.append(args) or dict(
        model='m', metric='acc', teacher_metric=1.0, retraining_seconds=1.0, rows=[], share_won=1.0,
        mean_metric=dict(mmlego=1.0, untrained=1.0, uniform_a=1.0)), ''))
    monkeypatch.setattr(quality, 'plot', lambda result, path: plots.append(path))
    out = tmp_path / 'quality_long.json'
    quality.main(['--only', 'simplebaseline', '--budgets', '3', '--banks', '/banks', '--cfg-options',
                  'train_cfg.retrain.epochs=6', '--out', str(out)])
    args, = calls
    assert args[args.index('--seeds') + 1] == '3'  # the default
    assert args[args.index('--banks') + 1] == '/banks'
    assert args[args.index('--cfg-options') + 1] == 'train_cfg.retrain.epochs=6'
    assert plots == [str(tmp_path / 'quality_long_simplebaseline.png')]


def test_quality_picks_only_compares_banks_without_baselines(tmp_path, monkeypatch):
    """``--picks-only`` reaches the child; its rows (mmlego alone) summarize, plot and print without a share won."""
    import quality
    rows = [dict(budget_mb=10.0, mmlego=0.5), dict(budget_mb=20.0, mmlego=0.7)]
    result = dict(model='simplebaseline', metric='coco/AP', teacher_metric=0.8, retraining_seconds=None, rows=rows,
                  **quality.summarize(rows))
    assert result['share_won'] is None and result['mean_metric'] == pytest.approx(dict(mmlego=0.6))
    calls = []
    monkeypatch.setattr(quality, 'run_child', lambda script, args, root: (calls.append(args) or result, ''))
    out = tmp_path / 'picks.json'
    quality.main(['--only', 'simplebaseline', '--picks-only', '--out', str(out)])
    assert '--picks-only' in calls[0] and (tmp_path / 'picks_simplebaseline.png').stat().st_size > 1000
    line = quality.markdown({'simplebaseline': result}).splitlines()[-1]
    assert line == '| simplebaseline | coco/AP | 0.800 | 2 | - | 0.600 / - / - / - | - | - |'


def test_summary_reports_end_to_end_and_offline_against_their_targets():
    import run
    e2e = dict(budgets=50, first_ms=5.0, median_ms=0.4, p95_ms=2.0, mean_blocks_changed=2.0, blocks=8)
    offline = dict(batch_size=8, blocks=2, retrained=6, teacher_s_per_batch=0.1, retrain_s_per_batch=0.5,
                   retrain_over_teacher=5.0, uniform_over_teacher={'0.8': 0.4}, configurations_per_hour=dict(legodnn=1e6, uniform=2, teacher=1))
    text = run.summary({'end_to_end': {'tsn': e2e, 'trn': dict(e2e, median_ms=1.5)}, 'offline': {'tsn': offline}})
    assert '| tsn | 50 | 5.0 ms | 0.400 / 2.000 | 2.0 / 8 | met |' in text
    assert '| trn | 50 | 5.0 ms | 1.500 / 2.000 | 2.0 / 8 | **not met** |' in text
    assert '5.00 (not met)' in text


def test_steal_share_of_two_samples():
    import machine
    before = [100, 0, 50, 800, 0, 0, 0, 50]
    after = [200, 0, 100, 1500, 0, 0, 0, 150]  # 950 jiffies, 100 of them stolen
    assert machine.steal_share(before, after) == pytest.approx(100 / 950)
    assert machine.steal_share(None, after) is None and machine.steal_share(before, before) is None


class _Keypoints(_Residual):
    """A head that reshapes its channels into keypoints: pruning them breaks the forward instead of a shape."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(16, 10)

    def forward(self, x):
        return super().forward(x).reshape(-1, 5, 2)


def test_uniform_baseline_finds_outputs_that_break_the_forward():
    import uniform_baseline
    torch.manual_seed(0)
    model, x = _Keypoints().eval(), torch.randn(2, 3, 8, 8)
    forward = lambda m, inputs: m(inputs)  # noqa: E731
    assert uniform_baseline.output_layer_names(model, x, forward) == {'head'}
    pruned = uniform_baseline.prune_uniformly(copy.deepcopy(model), x, forward, 0.5)
    assert pruned(x).shape == (2, 5, 2) and pruned.a.out_channels == 16


def test_child_result_round_trip(tmp_path):
    import child
    script = tmp_path / 'child_script.py'
    script.write_text(f'import sys\nsys.path.insert(0, {str(ROOT / "bench")!r})\nimport child\nprint("a log line")\n'
                      'child.emit({"args": sys.argv[1:]})\nif "fail" in sys.argv: sys.exit(3)\n')
    assert child.run_child(str(script), ['x'], str(tmp_path))[0] == {'args': ['x']}
    assert child.run_child(str(script), ['fail'], str(tmp_path))[0] is None


def test_latency_fidelity_configurations_and_report():
    import latency_fidelity
    names, sparsities = ['a', 'b', 'c'], [0.0, 0.4, 0.8]
    chosen = latency_fidelity.configurations(names, sparsities, 10, seed=0)
    assert chosen[:3] == [{n: s for n in names} for s in sparsities]  # the composites first, teacher first
    assert len(chosen) == 10 and len({tuple(c.values()) for c in chosen}) == 10
    assert len(latency_fidelity.configurations(names, sparsities, 100, seed=0)) == 27  # every one, none twice
    row = dict(configurations=10, rounds=8, reprofiled=True, teacher_profiled_ms=20.0, teacher_measured_ms=19.0,
               profiled=0.12, profiled_uncalibrated=0.15, corrected=0.04, remeasured=0.02, over_budget_median=0.97,
               over_budget_max=1.06)
    text = latency_fidelity.markdown({'yolov3': row})
    assert ('| yolov3 | re-profiled | 10 x 8 | 20.00 / 19.00 | 12.0% (**not met**) | 15.0% | 4.0% (met) | 2.0% | '
            '0.970 / 1.060 (**not met**) | - | - | - | - |') in text  # a row of before the headroom columns
    row.update(over_budget_max=1.02, over_budget_misses=0, over_budget_no_headroom_median=0.99,
               over_budget_no_headroom_max=1.08, over_budget_no_headroom_misses=2, headroom_mean=0.021,
               headroom_max=0.043, headroom_metric_cost=0.0125)
    assert ('0.970 / 1.020 (met) | 0 | 0.990 / 1.080, 2 | 2.1% / 4.3% | 0.0125 | - |'
            in latency_fidelity.markdown({'yolov3': row}))
    row.update(served_median=0.95, served_max=1.03, served_misses=0, served_infeasible=1)
    assert '| 0.0125 | 0.950 / 1.030, 0 (1) |' in latency_fidelity.markdown({'yolov3': row})


def test_the_served_stream_rescales_after_every_forward():
    """A phase that starts during the served forwards: the loop re-solves after each, so the configuration changes
    once the forwards slow down, and the status at the end is the solver's then."""
    import types

    import latency_fidelity
    times = iter([2.0, 2.1, 6.0, 3.0] + [2.9] * 16)

    class Model:
        selection = {'a': 0.0}
        last_result = types.SimpleNamespace(status='optimal')

        def measure_latency_ms(self, example, warmup, repeats):
            assert (warmup, repeats) == (0, 1)  # each served forward timed alone
            self.last = next(times)
            return self.last

        def rescale_if_needed(self):
            if self.last > 5:
                self.selection = {'a': 0.8}
                self.last_result = types.SimpleNamespace(status='infeasible')

    served = latency_fidelity.served_stream(Model(), None)
    assert served == dict(served_ms=2.9, served_status='infeasible', served_switches=1)


def test_merge_results_keeps_the_models_not_measured_now(tmp_path):
    import child
    path = str(tmp_path / 'results' / 'end_to_end.json')
    child.merge_results(path, lambda results: results.update(tsn=dict(median_ms=1.0), trn=dict(median_ms=2.0)))
    child.merge_results(path, lambda results: results.update(tsn=dict(median_ms=0.5)))
    import json
    assert json.load(open(path)) == dict(quick=False, results=dict(tsn=dict(median_ms=0.5), trn=dict(median_ms=2.0)))


def _banks_dir(lego, root):
    """``root`` laid out as the latency benchmarks read banks (``root/tsn/bank``); returns their teachers JSON."""
    import json
    (root / 'tsn').mkdir()
    (root / 'tsn' / 'bank').symlink_to(lego.bank)
    teachers = root / 'teachers.json'
    teachers.write_text(json.dumps({'tsn': {'checkpoint': str(lego.teacher)}}))
    return teachers


def test_latency_fidelity_serves_with_the_thread_count_the_bank_was_profiled_with(lego, workspace, tmp_path,
                                                                                  monkeypatch):
    """Without --threads the measuring process takes the bank's profiled count (not its own): one-thread profiles
    against two-thread forwards were off by the ratio of the two speeds."""
    import latency_fidelity
    monkeypatch.chdir(workspace)
    teachers = _banks_dir(lego, tmp_path)
    threads = torch.get_num_threads()
    profiled = json.load(open(lego.bank / 'manifest.json'))['profiles']['num_threads']
    other = 2 if profiled == 1 else 1
    try:
        torch.set_num_threads(other)
        model, _ = latency_fidelity.load_lego('tsn', str(tmp_path), str(teachers))
        assert torch.get_num_threads() == profiled and model.latency_threads == profiled
        model, _ = latency_fidelity.load_lego('tsn', str(tmp_path), str(teachers), threads=other)
        assert torch.get_num_threads() == other  # --threads still wins
    finally:
        torch.set_num_threads(threads)


def test_latency_phases_profiles_and_measures_every_composite_per_cycle(lego, workspace, tmp_path, monkeypatch):
    import functools

    import latency_phases
    monkeypatch.setattr(latency_phases, 'reprofile_in_model',
                        functools.partial(latency_phases.reprofile_in_model, min_seconds=0))  # 4 rounds, no span
    monkeypatch.chdir(workspace)
    teachers = _banks_dir(lego, tmp_path)
    threads = torch.get_num_threads()
    try:
        result = latency_phases.measure_model('tsn', 2, str(tmp_path), str(teachers), threads=1)
    finally:
        torch.set_num_threads(threads)
    assert result['num_threads'] == 1 and len(result['cycles']) == 2
    for cycle in result['cycles']:
        assert [row['sparsity'] for row in cycle] == [0.0, 0.8]
        for row in cycle:
            assert row['profiled_ms'] > 0 and row['measured_ms'] > 0
            assert row['difference'] == pytest.approx(row['measured_ms'] / row['profiled_ms'] - 1)
    differences = sorted(abs(row['difference']) for cycle in result['cycles'] for row in cycle)
    assert result['max_abs_difference'] == differences[-1]
    assert result['median_abs_difference'] == pytest.approx((differences[1] + differences[2]) / 2)


def test_capacity_after_fine_tuning_trains_the_pruned_weights(lego, workspace, monkeypatch):
    """``capacity_check.py --finetune``: the teacher pruned uniformly (physically smaller) is trained from its pruned
    weights with the config's own schedule; Runner.train() must not re-initialize them."""
    import capacity_check
    import torch
    from mmengine.config import Config
    from mmengine.runner import Runner

    from mmlego.utils import scope_runner_checkpoint_loading
    from .conftest import CONFIGS, TEACHER_CONFIGS
    monkeypatch.chdir(workspace)
    cfg = Config.fromfile(str(CONFIGS / TEACHER_CONFIGS['tsn']))
    loaders = ('train_dataloader', 'val_dataloader', 'test_dataloader')
    cfg.merge_from_dict({'train_cfg.max_epochs': 1, 'work_dir': str(workspace / 'capacity'),
                         'load_from': str(lego.teacher),
                         **{f'{loader}.{key}': value for loader in loaders
                            for key, value in (('num_workers', 0), ('persistent_workers', False))}})
    runner = Runner.from_cfg(cfg)
    scope_runner_checkpoint_loading(runner)
    runner.test()
    full = sum(p.numel() for p in runner.model.parameters())
    initialized = []
    init = runner._init_model_weights

    def init_and_compare():  # what Runner.train() runs first: the pruned weights must come through it unchanged
        before = {k: v.clone() for k, v in runner.model.state_dict().items()}
        init()
        initialized.append(all(torch.equal(before[k], v) for k, v in runner.model.state_dict().items()))

    monkeypatch.setattr(runner, '_init_model_weights', init_and_compare)
    result = capacity_check.finetune_uniformly(runner, 0.5)
    assert initialized == [True]
    assert result['params_pruned'] < 0.5 * full  # every prunable layer at half its channels: about a quarter
    assert set(result['metrics_finetuned']) >= {'acc/top1'} and result['finetune_seconds'] > 0
    assert runner.train_loop.iter > 0  # it trained


def test_range_check_agrees_with_the_banks_smallest_configuration(lego, workspace, monkeypatch):
    """``bench/range_check.py`` switches a fresh teacher to all-at-s descendants and counts its bytes; at the bank's
    top sparsity that is the smallest configuration the optimizer's memory profiles describe (computed apart)."""
    from types import SimpleNamespace

    import range_check

    from mmlego.block_bank import problem_from_bank
    from mmlego.block_bank.profiles import BankProfiles
    from mmlego.scaling_optimizer import budget_range

    from .conftest import CONFIGS, TEACHER_CONFIGS
    monkeypatch.chdir(workspace)
    shares = range_check.smallest_shares(str(CONFIGS / TEACHER_CONFIGS['tsn']), str(lego.config), str(lego.teacher),
                                         [0.5, 0.8])
    bank = SimpleNamespace(blocks=[SimpleNamespace(name=name) for name in lego.profiles['descendants']],
                           sparsities=[0.0, 0.8], profiles=BankProfiles.from_dict(lego.profiles))
    limits = budget_range(problem_from_bank(bank))
    assert shares[0.8] == pytest.approx(limits['min_memory_bytes'] / limits['max_memory_bytes'], rel=1e-3)
    assert shares[0.8] < shares[0.5] < 1.0
    table = range_check.markdown({'tsn': {str(s): v for s, v in shares.items()}})
    assert table.splitlines()[0] == '| model | top sparsity 0.5 | top sparsity 0.8 |' and '| tsn |' in table


def test_composite_error_is_zero_for_the_teacher_and_the_relative_error_of_the_switched_model():
    import composite_error

    from mmlego.block_switcher import BlockSwitcher

    from .test_block_bank import build_bank, make_tiny
    teacher = make_tiny()
    bank = build_bank(teacher)
    generator = torch.Generator().manual_seed(2)
    batches = [torch.randn(2, 3, 16, 16, generator=generator) for _ in range(2)]
    errors = composite_error.composite_errors(teacher, bank, bank.descendants, lambda m, b: m(b), batches,
                                              [0.0, 0.8])
    model = copy.deepcopy(teacher)
    BlockSwitcher(model, bank, guard_forward=False).switch({spec.name: 0.8 for spec in bank.blocks})
    with torch.no_grad():
        expected = sum(float(((model(b) - teacher(b)) ** 2).sum() / (teacher(b) ** 2).sum()) for b in batches) / 2
    assert errors[0.0] == 0.0 and errors[0.8] == pytest.approx(expected, rel=1e-5) and expected > 1e-3


def test_val_precision_evaluates_the_chosen_samples_only():
    import numpy as np
    from mmaction.evaluation import AccMetric

    import val_precision
    scores = {0: [0.9, 0.1], 1: [0.2, 0.8]}  # class 0 predicted, class 1 predicted
    results = [dict(pred=np.array(scores[p], dtype=np.float32), label=np.int64(t))
               for p, t in [(0, 0), (1, 0), (1, 1), (0, 1)]]  # right, wrong, right, wrong
    metric = AccMetric(metric_list=('top_k_accuracy',), metric_options=dict(top_k_accuracy=dict(topk=(1,))))
    assert val_precision._subset_metric(metric, results, {0, 1, 2, 3})['top1'] == pytest.approx(0.5)
    assert val_precision._subset_metric(metric, results, {0, 2})['top1'] == pytest.approx(1.0)
    assert val_precision._subset_metric(metric, results, {1, 3})['top1'] == pytest.approx(0.0)
    assert val_precision._scaled('acc/top1', {'top1': 0.25}) == 25.0 and val_precision._scaled('mIoU', {'mIoU': 40}) == 40


def test_latency_profile_span_profiles_with_each_span_and_scores_them_against_the_visits(lego, workspace, tmp_path,
                                                                                        monkeypatch):
    import latency_profile_span
    monkeypatch.chdir(workspace)
    teachers = _banks_dir(lego, tmp_path)
    threads = torch.get_num_threads()
    try:
        result = latency_profile_span.measure_model('tsn', [0.0, 0.5], 2, 0.2, str(tmp_path), str(teachers), 1)
    finally:
        torch.set_num_threads(threads)
    assert result['num_threads'] == 1 and set(result['by_span']) == {'0.0', '0.5'}
    assert result['profile_seconds']['0.5'] >= 0.5  # went on past its four rounds until its visits spanned 0.5 s
    # (not compared with span 0's seconds: on a slow machine four rounds alone can take longer than 0.5 s)
    for span in ('0.0', '0.5'):
        assert len(result['profiles'][span]) == 2 and all(set(c) == {'0.0', '0.8'} for c in result['profiles'][span])
    # the scores, recomputed from the stored profiles and references
    reference = result['reference_ms']
    cycles = result['profiles']['0.5']
    errors = sorted(abs(c[s] - reference[s]) / reference[s] for c in cycles for s in reference)
    assert result['by_span']['0.5']['max_error'] == pytest.approx(errors[-1])
    assert result['by_span']['0.5']['median_error'] == pytest.approx((errors[1] + errors[2]) / 2)
    spread = sorted((max(c[s] for c in cycles) - min(c[s] for c in cycles)) / reference[s] for s in reference)
    assert result['by_span']['0.5']['reproducibility'] == pytest.approx(sum(spread) / 2)
    medians = result['cycle_measured_ms']
    assert all(len(m) == 2 for m in medians.values())
    between = sorted((max(m) - min(m)) / reference[s] for s, m in medians.items())
    assert result['measured_reproducibility'] == pytest.approx(sum(between) / 2)
    assert '| tsn |' in latency_profile_span.markdown({'tsn': result})


def _sweep_row(budget, measured, status='optimal', **fields):
    row = dict(budget_latency_ms=budget, budget_memory_mb=None, status=status, measured_latency_ms=measured,
               profiled_latency_ms=measured, corrected_latency_ms=measured, choice={'b': 0.4},
               measured_metric=0.5, estimated_metric=0.5, estimated_drop=0.0, estimated_memory_mb=1.0,
               resident_memory_mb=1.0)
    row.update(fields)
    return row


def test_fidelity_counts_what_the_correction_chose_and_leaves_out_budgets_it_found_infeasible():
    """A configuration chosen at the solve, kept after the epoch or re-solved to counts against its budget; a budget
    the solve or the re-solve after the epoch found infeasible (nothing fits the device as corrected then) does not,
    and the re-solves that found it are counted apart."""
    import pipelines
    teacher = _sweep_row(None, 10.0, choice={'b': 0.0})
    rows = [
        _sweep_row(5.0, 4.5, settled_measured_latency_ms=4.9, settled_corrected_latency_ms=4.8),  # kept: 0.90
        _sweep_row(6.0, 7.2, rescaled_status='optimal', rescaled_measured_latency_ms=6.6),  # re-solved to 1.10
        _sweep_row(7.0, 9.1, rescaled_status='infeasible', rescaled_measured_latency_ms=9.0),  # found infeasible
        _sweep_row(3.0, 6.0, status='infeasible', settled_measured_latency_ms=6.0),  # infeasible at the solve
    ]
    result = pipelines.fidelity(dict(sweep=[teacher], latency_sweep=rows, metric='acc', teacher_metric=0.5))
    assert result['max_settled_latency_over_budget'] == pytest.approx(4.9 / 5.0)
    assert result['rescaled_after_epoch'] == 1 and result['rescaled_infeasible'] == 1
    assert result['max_rescaled_latency_over_budget'] == pytest.approx(1.1)
    assert result['max_chosen_latency_over_budget'] == pytest.approx(1.1)  # not 9.0 / 7.0 nor 6.0 / 3.0
    assert '1 + 1 infeasible, 1.100' in pipelines.fidelity_markdown({'m': result})


def test_metric_interaction_rescores_sweep_rows_from_the_bank_and_refuses_another_bank(tmp_path):
    import metric_interaction
    blocks = ['a', 'b']
    drops = {name: {'0.0': dict(accuracy_drop=0.0), '0.8': dict(accuracy_drop=0.1)} for name in blocks}
    bank = tmp_path / 'net'
    (bank / 'bank').mkdir(parents=True)
    (bank / 'legodnn').mkdir()
    (bank / 'bank' / 'manifest.json').write_text(json.dumps(dict(profiles=dict(descendants=drops, teacher_metric=0.6))))
    # The all-0.8 composite lost 0.4 where its drops sum to 0.2: c = (0.4 - 0.2) / 0.2^2 = 5.
    (bank / 'legodnn' / 'accuracy_cache.json').write_text(json.dumps(dict(blocks=blocks, metrics={
        '0,0': 0.6, '0.8,0': 0.5, '0,0.8': 0.5, '0.8,0.8': 0.2})))
    teacher_row = dict(choice=dict(a=0.0, b=0.0), estimated_metric=0.6, measured_metric=0.62)
    smallest = dict(choice=dict(a=0.8, b=0.8), estimated_metric=0.4, measured_metric=0.21)
    model = dict(config='net.py', metric='acc', sweep=[smallest, teacher_row])
    result = metric_interaction.rescore(model, str(bank))
    assert result['interaction'] == pytest.approx(5.0) and result['rows'] == 1
    assert result['additive_median_points'] == pytest.approx((0.62 - 0.2 - 0.21) * 100)  # anchored on test's teacher
    assert result['compound_median_points'] == pytest.approx(abs(0.62 - 0.4 - 0.21) * 100)
    model['sweep'][0] = dict(smallest, estimated_metric=0.5)  # a row of another bank's drops
    with pytest.raises(ValueError, match='not the one the sweep ran'):
        metric_interaction.rescore(model, str(bank))
    # A bank that stores c (profiled since): its sweep's rows estimated D + c D^2, and are read as such.
    manifest = json.loads((bank / 'bank' / 'manifest.json').read_text())
    manifest['profiles']['accuracy_interaction'] = 5.0
    (bank / 'bank' / 'manifest.json').write_text(json.dumps(manifest))
    model['sweep'][0] = dict(smallest, estimated_metric=0.6 - 0.4)
    assert metric_interaction.rescore(model, str(bank)) == result
