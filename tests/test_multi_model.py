"""Several models under one shared budget: MultiModelRuntime, scale_models and tools/replay_budget_trace.py."""
import csv
import json

import pytest
import torch

from .conftest import run_tool_in_process

pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture
def two_models(lego, pose_lego, workspace, monkeypatch):
    from mmlego.apis import init_lego_model
    monkeypatch.chdir(workspace)
    action = init_lego_model(str(lego.config), str(lego.bank), checkpoint=str(lego.teacher))
    pose = init_lego_model(str(pose_lego.config), str(pose_lego.bank), checkpoint=str(pose_lego.teacher))
    return dict(action=action, pose=pose)


# A random-init pose teacher may score 0 PCK: explicit weights keep these tests independent of that.
WEIGHTS = {'action': 1.0, 'pose': 0.5}


def _objective(problems, choices):
    total = 0.0
    for problem in problems:
        options = {name: {o.sparsity: o for o in opts} for name, opts in problem.blocks.items()}
        total += problem.weight * sum(options[b][s].accuracy_drop for b, s in choices[problem.name].items())
    return total


def test_joint_choice_equals_brute_force(two_models):
    from mmlego.runtime import MultiModelRuntime
    from mmlego.scaling_optimizer import budget_range, solve
    runtime = MultiModelRuntime(two_models, weights=WEIGHTS)
    problems = runtime.problems()
    combinations = 1
    for problem in problems:
        for options in problem.blocks.values():
            combinations *= len(options)
    assert combinations >= 64, 'the joint problem is too small to tell a joint choice from two separate ones'
    limits = budget_range(problems)
    low_mb, high_mb = limits['min_memory_bytes'] / 2 ** 20, limits['max_memory_bytes'] / 2 ** 20
    low_ms, high_ms = limits['min_latency_ms'], limits['max_latency_ms']
    budgets = [dict(memory_mb=low_mb + (high_mb - low_mb) * f) for f in (0.0, 0.2, 0.45, 0.7, 1.0)]
    budgets += [dict(latency_ms=low_ms + (high_ms - low_ms) * f) for f in (0.1, 0.5, 0.9)]
    budgets += [dict(memory_mb=low_mb + (high_mb - low_mb) * 0.6, latency_ms=low_ms + (high_ms - low_ms) * 0.6)]
    for budget in budgets:
        result = runtime.scale(**budget)
        memory = None if budget.get('memory_mb') is None else budget['memory_mb'] * 2 ** 20
        brute = solve(problems, latency_ms=budget.get('latency_ms'), memory_bytes=memory, solver='brute_force')
        assert result.status == brute.status == 'optimal', budget
        assert _objective(problems, result.choices) == pytest.approx(_objective(problems, brute.choices), abs=1e-9)
        for name, model in two_models.items():
            assert model.selection == result.choice(name)  # what was chosen is what runs
        # The shared budget holds for the sum, not for each model alone.
        if memory is not None:
            assert result.total_memory_bytes <= memory * (1 + 1e-9)


def test_default_weights_make_metrics_relative_to_each_teacher(two_models):
    from mmlego.runtime import MultiModelRuntime
    # The tiny test teacher's own metric on its 4 val clips may be 0 (it is barely trained): set a reference.
    two_models['action'].bank.profiles.teacher_metric = teacher = 0.4
    runtime = MultiModelRuntime({'action': two_models['action']})
    assert runtime.weights['action'] == pytest.approx(1 / teacher)
    # A model whose teacher metric cannot be a reference needs an explicit weight, and says so.
    two_models['pose'].bank.profiles.teacher_metric = 0.0
    with pytest.raises(ValueError, match="model 'pose' has teacher metric 0.0.*weights="):
        MultiModelRuntime(two_models)
    MultiModelRuntime(two_models, weights={'pose': 2.0})


