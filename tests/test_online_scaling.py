"""mmlego.OnlineScalingHook and tools/test.py --budget / --sweep on a tiny bank built by the LegoDNN pipeline."""
import csv
import json
import math
import os
from types import SimpleNamespace

import pytest
import torch

from .conftest import TSN_LEGO_CONFIG as LEGO_CONFIG
from .conftest import fast_loader_options, load_tool, run_tool_one_thread

MB = 2 ** 20
# The lego bank's latencies were profiled with one thread; served with two on these 2 vCPUs, a forward's speed
# swings by tens of percent whenever anything else needs a core (bench/latency_phases.py), more than the timed
# behaviour these tests check can absorb.
pytestmark = pytest.mark.usefixtures('one_torch_thread')


# -- budget sources without a runner ---------------------------------------------------------------------------

def test_budget_parsing_and_errors(tmp_path):
    from mmlego.engine import OnlineScalingHook
    from mmlego.engine.online_scaling_hook import load_schedule, parse_budget

    assert parse_budget(dict(memory_mb=12)) == {'latency_ms': None, 'memory_mb': 12.0}
    assert parse_budget(dict(latency_ms=30.5, memory_mb=math.inf)) == {'latency_ms': 30.5, 'memory_mb': None}
    with pytest.raises(ValueError, match='"latency_ms".*"memory_mb"'):
        OnlineScalingHook(budget=dict(mem=12))
    with pytest.raises(ValueError, match='>= 0'):
        OnlineScalingHook(budget=dict(memory_mb=-1))
    with pytest.raises(ValueError, match='>= 0'):
        OnlineScalingHook(budget=dict(latency_ms=float('nan')))
    with pytest.raises(ValueError, match='list item 1'):
        OnlineScalingHook(budget=[dict(memory_mb=1), dict(mem_mb=2)])
    with pytest.raises(ValueError, match='at least one'):
        OnlineScalingHook(budget=[])
    with pytest.raises(ValueError, match='interval'):
        OnlineScalingHook(budget=dict(memory_mb=1), interval=0)
    with pytest.raises(ValueError, match='budget must be'):
        OnlineScalingHook(budget=12.5)

    schedule = tmp_path / 'schedule.yaml'
    schedule.write_text('- {time_s: 5, memory_mb: 10}\n- {time_s: 0, latency_ms: 80}\n')
    assert load_schedule(schedule) == [(0.0, {'latency_ms': 80.0, 'memory_mb': None}),
                                       (5.0, {'latency_ms': None, 'memory_mb': 10.0})]
    bad = tmp_path / 'bad.json'
    bad.write_text(json.dumps([{'time_s': 0, 'memory_gb': 1}]))
    with pytest.raises(ValueError, match='"time_s", "latency_ms" and "memory_mb"'):
        OnlineScalingHook(budget=str(bad))
    bad.write_text(json.dumps([{'memory_mb': 1}]))
    with pytest.raises(ValueError, match='time_s'):
        OnlineScalingHook(budget=str(bad))
    with pytest.raises(ValueError, match='does not exist'):
        OnlineScalingHook(budget=str(tmp_path / 'missing.json'))

    # A callable's values are validated when polled.
    hook = OnlineScalingHook(budget=lambda: dict(memory_mb=-5))
    with pytest.raises(ValueError, match='returned by the callable'):
        hook._poll(epoch_start=True)


def test_model_without_bank_is_a_clear_error():
    from mmlego.engine import OnlineScalingHook
    model = SimpleNamespace(scale=None, bank=None, load_configured_bank=lambda: None)
    runner = SimpleNamespace(model=model)
    with pytest.raises(RuntimeError, match='no block bank'):
        OnlineScalingHook(budget=dict(memory_mb=10)).before_test_epoch(runner)
    with pytest.raises(RuntimeError, match='mmlego.LegoDNN'):
        OnlineScalingHook(budget=dict(memory_mb=10)).before_test_epoch(SimpleNamespace(model=torch.nn.Linear(1, 1)))


# -- the hook in real test runs --------------------------------------------------------------------------------

def _runner(lego, tmp_path, hook, name, batch_size=1):
    from mmengine.config import Config
    from mmengine.runner import Runner

    from mmlego.utils.checkpoint import scope_runner_checkpoint_loading
    cfg = Config.fromfile(str(LEGO_CONFIG))
    cfg.merge_from_dict(dict(load_from=str(lego.teacher), work_dir=str(tmp_path / name),
                             experiment_name=f'online_scaling_{name}_{os.getpid()}',
                             test_dataloader=dict(batch_size=batch_size, num_workers=0, persistent_workers=False)))
    cfg.model.bank = str(lego.bank)
    cfg.merge_from_dict({'model.architecture.' + key[len('model.'):]: value
                         for key, value in lego.teacher_options.items()})  # a teacher of another width
    cfg.custom_hooks = []  # the config's own scaling hook: each test brings one
    runner = Runner.from_cfg(cfg)
    scope_runner_checkpoint_loading(runner)
    runner.register_hook(hook)
    return runner


