"""Budgets over time: OnlineScalingHook driven by a trace (drops, spikes, noise, a slowed device) never runs over
budget once it has switched, does not oscillate on a noisy-flat budget (hysteresis), and logs every decision."""
import random
from types import SimpleNamespace

import pytest
from mmengine.logging import MMLogger

from mmlego.scaling_optimizer.hysteresis import decide

from .conftest import TSN_LEGO_CONFIG

MB = 2 ** 20
pytestmark = pytest.mark.usefixtures('one_torch_thread')


# -- the rule --------------------------------------------------------------------------------------------------

def test_decide_downscales_when_over_upscales_past_hysteresis_and_keeps_otherwise():
    solved = dict(latency_ms=None, memory_mb=10.0)
    running = dict(latency_ms=5.0, memory_mb=9.0)
    assert decide(running, None, solved).action == 'rescale'
    over = decide(running, solved, dict(latency_ms=None, memory_mb=8.5))
    assert over.rescale and 'downscale' in over.reason and 'memory 9.00 > 8.50 MB' in over.reason
    tighter = decide(running, solved, dict(latency_ms=None, memory_mb=9.2))  # still fits: still the optimum
    assert not tighter.rescale and 'fits' in tighter.reason and '-8.0%' in tighter.reason
    assert not decide(running, solved, dict(latency_ms=None, memory_mb=10.9), hysteresis=0.1).rescale
    rose = decide(running, solved, dict(latency_ms=None, memory_mb=11.5), hysteresis=0.1)
    assert rose.rescale and 'upscale' in rose.reason and '+15%' in rose.reason
    assert decide(running, solved, dict(latency_ms=None, memory_mb=10.01), hysteresis=0.0).rescale
    assert decide(running, solved, dict(latency_ms=None, memory_mb=None)).reason == \
        'upscale: budget rose (memory limit lifted)'
    slow = decide(running, solved, dict(latency_ms=4.0, memory_mb=10.0))  # a latency limit appears, not met
    assert slow.rescale and 'latency 5.00 > 4.00 ms' in slow.reason
    smallest = decide(running, solved, dict(latency_ms=None, memory_mb=5.0), smallest=True)
    assert not smallest.rescale and 'smallest' in smallest.reason
    for bad in (-0.1, float('nan'), '10%'):
        with pytest.raises(ValueError, match='hysteresis must be a finite number >= 0'):
            decide(running, solved, solved, hysteresis=bad)


# -- the hook on a trace ---------------------------------------------------------------------------------------

def make_trace(model, seed=0):
    """(phase, budget, device slowdown) per step: flat, noisy-flat, a sudden drop, a spike, a latency budget
    on a device that slows down by 1.3x (another process takes a core) and recovers.

    The flat level is exactly the memory of a configuration, so +-3% noise crosses a configuration boundary.
    """
    rng = random.Random(seed)
    limits = model.budget_range()
    full, small = limits['max_memory_bytes'] / MB, limits['min_memory_bytes'] / MB
    fast, slow = limits['min_latency_ms'], limits['max_latency_ms']
    middle = model.scale(memory_mb=small + 0.6 * (full - small)).memory_bytes['model'] / MB
    model.switcher.reset()
    # Feasible even on the slowed device (the fastest configuration slowed 1.3x fits), whatever the model's range:
    # a narrow model's configurations span little latency (overhead dominates), a wide one's a lot.
    latency = max((1.3 * fast + slow) / 2, 1.4 * fast)
    trace = [('flat', dict(memory_mb=middle), 1.0)] * 15
    trace += [('noisy', dict(memory_mb=middle * (1 + rng.uniform(-0.03, 0.03))), 1.0) for _ in range(60)]
    trace += [('drop', dict(memory_mb=small * 1.02), 1.0)] * 10
    trace += [('spike', dict(memory_mb=full * 1.5), 1.0)] * 10
    trace += [('latency', dict(latency_ms=latency), 1.0)] * 10
    trace += [('slowed', dict(latency_ms=latency), 1.3)] * 15
    trace += [('recovered', dict(latency_ms=latency), 1.0)] * 15
    return trace


def latencies_that_scale(model, saved_per_sparsity=0.7):
    """Sets the bank's block latencies to the teacher's block timings times ``1 - saved_per_sparsity * s`` (no
    calibration): the trace tests the hook's decisions, and the tiny bank's measured timings can span less than the
    trace's 1.3x slowdown on a loaded machine (a CI run measured its all-0.8 composite as slow as its teacher), which
    would leave no smaller configuration for the slowed phase to switch to. Latency fidelity is tested elsewhere."""
    profiles = model.bank.profiles
    for spec in model.bank.blocks:
        teacher_ms = profiles.get(spec.name, 0.0).latency_ms
        for sparsity in model.bank.sparsities:
            profiles.get(spec.name, sparsity).latency_ms = teacher_ms * (1 - saved_per_sparsity * sparsity)
    profiles.latency_calibration = None
    model.attach_bank(model.bank)  # re-attached: the problems it cached were built from the measured timings