def test_a_budget_change_switches_both_models_and_only_what_changed(two_models):
    from mmlego.apis import scale_models
    from mmengine.registry import DefaultScope

    from mmlego.models import example_batch
    inputs = {}
    for name, model in two_models.items():
        with DefaultScope.overwrite_default_scope(model.cfg.default_scope):  # each model's datasets, its scope
            inputs[name] = example_batch(model.cfg, model.architecture, split='test')

    def outputs():
        with torch.no_grad():
            return {name: torch.utils._pytree.tree_leaves(model(inputs[name], mode='tensor'))[0].clone()
                    for name, model in two_models.items()}

    full = scale_models(two_models, memory_mb='100%', weights=WEIGHTS)
    runtime = full['runtime']
    assert all(not any(m['selection'].values()) for m in full['models'].values())
    teacher_out = outputs()
    small = scale_models(runtime, memory_mb=runtime.full_estimate()['memory_mb'] * 0.5)
    assert small['memory_mb'] <= runtime.full_estimate()['memory_mb'] * 0.5 + 1e-9
    assert all(small['models'][name]['changed_blocks'] for name in two_models), small['models']
    for name, model in two_models.items():
        changed = small['models'][name]['changed_blocks']
        assert sorted(changed) == sorted(b for b, s in model.selection.items() if s > 0)
    scaled_out = outputs()
    assert all(not torch.equal(scaled_out[name], teacher_out[name]) for name in two_models)
    # The same budget again: nothing switches.
    again = scale_models(runtime, memory_mb=runtime.full_estimate()['memory_mb'] * 0.5)
    assert all(m['changed_blocks'] == [] for m in again['models'].values())
    back = scale_models(runtime, memory_mb='100%')
    assert all(back['models'][name]['changed_blocks'] for name in two_models)
    assert all(torch.equal(outputs()[name], teacher_out[name]) for name in two_models)


def test_a_shared_latency_budget_is_aimed_under_the_largest_headroom_of_the_models(two_models):
    from mmlego.runtime import MultiModelRuntime
    runtime = MultiModelRuntime(two_models, weights=WEIGHTS)
    two_models['pose'].headroom.fixed = 0.25  # the action model keeps its learned one (0: nothing predicted yet)
    smallest = sum(model.estimate({name: 0.8 for name in model.selection})['latency_ms']
                   for model in two_models.values())
    full = runtime.full_estimate()['latency_ms']
    # Room for the headroom above the smallest configuration, however little latency the models' ranges span
    budget = max(smallest + 0.6 * (full - smallest), 1.3 * smallest)
    result = runtime.scale(latency_ms=budget)
    assert runtime.last_headroom == 0.25
    assert result.total_latency_ms <= budget / 1.25 * (1 + 1e-9)
    assert result.total_latency_ms == pytest.approx(runtime.estimate()['latency_ms'])
    # each model that switched waits to learn how far its prediction was off
    assert all(model.headroom.pending for name, model in two_models.items() if runtime.last_changed[name])
    result = runtime.scale(latency_ms=smallest * 1.1)  # only the budget itself fits
    assert result.status != 'infeasible' and runtime.last_headroom == 0.0
    assert result.total_latency_ms <= smallest * 1.1 * (1 + 1e-9)
    runtime.scale(memory_mb='100%')
    assert runtime.last_headroom == 0.0


def test_bad_inputs_of_the_shared_budget(two_models, lego, workspace):
    from mmlego.apis import init_lego_model
    from mmlego.runtime import MultiModelRuntime
    from mmlego.scaling_optimizer.budget import InfeasibleBudgetError
    twin = init_lego_model(str(lego.config), str(lego.bank), checkpoint=str(lego.teacher))
    with pytest.raises(ValueError, match="two models share the name 'tsn_r18_legodnn_synthaction'.*dict"):
        MultiModelRuntime([two_models['action'], twin])
    with pytest.raises(ValueError, match='are the same object'):
        MultiModelRuntime({'a': twin, 'b': twin})
    with pytest.raises(ValueError, match=r"weights name unknown models \['detector'\]"):
        MultiModelRuntime(two_models, weights={'detector': 1.0})
    runtime = MultiModelRuntime(two_models, weights=WEIGHTS)
    before = {name: dict(model.selection) for name, model in two_models.items()}
    with pytest.raises(InfeasibleBudgetError, match=r'smallest joint configuration needs [\d.]+ MB.*action [\d.]+ MB'
                                                    r'.*pose [\d.]+ MB'):
        runtime.scale(memory_mb=0.01)
    assert {name: model.selection for name, model in two_models.items()} == before  # nothing switched
    result = runtime.scale(memory_mb=0.01, on_infeasible='smallest')
    assert result.status == 'infeasible'
    with pytest.raises(ValueError, match='memory_mb must be a number'):
        runtime.scale(memory_mb=-1)