@pytest.fixture(scope='module')
def wide_lego(workspace, tmp_path_factory):
    """The lego bank's TSN at full width: the latency scenarios need configurations whose latencies span far more
    than this machine's timing jitter (the quarter-width TSN's span ~1 ms around 5 ms)."""
    from .conftest import tiny_bank
    wide = {'model.backbone.base_channels': 64, 'model.cls_head.in_channels': 512}
    return tiny_bank('tsn', LEGO_CONFIG, tmp_path_factory.mktemp('wide_lego'), workspace,
                     options=tuple(f'model.architecture.{k[len("model."):]}={v}' for k, v in wide.items()),
                     teacher_options=wide)


def _limits(lego):
    """The smallest and full memory (MB) of the bank, from its manifest's profiles (all the problem needs)."""
    from mmlego.block_bank import problem_from_bank
    from mmlego.block_bank.profiles import BankProfiles
    from mmlego.scaling_optimizer import budget_range
    bank = SimpleNamespace(blocks=[SimpleNamespace(name=name) for name in lego.profiles['descendants']],
                           sparsities=[0.0, 0.8], profiles=BankProfiles.from_dict(lego.profiles))
    limits = budget_range(problem_from_bank(bank))
    return limits['min_memory_bytes'] / MB, limits['max_memory_bytes'] / MB


def _log_text(runner):
    return open(os.path.join(runner.log_dir, f'{runner.timestamp}.log')).read()


def test_fixed_budget_switches_and_records_measured(lego, workspace, tmp_path, monkeypatch):
    from mmlego.engine import OnlineScalingHook
    monkeypatch.chdir(workspace)
    smallest, _ = _limits(lego)
    hook = OnlineScalingHook(budget=dict(memory_mb=smallest * 1.001), latency_repeats=5)
    runner = _runner(lego, tmp_path, hook, 'fixed')
    metrics = runner.test()
    runner.test()  # a second epoch with the same budget: no new solve
    model = runner.model
    assert set(model.selection.values()) == {0.8}, model.selection
    assert hook.num_solves == 1
    first, second = hook.records
    assert first['resolved'] and not second['resolved']
    assert first['status'] == 'optimal' and first['choice'] == model.selection
    metric = lego.profiles['metric_name']
    assert first['measured_metric'] == pytest.approx(metrics[metric])
    assert first['estimated_memory_mb'] <= smallest * 1.001
    # Measured by other functions than the estimates: resident tensors on the device, timed forwards.
    assert first['estimated_memory_mb'] <= first['resident_memory_mb'] <= first['estimated_memory_mb'] * 1.1
    assert first['rss_mb'] > first['resident_memory_mb']
    assert 1 / 3 < first['corrected_latency_ms'] / first['measured_latency_ms'] < 3  # loose: bench/ holds 5%
    assert first['profiled_latency_ms'] * first['latency_ratio'] == pytest.approx(first['corrected_latency_ms'])
    log = _log_text(runner)
    assert 'OnlineScalingHook [test epoch 0]: budget memory<=' in log
    assert f'measured {metric}' in log and 'resident' in log and 'latency measured' in log

    # A budget below the smallest configuration runs the smallest and says so.
    hook.set_budget(dict(memory_mb=smallest / 2))
    runner.test()
    assert hook.records[-1]['status'] == 'infeasible'
    assert set(model.selection.values()) == {0.8}
    assert 'INFEASIBLE' in _log_text(runner)


def test_corrected_latency_follows_conditions_that_change_before_the_measurement(lego, workspace, tmp_path,
                                                                                monkeypatch):
    """The epoch's forwards ran under other conditions than the measurement (in a sweep: the data loader's workers
    on the same cores); the warm-up forwards before the measurement re-teach the online correction first."""
    import time
    from mmlego.engine import OnlineScalingHook
    monkeypatch.chdir(workspace)
    smallest, _ = _limits(lego)
    hook = OnlineScalingHook(budget=dict(memory_mb=smallest * 1.001), latency_repeats=5, latency_warmup=0)
    runner = _runner(lego, tmp_path, hook, 'conditions')
    loaded = []
    conv_forward = torch.nn.Conv2d._conv_forward

    def slowed_conv(self, *args):  # the device slows down once the epoch is over: every conv 2 ms longer
        if loaded:
            time.sleep(0.004)
        return conv_forward(self, *args)

    finish = hook._finish_epoch

    def finish_under_load(*args):
        loaded.append(True)
        finish(*args)

    monkeypatch.setattr(torch.nn.Conv2d, '_conv_forward', slowed_conv)
    monkeypatch.setattr(hook, '_finish_epoch', finish_under_load)
    runner.test()
    record, = hook.records
    assert record["latency_ratio"] > 1.5  # learned from the forwards before the measurement, under load
    # The frame (stem, head) slowed too: timed in the warm-up's whole forwards, not assumed to run like the blocks.
    assert 1 / 1.25 < record['corrected_latency_ms'] / record['measured_latency_ms'] < 1.25
    assert record['corrected_latency_ms'] == pytest.approx(record['profiled_latency_ms'] * record['latency_ratio'])