def replay(lego, workspace, monkeypatch, hysteresis, log_file=None):
    """Runs the hook over the trace; returns (per step: phase, budget, running estimates, status, selection), hook."""
    from mmlego.apis import init_lego_model
    from mmlego.engine import OnlineScalingHook
    monkeypatch.chdir(workspace)
    model = init_lego_model(str(TSN_LEGO_CONFIG), str(lego.bank), checkpoint=str(lego.teacher))
    latencies_that_scale(model)
    limits = model.budget_range()
    assert limits['max_latency_ms'] > 1.3 * limits['min_latency_ms'], limits  # the slowed phase has somewhere to go
    trace = make_trace(model)
    step = [0]
    hook = OnlineScalingHook(budget=lambda: trace[step[0]][1], hysteresis=hysteresis, rescale_tolerance=0.0,
                             clock=lambda: float(step[0]))
    name = f'budget_trace_{hysteresis}_{id(hook)}'
    runner = SimpleNamespace(model=model, logger=MMLogger.get_instance(name, log_file=log_file))
    steps = []
    for index, (phase, budget, slowdown) in enumerate(trace):
        step[0] = index
        hook._apply(runner, 'test', epoch_start=False)
        for _ in range(3):  # three served forwards, timed: the device's current speed over the profiles
            profiled = sum(model.bank.profiles.get(name, s).latency_ms for name, s in model.selection.items())
            model.correction.observe(profiled * slowdown, profiled)
            hook._check_latency(runner, 'test')
        estimate = model.estimate()
        steps.append(dict(phase=phase, budget=budget, latency_ms=estimate['latency_ms'],
                          memory_mb=estimate['memory_bytes'] / MB, status=model.last_result.status,
                          selection=tuple(sorted(model.selection.items()))))
    return steps, hook


def test_trace_is_met_without_oscillation_and_every_decision_is_logged(lego, workspace, monkeypatch, tmp_path):
    log_file = tmp_path / 'trace.log'
    steps, hook = replay(lego, workspace, monkeypatch, hysteresis=0.1, log_file=str(log_file))
    assert all(s['status'] != 'infeasible' for s in steps)  # every budget of the trace is feasible
    for index, s in enumerate(steps):  # never over budget after the switch of that step
        assert s['memory_mb'] <= s['budget'].get('memory_mb', float('inf')) + 1e-9, (index, s)
        assert s['latency_ms'] <= s['budget'].get('latency_ms', float('inf')) * (1 + 1e-9), (index, s)
    by_phase = {}
    for s in steps:
        by_phase.setdefault(s['phase'], []).append(s['selection'])
    assert len(set(by_phase['flat'])) == 1
    noisy = [by_phase['flat'][-1]] + by_phase['noisy']
    switches = [b for a, b in zip(noisy, noisy[1:]) if a != b]
    assert len(switches) <= 2, switches  # noise of +-3% < hysteresis of 10%: at most a ratchet down, no return
    assert len(set(switches)) == len(switches) and noisy[0] not in switches  # never back to an earlier one
    assert set(dict(by_phase['spike'][0]).values()) == {0.0}  # the budget rose past everything: the teacher
    slowed = by_phase['slowed']
    assert slowed[-1] != by_phase['latency'][-1]  # the slowdown forced a smaller configuration
    assert by_phase['recovered'][-1] == by_phase['latency'][-1]  # and recovery brought the larger one back
    reasons = [d['reason'] for d in hook.decisions]
    changes = sum(a['budget'] != b['budget'] for a, b in zip(steps, steps[1:]))
    assert len(hook.decisions) == changes  # one decision per budget change (the first budget is just solved)
    assert all(d['action'] in ('keep', 'rescale') and d['reason'] for d in hook.decisions)
    assert any('downscale: running over budget' in r for r in reasons)
    assert any('upscale: budget rose' in r for r in reasons)
    assert any(r.startswith('running configuration fits') for r in reasons)
    log = log_file.read_text()
    assert log.count('-> keep: running configuration fits') == sum(d['action'] == 'keep' for d in hook.decisions)
    assert '[downscale: running over budget' in log and '[latency x1.30 measured online]' in log
    print(f'\ntrace: {len(steps)} steps, {hook.num_solves} solves, {len(switches)} switches on the noisy budget')


def test_solving_every_noisy_budget_would_oscillate(lego, workspace, monkeypatch):
    """Control for the test above: the noise does cross configuration boundaries, so solving each budget as it
    comes (no hysteresis) switches back and forth where the hook kept its configuration."""
    from mmlego.apis import init_lego_model
    monkeypatch.chdir(workspace)
    model = init_lego_model(str(TSN_LEGO_CONFIG), str(lego.bank), checkpoint=str(lego.teacher))
    noisy = [budget for phase, budget, _ in make_trace(model) if phase == 'noisy']
    chosen = [tuple(sorted(model.scale(**budget).choice().items())) for budget in noisy]
    switches = [b for a, b in zip(chosen, chosen[1:]) if a != b]
    assert len(switches) >= 4 and len(set(switches)) < len(switches), switches  # back and forth