def _replay(*args, cwd):
    """tools/replay_budget_trace.py in this process, on one torch thread (the machine is shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_tool_in_process('replay_budget_trace.py', *args, cwd=cwd)
    finally:
        torch.set_num_threads(threads)


def test_replay_tool_writes_the_timeline(lego, pose_lego, workspace, tmp_path):
    full = sum(json.loads((bank / 'manifest.json').read_text())['profiles']['model_memory_bytes']
               for bank in (lego.bank, pose_lego.bank)) / 2 ** 20
    trace = tmp_path / 'trace.yaml'
    trace.write_text('- {time_s: 0, memory_mb: "100%"}\n- {time_s: 1, memory_mb: "100%"}\n'
                     f'- {{time_s: 2, memory_mb: {full * 0.5}}}\n- {{time_s: 3, memory_mb: "100%"}}\n')
    out = tmp_path / 'out'
    _replay(str(trace), '--model', str(lego.config), str(lego.bank), str(lego.teacher),
            '--model', str(pose_lego.config), str(pose_lego.bank), str(pose_lego.teacher),
            '--name', 'action', '--name', 'pose', '--weights', 'action=1,pose=0.5',
            '--out', str(out), '--latency-repeats', '2', '--max-batches', '1', cwd=workspace)
    rows = list(csv.DictReader(open(out / 'trace.csv')))
    assert len(rows) == 4 and (out / 'trace.png').stat().st_size > 10_000
    assert [row['solved'] for row in rows] == ['True', 'False', 'True', 'True']
    assert rows[1]['switched_blocks'] == '0' and int(rows[2]['switched_blocks']) > 0
    assert float(rows[2]['memory_mb']) <= full * 0.5 + 1e-6 < float(rows[0]['memory_mb'])
    for name in ('action', 'pose'):
        # Back at the full budget, each model runs its teacher again: the same measured metric as at step 0.
        assert rows[3][f'{name}/measured_metric'] == rows[0][f'{name}/measured_metric'] != ''
        assert float(rows[0][f'{name}/estimated_metric']) == pytest.approx(float(rows[0][f'{name}/teacher_metric']))
        assert float(rows[0][f'{name}/measured_latency_ms']) > 0
    total = float(rows[0]['action/measured_latency_ms']) + float(rows[0]['pose/measured_latency_ms'])
    assert float(rows[0]['measured_latency_ms']) == pytest.approx(total)


def test_replay_tool_refuses_an_infeasible_step_before_running(lego, pose_lego, workspace, tmp_path):
    trace = tmp_path / 'trace.json'
    trace.write_text(json.dumps([dict(time_s=0, memory_mb='100%'), dict(time_s=5, memory_mb=0.01)]))
    with pytest.raises(AssertionError, match=r'trace step 1 \(time 5 s\).*smallest joint configuration needs'):
        _replay(str(trace), '--model', str(lego.config), str(lego.bank), str(lego.teacher),
                '--model', str(pose_lego.config), str(pose_lego.bank), str(pose_lego.teacher),
                '--name', 'a', '--name', 'b', '--weights', 'a=1,b=1', '--out', str(tmp_path / 'o'), cwd=workspace)
    assert not (tmp_path / 'o' / 'trace.csv').exists()