def test_a_latency_budget_settles_on_a_configuration_that_holds_on_it(wide_lego, workspace, tmp_path, monkeypatch):
    """The online correction in force when a budget is solved was learned on the previous configuration. On a device
    where the teacher's own blocks run 4 ms per conv slower than profiled and the pruned ones as profiled, the
    configuration picked with the smallest one's correction misses its budget; ``latency_settle`` serves the new
    configuration a correction window before the epoch and re-solves, so the epoch runs one that holds. The test
    batches hold two clips, as in a sweep: not of the profiled size, they teach the correction nothing."""
    lego = wide_lego  # the full-width TSN (see the fixture)
    import time
    from mmlego.engine import OnlineScalingHook
    monkeypatch.chdir(workspace)
    smallest, _ = _limits(lego)
    hook = OnlineScalingHook(budget=dict(memory_mb=smallest * 1.001), latency_repeats=5, latency_settle=0)
    runner = _runner(lego, tmp_path, hook, 'settle', batch_size=2)
    # The modules themselves, not only their ids: a freed module's id is reused by the next one allocated (a
    # descendant materialized by a later switch would then be slowed as if it were the teacher's).
    teacher_convs = [m for m in runner.model.architecture.modules() if isinstance(m, torch.nn.Conv2d)]
    slowed = set()
    conv_forward = torch.nn.Conv2d._conv_forward

    def teacher_blocks_slow(self, *args):
        if id(self) in slowed:
            time.sleep(0.004)
        return conv_forward(self, *args)

    monkeypatch.setattr(torch.nn.Conv2d, '_conv_forward', teacher_blocks_slow)
    runner.test()  # the smallest configuration: the correction learns this device on it
    model = runner.model
    running = {id(m) for m in model.architecture.modules()}
    # the convs of the teacher's blocks (the frame's run in every configuration)
    slowed.update(id(m) for m in teacher_convs if id(m) not in running)
    assert slowed
    low = model.estimate()['latency_ms']
    high = model.estimate({name: 0.0 for name in model.selection})['latency_ms']
    budget = low + 0.6 * (high - low)

    def run_at_budget(settle):
        model.correction.reset()  # both runs start from the same state: only the smallest configuration learned
        hook.set_budget(dict(memory_mb=smallest * 1.001))
        runner.test()
        hook.latency_settle = settle
        hook.set_budget(dict(latency_ms=budget))
        runner.test()
        epoch = [record for record in hook.records if record['epoch'] == hook.records[-1]['epoch']]
        return epoch[0], epoch[-1]  # the budget's solve; the configuration measured after the epoch

    missed, _ = run_at_budget(settle=0)
    assert any(s == 0.0 for s in missed['choice'].values())
    # The scenario does miss without settling: the teacher's blocks cost more than the smallest one's correction says.
    assert missed['measured_latency_ms'] > max(budget, 1.3 * missed['estimated_latency_ms']), missed
    # (The settled configuration's own timed forwards teach the correction too: it may re-solve during the epoch.)
    held, last = run_at_budget(settle=8)
    assert held['settle_solves'] >= 1 and held['choice'] != missed['choice'], (held, missed)
    assert last['measured_latency_ms'] <= 1.15 * budget, last  # loose: bench/pipelines.py holds 1.05
    # Measured where it was chosen too (before the epoch), beside the corrected estimate it was chosen by.
    assert held['settled_measured_latency_ms'] <= 1.15 * budget, held
    # Settling stops once the estimate fits, read after the measurement's forwards taught the correction; the record
    # keeps the one read before them (the estimate the measurement checks), which noise can leave a little over.
    assert held['settled_corrected_latency_ms'] <= 1.15 * budget or held['settle_solves'] == 8, held
    assert 1 / 1.25 < held['settled_corrected_latency_ms'] / held['settled_measured_latency_ms'] < 1.25, held
    assert missed['settled_measured_latency_ms'] is None  # latency_settle=0: nothing settled
    assert 're-solved' in _log_text(runner)


def test_after_the_epoch_the_correction_re_solves_a_configuration_the_device_slowed(wide_lego, workspace, tmp_path,
                                                                                   monkeypatch):
    """The device slows down while the epoch runs (here: the teacher's own blocks 4 ms per conv, from the end of the
    epoch on) and the epoch's batches do not teach the correction (two clips: not of the profiled size). The
    measurement window after the epoch does: the hook re-solves there, as serving would, and measures the new
    configuration; the epoch's own configuration keeps its measurement, and the next epoch starts from the new one."""
    lego = wide_lego  # the full-width TSN (see the fixture)
    import time
    from mmlego.engine import OnlineScalingHook
    monkeypatch.chdir(workspace)
    smallest, _ = _limits(lego)
    hook = OnlineScalingHook(budget=dict(memory_mb=smallest * 1.001), latency_repeats=5, latency_settle=4)
    runner = _runner(lego, tmp_path, hook, 'after_epoch', batch_size=2)
    # The modules themselves, not only their ids: a freed module's id is reused by the next one allocated (a
    # descendant materialized by a later switch would then be slowed as if it were the teacher's).
    teacher_convs = [m for m in runner.model.architecture.modules() if isinstance(m, torch.nn.Conv2d)]
    slowed, finishing = set(), []
    conv_forward = torch.nn.Conv2d._conv_forward

    def teacher_blocks_slow_after_the_epoch(self, *args):
        if finishing and id(self) in slowed:
            time.sleep(0.004)
        return conv_forward(self, *args)

    finish = hook._finish_epoch

    def finish_slowed(*args):
        finishing.append(True)
        try:
            finish(*args)
        finally:
            finishing.clear()

    monkeypatch.setattr(torch.nn.Conv2d, '_conv_forward', teacher_blocks_slow_after_the_epoch)
    monkeypatch.setattr(hook, '_finish_epoch', finish_slowed)
    runner.test()  # the smallest configuration
    model = runner.model
    running = {id(m) for m in model.architecture.modules()}
    slowed.update(id(m) for m in teacher_convs if id(m) not in running)
    low = model.estimate()['latency_ms']
    high = model.estimate({name: 0.0 for name in model.selection})['latency_ms']
    budget = low + 0.6 * (high - low)
    hook.set_budget(dict(latency_ms=budget))
    runner.test()
    record = hook.records[-1]
    assert any(s == 0.0 for s in record['choice'].values()), record  # the epoch ran some of the teacher's blocks
    assert record['measured_latency_ms'] > budget * 1.05, record  # ... and they slowed down after it
    assert record['rescaled_solves'] >= 1, record
    # a pruned configuration fits the slowed device: chosen, or (when settling ran out of re-solves while the
    # correction's factors still moved) the best one measured within the budget; never 'infeasible'
    assert record['rescaled_status'] in ('optimal', 'fallback'), record
    assert record['rescaled_measured_latency_ms'] <= 1.15 * budget, record  # loose: bench/pipelines.py holds 1.05
    # loose: on this 2-vCPU VM the same configuration re-measures up to 25-30% apart between seconds (README, B5);
    # the benchmark holds the real targets
    assert 1 / 1.4 < record['rescaled_corrected_latency_ms'] / record['rescaled_measured_latency_ms'] < 1.4
    rescaled = dict(model.selection)
    assert rescaled == record['rescaled_choice'] != record['choice']
    assert 'the online correction re-solved after the epoch' in _log_text(runner)
    runner.test()  # the same budget: the next epoch starts from the re-solved configuration (its own online
    start = next(r for r in hook.records if r['epoch'] == hook.records[-1]['epoch'])  # re-solves may follow)
    assert start['choice'] == rescaled and not start['resolved']


def test_shares_of_the_full_model_and_a_device_move(lego, workspace, monkeypatch):
    from mmlego.apis import init_lego_model, scale_model
    from mmlego.models.tensor_path import TENSOR_PATHS, example_batch
    monkeypatch.chdir(workspace)
    model = init_lego_model(str(LEGO_CONFIG), str(lego.bank), checkpoint=str(lego.teacher))
    full_mb = model.full_model_estimate()['memory_bytes'] / MB
    assert full_mb == pytest.approx(lego.profiles['model_memory_bytes'] / MB)
    result = scale_model(model, memory_mb='60%')
    assert model.budget['memory_mb'] == pytest.approx(0.6 * full_mb)
    assert result['memory_mb'] <= 0.6 * full_mb * (1 + 1e-9) and any(model.selection.values())
    assert scale_model(model, memory_mb=f'{0.6 * full_mb:.6f}MB')['selection'] == result['selection']
    for bad, message in ((True, 'memory_mb must be a number'), ('20 parsecs', "unknown unit 'parsecs'"),
                         ('x' * 2 ** 21, 'characters')):
        with pytest.raises(ValueError, match=message) as error:
            scale_model(model, memory_mb=bad)
        assert len(str(error.value)) < 600

    # model.to(...) carries the bank: the selection keeps running, switching still works after the move.
    inputs = example_batch(model.cfg, model.architecture)
    forward = TENSOR_PATHS[model.tensor_path]
    with torch.no_grad():
        before = forward(model.architecture, inputs)
    selection, switcher = dict(model.selection), model.switcher
    model.to('cpu')
    assert model.switcher is not switcher and model.selection == selection
    with torch.no_grad():
        torch.testing.assert_close(forward(model.architecture, inputs), before)
    scale_model(model, memory_mb='100%')
    assert set(model.selection.values()) == {0.0}


def test_budget_list_cycles_and_callable_resolves_on_change(lego, workspace, tmp_path, monkeypatch):
    from mmlego.engine import OnlineScalingHook
    monkeypatch.chdir(workspace)
    smallest, full = _limits(lego)
    tight, loose = dict(memory_mb=smallest), dict(memory_mb=full)
    hook = OnlineScalingHook(budget=[tight, loose], log_measured=False)
    runner = _runner(lego, tmp_path, hook, 'cycle')
    for _ in range(3):
        runner.test()
    assert [r['budget']['memory_mb'] for r in hook.records] == [smallest, full, smallest]
    assert hook.num_solves == 3
    assert all(r['measured_metric'] is None for r in hook.records)  # log_measured=False

    # A device monitor: polled at the epoch start and every iteration; re-solves only when its value changes.
    values = iter([tight, tight, loose, None, loose, loose, loose, loose])
    calls = []

    def monitor():
        calls.append(1)
        return next(values)

    hook.set_budget(monitor)
    hook.interval = 1
    solves = hook.num_solves
    runner.test()  # 4 test samples, batch size 1: polls before the epoch and before iterations 1, 2, 3
    assert len(calls) == 4
    # The model ran `tight` at the end of the list sweep already: only the change to `loose` is solved.
    assert hook.num_solves - solves == 1
    runner.test()
    assert hook.num_solves - solves == 1 and len(calls) == 8
    assert runner.model.selection == hook.records[-1]['choice']


def test_schedule_file_applies_by_elapsed_time(lego, workspace, tmp_path, monkeypatch):
    from mmlego.engine import OnlineScalingHook
    monkeypatch.chdir(workspace)
    smallest, full = _limits(lego)
    schedule = tmp_path / 'device.json'
    schedule.write_text(json.dumps([{'time_s': 0, 'memory_mb': full}, {'time_s': 2.0, 'memory_mb': smallest}]))
    now = [0.0]
    hook = OnlineScalingHook(budget=str(schedule), interval=2, clock=lambda: now[0])
    runner = _runner(lego, tmp_path, hook, 'schedule')
    original_before_iter = hook.before_test_iter

    def tick(runner, batch_idx, data_batch=None):
        now[0] = float(batch_idx)  # one second per test iteration
        original_before_iter(runner, batch_idx, data_batch)

    hook.before_test_iter = tick
    runner.test()
    # Before the epoch (t=0) the full budget applies; at iteration 2 (t=2) the tight one.
    assert [r['budget']['memory_mb'] for r in hook.records] == [full, smallest]
    assert [r['epoch'] for r in hook.records] == [0, 0]
    assert set(runner.model.selection.values()) == {0.8}
    assert hook.records[0]['measured_metric'] == hook.records[1]['measured_metric']  # one epoch, one metric
    assert 'over 2 configurations' in _log_text(runner)


# -- tools/test.py ---------------------------------------------------------------------------------------------

def _test_tool_args(lego, work_dir):
    return [str(LEGO_CONFIG), str(lego.bank), '--work-dir', str(work_dir), '--device', 'cpu',
            '--latency-repeats', '1', '--cfg-options', f'load_from={lego.teacher}', *fast_loader_options()]


def test_tool_budget(lego, workspace, tmp_path):
    smallest, _ = _limits(lego)
    budget = smallest * 1.05
    proc = run_tool_one_thread('test.py', *_test_tool_args(lego, tmp_path / 'work'), '--budget', f'memory={budget:.4f}MB',
                 '--sweep-dir', str(tmp_path / 'out'), cwd=workspace)
    row = json.loads((tmp_path / 'out' / 'budget.json').read_text())
    assert row['status'] == 'optimal' and row['budget_memory_mb'] == pytest.approx(budget, rel=1e-4)
    assert any(s > 0 for s in row['choice'].values())
    assert row['estimated_memory_mb'] <= budget and row['measured_metric'] is not None
    assert row['resident_memory_mb'] <= row['estimated_memory_mb'] * 1.1
    assert 1 / 3 < row['corrected_latency_ms'] / row['measured_latency_ms'] < 3
    assert 'est metric' in proc.stdout


def test_tool_sweep(lego, workspace, tmp_path):
    out = tmp_path / 'sweep'
    proc = run_tool_one_thread('test.py', *_test_tool_args(lego, tmp_path / 'work'), '--sweep', '3', '--sweep-dir', str(out),
                 '--interleaved-seconds', '0.5', cwd=workspace)
    with open(out / 'sweep.csv') as file:
        rows = list(csv.DictReader(file))
    data = json.loads((out / 'sweep.json').read_text())
    assert len(rows) == len(data['rows']) == 3
    for plot in ('sweep_budgets.png', 'sweep_memory.png', 'sweep_latency.png'):
        assert (out / plot).stat().st_size > 0
    smallest, full = _limits(lego)
    budgets = [r['budget_memory_mb'] for r in data['rows']]
    assert budgets[0] == pytest.approx(smallest) and budgets[-1] == pytest.approx(full)
    assert budgets == sorted(budgets)
    for row in data['rows']:
        assert row['status'] == 'optimal'
        assert row['estimated_memory_mb'] <= row['budget_memory_mb'] * (1 + 1e-9)
        assert row['resident_memory_mb'] <= row['budget_memory_mb'] * 1.1
        assert row['measured_metric'] is not None
        assert 1 / 3 < row['corrected_latency_ms'] / row['measured_latency_ms'] < 3
        # measured once more, in visits interleaved with the other rows' configurations
        assert 1 / 3 < row['interleaved_latency_ms'] / row['measured_latency_ms'] < 3
    # The smallest budget runs the smallest configuration; a larger budget never estimates a worse metric.
    assert data['rows'][0]['estimated_memory_mb'] == pytest.approx(smallest)
    estimated = [r['estimated_metric'] for r in data['rows']]
    assert all(b >= a - 1e-9 for a, b in zip(estimated, estimated[1:]))
    # Estimates on the report split: the teacher measured there minus the drops profiled on val.
    report_teacher = data['report_teacher_metric']
    assert report_teacher is not None
    teacher_rows = [r for r in data['rows'] if not any(r['choice'].values())]
    if teacher_rows:
        assert report_teacher == teacher_rows[-1]['measured_metric']
    for row in data['rows']:
        assert row['estimated_drop'] == pytest.approx(data['teacher_metric'] - row['estimated_metric_profiling'])
        assert row['estimated_metric'] == pytest.approx(report_teacher - row['estimated_drop'])
    assert float(rows[1]['estimated_memory_mb']) == pytest.approx(data['rows'][1]['estimated_memory_mb'])
    assert 'sweep.csv' in proc.stdout and 'budget MB' in proc.stdout
    # The sweep's numbers reach the visualizer backend (the local one: vis_data/scalars.json), one step per budget.
    lines = [json.loads(line) for path in (tmp_path / 'work').glob('2*/vis_data/scalars.json')
             for line in path.read_text().splitlines()]
    steps = [line['step'] for line in lines if 'sweep/legodnn_estimated_metric' in line]
    assert steps == [0, 1, 2]
    assert [line['sweep/legodnn_estimated_metric'] for line in lines if 'sweep/legodnn_estimated_metric' in line] \
        == pytest.approx(estimated)


def test_tool_sweep_by_latency(lego, workspace, tmp_path):
    out = tmp_path / 'sweep'
    run_tool_one_thread('test.py', *_test_tool_args(lego, tmp_path / 'work'), '--sweep', '2', '--sweep-by', 'latency',
          '--sweep-dir', str(out), '--interleaved-seconds', '0', cwd=workspace)
    data = json.loads((out / 'sweep.json').read_text())
    assert data['sweep_by'] == 'latency' and data['report_split'] == 'test'
    budgets = [row['budget_latency_ms'] for row in data['rows']]
    assert budgets == sorted(budgets) and all(row['budget_memory_mb'] is None for row in data['rows'])
    for row in data['rows']:
        # The optimizer kept the estimate it solved with within the budget (or ran the smallest, and said so).
        assert row['status'] == 'infeasible' or row['estimated_latency_ms'] <= row['budget_latency_ms'] * (1 + 1e-9)
        assert row['measured_latency_ms'] is not None and row['interleaved_latency_ms'] is None  # 0 s: not
        # The budget's solve was settled and measured before the epoch too; the online re-solves during it counted.
        assert row['settled_measured_latency_ms'] is not None and row['settled_corrected_latency_ms'] is not None
        assert isinstance(row['online_resolves'], int) and row['online_resolves'] >= 0
        assert 0.0 <= row['latency_headroom'] <= 0.1  # what the budget's solve aimed under it with (learned, capped)


def test_tool_bad_budget_and_infeasible(lego, workspace, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(workspace)
    monkeypatch.setenv('LOCAL_RANK', '0')  # what load_config would set, restored afterwards
    tool = load_tool('test')
    args = [a for a in _test_tool_args(lego, tmp_path / 'work') if a not in ('--device', 'cpu')]
    for budget, expected in (('mem=12MB', 'unknown key'), ('memory=12GHz', "unknown unit 'GHz'"),
                             ('memory=1,memory=2', 'twice'), ('latency=-1ms', '>= 0'), ('', 'empty')):
        with pytest.raises(SystemExit) as error:
            tool.main([*args, '--budget', budget])
        assert error.value.code == 2
        err = capsys.readouterr().err
        assert expected in err and '--budget' in err, err
    with pytest.raises(SystemExit) as error:
        tool.main([*args, '--sweep', '1'])
    assert error.value.code == 2 and 'integer >= 2' in capsys.readouterr().err
    assert not (tmp_path / 'work').exists()  # rejected before anything runs
    assert tool.parse_budget_arg('memory=12.5MB, latency=30') == {'memory_mb': 12.5, 'latency_ms': 30.0}

    # Below the smallest configuration: exit status 1 naming the smallest achievable memory, nothing evaluated.
    smallest, _ = _limits(lego)
    with pytest.raises(SystemExit) as error:
        tool.main([*args, '--budget', f'memory={smallest / 2:.3f}'])
    message = str(error.value.code)
    assert 'infeasible' in message and f'{smallest:.2f} MB' in message and '--allow-infeasible' in message
    assert not (tmp_path / 'work' / 'sweep').exists()


def test_tool_refuses_a_foreign_or_corrupted_bank_without_a_traceback(lego, workspace, tmp_path, monkeypatch):
    """Checked right after the teacher loads, with or without --budget: one message, exit status 1."""
    import shutil

    from mmengine.config import Config

    from mmlego.models import build_model
    from .conftest import CONFIGS, TEACHER_CONFIGS
    monkeypatch.chdir(workspace)
    monkeypatch.setenv('LOCAL_RANK', '0')
    torch.manual_seed(1)
    other = tmp_path / 'other_teacher.pth'
    torch.save({'state_dict': build_model(Config.fromfile(str(CONFIGS / TEACHER_CONFIGS['tsn']))).state_dict()}, other)
    tool = load_tool('test')
    args = [a if a != f'load_from={lego.teacher}' else f'load_from={other}'
            for a in _test_tool_args(lego, tmp_path / 'work')]
    with pytest.raises(SystemExit) as error:
        tool.main(args)
    assert 'was built from another teacher' in str(error.value.code)
    assert f'(the bank records {lego.teacher})' in str(error.value.code)
    damaged = tmp_path / 'bank'
    shutil.copytree(lego.bank, damaged)
    (damaged / 'manifest.json').write_text('{"format_version": ')
    args = [a if a != str(lego.bank) else str(damaged) for a in _test_tool_args(lego, tmp_path / 'work2')]
    with pytest.raises(SystemExit) as error:
        tool.main(args)
    assert 'is not valid JSON' in str(error.value.code) and 'rebuild it' in str(error.value.code)


def test_bank_profiled_on_another_device_type_warns(lego, workspace, tmp_path, monkeypatch):
    import shutil

    from mmlego.apis import init_lego_model
    from mmlego.models import legodnn
    monkeypatch.chdir(workspace)
    bank = tmp_path / 'bank'
    shutil.copytree(lego.bank, bank)
    manifest = json.loads((bank / 'manifest.json').read_text())
    manifest['profiles']['device'] = 'cuda:0'  # as if profiled on a GPU
    (bank / 'manifest.json').write_text(json.dumps(manifest))
    logged = []
    monkeypatch.setattr(legodnn, 'print_log', lambda message, **kwargs: logged.append(message))
    init_lego_model(str(LEGO_CONFIG), str(bank), checkpoint=str(lego.teacher))
    assert any('latencies were measured on cuda:0, this model runs on cpu' in m and 'profile_latency.py' in m
               for m in logged), logged
    logged.clear()
    init_lego_model(str(LEGO_CONFIG), str(lego.bank), checkpoint=str(lego.teacher))  # profiled here: no warning
    assert not any('latencies were measured on' in m for m in logged)


def test_the_pipeline_profiles_latency_with_the_configs_thread_count(pose_lego):
    # Its pipeline ran with one OpenMP thread (run_tool_one_thread) and model.latency_threads=2: the profiling
    # stage switched to two threads and recorded them for serving.
    assert pose_lego.profiles['num_threads'] == 2


def test_sweep_anchors_on_the_teacher_row_or_evaluates_the_teacher_once():
    from mmlego.apis.sweep import anchor_metric_estimates
    from mmlego.engine.budget_sweep_loop import BudgetSweepLoop
    loop = BudgetSweepLoop.__new__(BudgetSweepLoop)
    loop._runner = SimpleNamespace(logger=SimpleNamespace(info=lambda message: None))
    epochs, switched, budgets = [], [], []
    loop._run_epoch = lambda: epochs.append(1) or {'acc/top1': 0.5}
    bank = SimpleNamespace(blocks=[SimpleNamespace(name='a'), SimpleNamespace(name='b')],
                           profiles=SimpleNamespace(metric_name='acc/top1'))
    model = SimpleNamespace(bank=bank, switch=switched.append)
    hook = SimpleNamespace(set_budget=budgets.append)
    # a row that ends on the teacher after the correction re-solved during its epoch measured a mixture
    loop.rows = [dict(measured_metric=0.4, choice={'a': 0.2, 'b': 0.0}, estimated_metric=0.65),
                 dict(measured_metric=0.45, choice={'a': 0.0, 'b': 0.0}, estimated_metric=0.7, online_resolves=1)]
    assert loop._report_teacher_metric(model, hook) == 0.5  # no row ran the teacher: one more epoch with it
    assert epochs == [1] and switched == [{'a': 0.0, 'b': 0.0}] and budgets == [None]
    loop.rows.pop()
    loop.rows.append(dict(measured_metric=0.6, choice={'a': 0.0, 'b': 0.0}, estimated_metric=0.7))
    assert loop._report_teacher_metric(model, hook) == 0.6 and epochs == [1]  # the teacher's row, no extra epoch
    anchor_metric_estimates(loop.rows, 0.7, 0.6)
    assert [row['estimated_drop'] for row in loop.rows] == pytest.approx([0.05, 0.0])
    assert [row['estimated_metric'] for row in loop.rows] == pytest.approx([0.55, 0.6])
    assert [row['estimated_metric_profiling'] for row in loop.rows] == pytest.approx([0.65, 0.7])
    anchor_metric_estimates(loop.rows, 0.7, 0.6)  # idempotent: the profiling estimate is kept, not re-based twice
    assert [row['estimated_metric'] for row in loop.rows] == pytest.approx([0.55, 0.6])
    loop.rows = [dict(measured_metric=None, choice={'a': 0.2, 'b': 0.0})]
    assert loop._report_teacher_metric(model, hook) is None and epochs == [1]  # no metric to anchor on


def test_warm_up_runs_more_windows_only_while_the_estimate_moves():
    """One correction window after the warm-up forwards, then more (at most two) while the running configuration's
    corrected estimate moves by more than 5% per window."""
    from mmlego.engine.scaling_measurements import warm_up

    class Served:
        FORWARDS_UNOBSERVED_AFTER_SWITCH = 2

        def __init__(self, estimates):
            self.correction = SimpleNamespace(window=5)
            self.estimates, self.forwards = list(estimates), []

        def measure_latency_ms(self, inputs, warmup, repeats):
            self.forwards.append(repeats)
            if len(self.forwards) > 1:  # each later window moves the estimate to its next value
                self.estimates.pop(0)

        def estimate(self):
            return {'latency_ms': self.estimates[0]}

    settled = Served([10.0, 10.2])  # moved 2% in the first extra window: done
    warm_up(settled, None, latency_warmup=1)
    assert settled.forwards == [1 + 5 + 2, 5]
    moving = Served([10.0, 13.0, 16.0, 19.0])  # keeps moving: capped at two extra windows
    warm_up(moving, None, latency_warmup=1)
    assert moving.forwards == [8, 5, 5]
    settling = Served([10.0, 13.0, 13.1])
    warm_up(settling, None, latency_warmup=0)
    assert settling.forwards == [7, 5, 5]
    uncorrected = Served([10.0])
    uncorrected.correction = None
    warm_up(uncorrected, None, latency_warmup=2)
    assert uncorrected.forwards == [2]


def test_settling_that_runs_out_of_re_solves_over_the_budget_falls_back_to_one_measured_within_it():
    """Each re-solve lands on a configuration measured over the budget after one measured within it: when the
    re-solves run out, the best configuration measured within the budget runs, measured again."""
    from mmlego.engine import OnlineScalingHook

    class Model:  # the LegoDNN surface settling uses: estimates, the running selection, re-solves, switches
        correction = object()

        def __init__(self):
            self.selection, self.switched = {'a': 0.8}, []
            self.next = iter([{'a': 0.4}, {'a': 0.0}])  # the re-solves' answers

        def estimate(self):
            return dict(latency_ms=9.0, metric={0.8: 0.5, 0.4: 0.7, 0.0: 0.9}[self.selection['a']])

        def rescale_if_needed(self, tolerance, drift):
            self.selection = next(self.next)
            return SimpleNamespace(status='optimal')

        def switch(self, selection):
            self.switched.append(dict(selection))
            self.selection = dict(selection)

    measured = {0.8: 7.0, 0.4: 9.5, 0.0: 12.0}  # budget 10: 0.8 and 0.4 fit, 0.0 (the last re-solve) does not
    hook = OnlineScalingHook(budget=dict(latency_ms=10.0), latency_repeats=5, latency_settle=2)
    hook._current_budget = dict(latency_ms=10.0)
    hook._warm_up = lambda runner, model: None
    hook._measure_latency_ms = lambda runner, model: measured[model.selection['a']]
    model = Model()
    fields = hook._settle(None, model)
    assert fields['settle_solves'] == 2 and fields['settle_fallback']
    assert model.switched == [{'a': 0.4}] and model.selection == {'a': 0.4}  # the better of the two within
    assert fields['settled_measured_latency_ms'] == 9.5
    # Re-solves left over (the last configuration fits): no fallback.
    hook.latency_settle = 3
    model = Model()
    model.next = iter([{'a': 0.4}, None])
    model.rescale_if_needed = lambda tolerance, drift: (lambda s: s and (setattr(model, 'selection', s) or
                                                                         SimpleNamespace(status='optimal')))(
        next(model.next))
    fields = hook._settle(None, model)
    assert 'settle_fallback' not in fields and model.switched == [] and model.selection == {'a': 0.4}
