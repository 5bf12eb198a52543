"""Bad inputs: each is one clear error naming the problem and the fix, raised before any long work.

More damaged and foreign banks (missing, another teacher, another format version, truncated, bit-flipped, manifests
edited into inconsistency) are in tests/test_block_bank.py; references, metric and a teacher of another architecture
through tools/train.py in tests/test_pipeline.py; budget sources in tests/test_online_scaling.py (also
tools/test.py with the bank of another teacher).
"""
import copy
import json
import math
import os
import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from mmlego.block_bank import FORMAT_VERSION, BankError, BlockBank
from mmlego.block_extraction import extract_blocks
from mmlego.block_retraining import RetrainingConfig, RetrainingError, retrain_descendants
from mmlego.descendant_generation import check_sparsities
from mmlego.scaling_optimizer import BlockOption, ModelProblem, parse_budget, solve

from .conftest import TSN_LEGO_CONFIG, load_tool
from .test_block_bank import _edit_manifest, build_bank, example_input, make_tiny, perturb, tensor_file

pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def trained():
    """A teacher and its retrained-looking bank (in memory)."""
    teacher = make_tiny()
    return teacher, perturb(build_bank(teacher))


# -- budgets ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('budget, message', [
    (dict(memory_mb=-1), '>= 0'),
    (dict(latency_ms=math.nan), '>= 0'),
    (dict(memory_mb=True), 'memory_mb must be a number.*got True'),
    (dict(memory_mb='lots'), 'memory_mb'),
    (dict(memory_mb='20XB'), 'unit'),
    (dict(mem=20), '"latency_ms".*"memory_mb"'),
    ('memory=20MB,latency', "cannot read 'latency' \\(expected key=value\\)"),
], ids=['negative', 'nan', 'boolean', 'not-a-number', 'unknown-unit', 'unknown-key', 'malformed-string'])
def test_bad_budget(budget, message):
    with pytest.raises(ValueError, match=message):
        parse_budget(budget)


def test_budget_below_the_smallest_configuration_names_it():
    from mmlego.engine.budget_schedule import infeasible_message
    problem = ModelProblem('net', teacher_metric=0.7, blocks={
        'a': [BlockOption(0.0, 0.0, 4.0, 1000), BlockOption(0.5, 0.1, 2.0, 500)]})
    result = solve(problem, memory_bytes=100)
    assert result.status == 'infeasible' and result.choice() == {'a': 0.5}  # runs the smallest, says so
    model = SimpleNamespace(budget_range=lambda: dict(min_memory_bytes=2 ** 20, min_latency_ms=2.0,
                                                      max_memory_bytes=2 ** 21, max_latency_ms=4.0))
    message = infeasible_message(dict(memory_mb=0.5), model)
    assert 'is infeasible: the smallest configuration needs 1.00 MB' in message
    assert 'raise the budget to at least memory=1.00MB' in message


@pytest.fixture(scope='module')
def scalable():
    """A LegoDNN around a tiny task model with a hand-profiled bank (no timing: cheap)."""
    from mmlego.models import LegoDNN
    from mmlego.profiling import profile_costs
    from mmlego.profiling.cost import memory_bytes

    from .test_latency import TinyTask
    torch.manual_seed(0)
    architecture = TinyTask(16).eval()
    bank = BlockBank.build(architecture, (example_input(),), sparsities=[0.0, 0.4, 0.8], max_ratio=0.5,
                           show_progress=False)
    profile_costs(bank, show_progress=False)
    profiles = bank.profiles
    profiles.teacher_metric, profiles.model_latency_ms = 1.0, 3.0
    profiles.model_memory_bytes = memory_bytes(architecture)
    for spec in bank.blocks:
        for sparsity in bank.sparsities:
            profiles.get(spec.name, sparsity).latency_ms = 1.0 - sparsity
            profiles.get(spec.name, sparsity).accuracy_drop = sparsity / 10
    model = LegoDNN(architecture, latency_correction=False)
    model.attach_bank(bank)
    return model


@pytest.mark.parametrize('latency_ms, memory_mb', [(None, True), (True, None), (False, None)],
                         ids=['memory-true', 'latency-true', 'latency-false'])
def test_boolean_budget_is_not_one_mib(scalable, latency_ms, memory_mb):
    from mmlego.apis import scale_model
    before = dict(scalable.selection)
    key = 'memory_mb' if memory_mb is not None else 'latency_ms'
    with pytest.raises(ValueError, match=f'{key} must be a number >= 0 .* or None for no limit, got (True|False)'):
        scale_model(scalable, latency_ms=latency_ms, memory_mb=memory_mb)
    assert scalable.selection == before  # nothing switched


def test_string_budget_in_scale(scalable):
    with pytest.raises(ValueError, match=r"unknown unit 'XB' in memory_mb '20XB'; use one of \['gb', "):
        scalable.scale(memory_mb='20XB')
    with pytest.raises(ValueError, match="memory_mb must be a number >= 0 in MB.*got 'lots'"):
        scalable.scale(memory_mb='lots')


def test_infeasible_budget_in_scale_model_runs_the_smallest_and_warns(scalable, monkeypatch):
    from mmlego.apis import scale_model
    from mmlego.models import legodnn
    warnings = []
    monkeypatch.setattr(legodnn, 'print_log', lambda message, **kwargs: warnings.append(message))
    result = scale_model(scalable, memory_mb=1e-6)
    assert result['status'] == 'infeasible' and set(result['selection'].values()) == {0.8}
    assert len(warnings) == 1 and 'is below the smallest configuration' in warnings[0], warnings
    assert 'running that' in warnings[0]


def test_tool_bad_budget_string_is_one_usage_error(tmp_path, capsys):
    tool = load_tool('test')
    with pytest.raises(SystemExit) as error:
        tool.main([str(TSN_LEGO_CONFIG), str(tmp_path), '--work-dir', str(tmp_path / 'work'), '--budget',
                   'memory=True'])
    err = capsys.readouterr().err
    assert error.value.code == 2 and "--budget: memory_mb must be a number >= 0 in MB" in err and "got 'True'" in err
    assert 'Traceback' not in err and not (tmp_path / 'work').exists()


@pytest.mark.parametrize('tool,extra', [('train', []), ('test', ['bank']), ('analyze_blocks', []),
                                        ('profile_latency', ['bank'])])
def test_tool_with_a_misspelled_config_names_the_closest_ones(tool, extra, tmp_path, monkeypatch):
    """A config path that is no file: one message naming it and the closest configs, before anything is built."""
    monkeypatch.chdir(TSN_LEGO_CONFIG.parents[3])  # the checkout, as a user runs the tools
    missing = str(TSN_LEGO_CONFIG.relative_to(TSN_LEGO_CONFIG.parents[3])).replace('r18_legodnn', 'r18-legodnn')
    with pytest.raises(SystemExit) as error:
        load_tool(tool).main([missing] + [str(tmp_path / name) for name in extra]
                             + (['--work-dir', str(tmp_path / 'work')] if tool in ('train', 'test') else []))
    code = error.value.code
    assert isinstance(code, str) and code.startswith(f'{missing}: no such config file'), code
    assert 'did you mean configs/action/tsn/tsn_r18_legodnn_synthaction.py' in code, code
    assert not (tmp_path / 'work').exists()


def test_a_package_config_path_reads_the_installed_packages_config():
    """``mmseg::...`` names a config of the installed package, as mmengine's own tools take it; a wrong one says so."""
    from mmlego.utils.launch import read_config
    cfg = read_config('mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py')
    assert cfg.model.decode_head.type == 'PSPHead' and cfg.model.backbone.depth == 18
    with pytest.raises(FileNotFoundError, match='mmseg::pspnet/no_such.py: no such config in the installed package'):
        read_config('mmseg::pspnet/no_such.py')


def test_init_lego_model_with_a_missing_config_raises_file_not_found(tmp_path):
    from mmlego.apis import init_lego_model
    with pytest.raises(FileNotFoundError, match='no such config file'):
        init_lego_model(tmp_path / 'nothing.py')


# -- pipeline settings -----------------------------------------------------------------------------------------
def test_misspelled_pipeline_key(tmp_path):
    from mmengine.config import Config

    from mmlego.engine.runner import LegoRunner
    cfg = Config(dict(work_dir=str(tmp_path / 'work'),
                      train_cfg=dict(type='mmlego.LegoDNNPipelineLoop', sparsity=[0.0, 0.5])))
    with pytest.raises(ValueError, match=r"train_cfg has unknown keys \['sparsity'\]; the valid keys are \[.*"
                                         r"'sparsities'.*\]; 'sparsity': did you mean 'sparsities'\?"):
        LegoRunner.from_cfg(cfg)  # before the model, the data or the work dir
    assert not (tmp_path / 'work').exists()


def test_misspelled_retrain_key(tmp_path):
    from mmengine.config import Config

    from mmlego.engine.runner import LegoRunner
    cfg = Config(dict(work_dir=str(tmp_path / 'work'),
                      train_cfg=dict(type='mmlego.LegoDNNPipelineLoop', retrain=dict(epoch=2, lr=1e-3))))
    with pytest.raises(ValueError, match=r"train_cfg.retrain has unknown keys \['epoch'\]; the valid keys are "
                                         r"\[.*'epochs'.*\]; 'epoch': did you mean 'epochs'\?"):
        LegoRunner.from_cfg(cfg)
    assert not (tmp_path / 'work').exists()


def test_pipeline_without_load_from():
    from mmengine.config import Config

    from mmlego.engine.pipeline_loop import LegoDNNPipelineLoop
    loop = SimpleNamespace(runner=SimpleNamespace(cfg=Config(dict(load_from=None))), wrapper=None)
    with pytest.raises(ValueError, match=r'needs the trained teacher: set load_from=<teacher checkpoint> in the '
                                         r'config or pass --cfg-options load_from='):
        LegoDNNPipelineLoop.run(loop)  # the first thing it does: no stage, no work dir


@pytest.mark.parametrize('sparsities', [[0.2, 0.4], [0.0, 0.8, 0.4], [0.0, 0.4, 0.4], [0.0, 1.0], [0.0, -0.2]],
                         ids=['not-from-zero', 'unsorted', 'duplicated', 'one', 'negative'])
def test_bad_sparsities(sparsities):
    with pytest.raises(ValueError, match=r'increasing, unique, in \[0, 1\) and start with 0.0'):
        check_sparsities(sparsities)


@pytest.mark.parametrize('max_ratio', [0, -0.1, 1.5, math.nan, True, '0.5'])
def test_bad_max_ratio(max_ratio):
    with pytest.raises(ValueError, match=r'max_ratio must be a number in \(0, 1\] .*LegoDNN uses 0.125'):
        extract_blocks(make_tiny(), (example_input(),), max_ratio=max_ratio)


def test_model_without_convolutions():
    model = nn.Sequential(nn.Flatten(), nn.Tanh(), nn.ReLU()).eval()  # no conv and no linear layer
    with pytest.raises(ValueError, match='no block found: the traced path has 0 convs'):
        BlockBank.build(model, (example_input(),), show_progress=False)
    # linear layers count as convolutions (a 1x1 conv over a vector): an MLP has a block
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    bank = BlockBank.build(mlp, (example_input(),), sparsities=[0.0, 0.5], show_progress=False)
    assert [spec.convs for spec in bank.blocks] == [['1', '3']]


def test_model_without_a_valid_block():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()  # one conv: no block of 2..max convs
    with pytest.raises(ValueError, match='no block found.*try a larger max_ratio'):
        BlockBank.build(model, (example_input(),), show_progress=False)


def test_teacher_checkpoint_of_another_architecture(tmp_path):
    from mmlego.utils.checkpoint import TeacherCheckpointError, check_teacher_checkpoint
    path = tmp_path / 'other.pth'
    torch.save({'state_dict': nn.Conv2d(3, 8, 3).state_dict()}, path)
    model = SimpleNamespace(architecture=nn.Conv2d(3, 4, 3), is_teacher_state_dict=lambda keys: True)
    with pytest.raises(TeacherCheckpointError,
                       match=r'does not fit the teacher architecture.*weight \(8, 3, 3, 3\) vs \(4, 3, 3, 3\)'):
        check_teacher_checkpoint(model, str(path))


# -- retraining ------------------------------------------------------------------------------------------------
def _retrain(trained, train, val, state_dir=None, **config):
    teacher, bank = trained
    return retrain_descendants(teacher, copy.deepcopy(bank.descendants), train, val,
                               teacher_forward=lambda model, batch: model(batch),
                               config=RetrainingConfig(epochs=1, **config), state_dir=state_dir,
                               show_progress=False)


def test_empty_training_dataloader(trained, tmp_path):
    with pytest.raises(RetrainingError, match='training dataloader yielded no batch; check its dataset and sampler'):
        _retrain(trained, [], [example_input()], state_dir=str(tmp_path / 'state'))
    assert not (tmp_path / 'state').exists()  # refused before any forward or file


def test_zero_batches_per_epoch():
    with pytest.raises(ValueError, match=r'max_batches_per_epoch must be an integer >= 1 or None \(the whole loader\)'):
        RetrainingConfig(max_batches_per_epoch=0)


def test_empty_held_out_dataloader(trained):
    with pytest.raises(RetrainingError, match='held-out dataloader yielded no batch'):
        _retrain(trained, [example_input()], [])


def test_one_sample_dataloader_is_enough(trained):
    """Batch norms are frozen during retraining, so a batch of one sample trains like any other."""
    one = [example_input(shape=(1, 3, 16, 16))]
    report = _retrain(trained, one, one, lr=1e-2)
    assert report.epochs_run == 1 and not report.stopped
    assert all(math.isfinite(loss) for loss in report.history[0]['train'].values())


@pytest.mark.parametrize('bad', [math.nan, math.inf])
def test_non_finite_loss_stops_only_that_descendant(trained, tmp_path, bad):
    teacher, bank = trained
    bank = copy.deepcopy(bank)
    broken = bank.descendants['b2'][0.8].module
    untrained = {k: t.clone() for k, t in broken.state_dict().items()}
    broken.register_forward_hook(lambda module, args, output: output + bad if module.training else output)
    healthy = bank.descendants['b2'][0.4].module
    before = {k: t.clone() for k, t in healthy.state_dict().items()}
    batches = [example_input(seed=s, shape=(4, 3, 16, 16)) for s in range(2)]
    report = retrain_descendants(teacher, bank.descendants, batches, batches[:1],
                                 teacher_forward=lambda model, batch: model(batch),
                                 config=RetrainingConfig(epochs=2, lr=1e-2), show_progress=False)
    assert list(report.stopped) == ['b2@0.8'] and f'loss {bad} at epoch 1, batch 0' in report.stopped['b2@0.8']
    assert all(torch.equal(broken.state_dict()[k], t) for k, t in untrained.items())  # its epoch-0 weights
    assert report.epochs_run == 2 and report.best_epoch['b2@0.8'] == 0
    assert any(not torch.equal(healthy.state_dict()[k], t) for k, t in before.items())  # the rest trained on
    # The rest of the bank stays valid: it saves and loads, with the trained and the kept weights.
    loaded = BlockBank.load(bank.save(tmp_path / 'bank'), copy.deepcopy(teacher))
    for sparsity, expected in ((0.8, untrained), (0.4, healthy.state_dict())):
        state = loaded.descendant('b2', sparsity).module.state_dict()
        assert all(torch.equal(state[k], t) for k, t in expected.items()), sparsity


# -- banks -----------------------------------------------------------------------------------------------------
def test_bank_with_a_plan_that_does_not_fit_its_tensors(trained, tmp_path):
    teacher, bank = trained
    directory = bank.save(tmp_path / 'bank')
    manifest = json.loads((directory / 'manifest.json').read_text())
    manifest['plans']['b2']['0.4']['structure']['b2.conv1']['out_channels'] += 1  # 20 filters, 19 stored
    (directory / 'manifest.json').write_text(json.dumps(manifest))
    with pytest.raises(BankError, match='rebuild'):
        BlockBank.load(directory, copy.deepcopy(teacher))


@pytest.mark.parametrize('map_location, message', [
    pytest.param('cuda', r"device cuda is not available here \(torch.cuda.is_available\(\) is False\); load with "
                 r"map_location='cpu'", marks=pytest.mark.skipif(torch.cuda.is_available(), reason='has CUDA')),
    ('meta', r"cannot live on the meta device .*; load it with map_location='cpu'"),
    ('bogus', r"'bogus' is not a torch device .*; use e.g. map_location='cpu'"),
])
def test_bank_loaded_on_a_device_this_machine_lacks(trained, tmp_path, map_location, message):
    teacher, bank = trained
    directory = bank.save(tmp_path / 'bank')
    with pytest.raises(ValueError, match=message):
        BlockBank.load(directory, copy.deepcopy(teacher), map_location=map_location)


def _flip_tensor_bytes(directory):
    path = tensor_file(directory)
    raw = bytearray(open(path, 'rb').read())
    raw[len(raw) // 2] ^= 0xFF
    open(path, 'wb').write(raw)


@pytest.mark.parametrize('damage, message', [
    (_flip_tensor_bytes, r'is corrupted \(its SHA-256 differs from the manifest\); re-copy or rebuild the bank'),
    (lambda d: (d / 'manifest.json').write_text('{"format_version": '), 'is not valid JSON .*rebuild it'),
    (lambda d: _edit_manifest(d, lambda m: m.update(format_version=FORMAT_VERSION + 1)),
     f'has bank format {FORMAT_VERSION + 1}, this mmlego reads {FORMAT_VERSION}; rebuild the bank'),
    (lambda d: _edit_manifest(d, lambda m: m['plans'].pop('b2')), r'is malformed \(KeyError.*rebuild it'),
], ids=['bit-flipped', 'truncated-manifest', 'newer-format', 'block-missing'])
def test_tool_test_refuses_a_damaged_bank_before_building_anything(trained, tmp_path, monkeypatch, damage, message):
    """tools/test.py CONFIG BANK (no --budget): one message, exit status 1, before the config or the runner."""
    _, bank = trained
    directory = bank.save(tmp_path / 'bank')
    damage(directory)
    tool = load_tool('test')
    monkeypatch.setattr(tool, '_prepare_config', lambda args: pytest.fail('the bank must be checked first'))
    with pytest.raises(SystemExit) as error:
        tool.main([str(TSN_LEGO_CONFIG), str(directory), '--work-dir', str(tmp_path / 'work')])
    code = error.value.code
    assert isinstance(code, str) and '\n' not in code and code.startswith(str(directory)), code
    assert re.search(message, code), code
    assert not (tmp_path / 'work').exists()


def _latency_table(bank, device):
    from mmlego.profiling.cost import LatencyTable
    blocks = {spec.name: {f'{s:g}': 1.0 - s for s in bank.sparsities} for spec in bank.blocks}
    return LatencyTable(bank.fingerprint, device, 3.0, blocks, {})


def test_latency_table_of_another_bank(trained):
    from mmlego.profiling.cost import LatencyTable
    _, bank = trained
    table = LatencyTable('0' * 64, 'cpu', 1.0, {}, {})
    with pytest.raises(ValueError, match='measured for another teacher; profile this bank'):
        table.apply(bank)


def test_latency_table_of_another_device_type(trained, tmp_path):
    teacher, bank = trained
    loaded = BlockBank.load(bank.save(tmp_path / 'bank'), copy.deepcopy(teacher))  # runs on the cpu
    table = _latency_table(loaded, 'cuda:0 (A100)')
    with pytest.raises(ValueError, match=r"measured on 'cuda:0 \(A100\)', but this bank runs on cpu: .*measure them "
                                         r"here \(tools/profile_latency.py .*--device cpu\), or pass "
                                         r"allow_other_device=True"):
        table.apply(loaded)
    assert loaded.profiles.get('b2', 0.4).latency_ms is None  # nothing applied
    table.apply(loaded, allow_other_device=True)
    assert loaded.profiles.get('b2', 0.4).latency_ms == pytest.approx(0.6) and loaded.profiles.device == table.device


def test_profile_latency_tool_refuses_a_table_of_another_device_type(trained, tmp_path, capsys):
    _, bank = trained
    directory = bank.save(tmp_path / 'bank')
    _latency_table(bank, 'cuda:0').save(tmp_path / 'table.json')
    before = (directory / 'manifest.json').read_bytes()
    tool = load_tool('profile_latency')
    argv = ['--apply', str(tmp_path / 'table.json'), str(directory), '--device', 'cpu']
    with pytest.raises(SystemExit) as error:
        tool.main(argv)
    assert "measured on 'cuda:0', but this bank runs on cpu" in str(error.value.code)
    assert '--allow-other-device' in str(error.value.code)
    assert (directory / 'manifest.json').read_bytes() == before  # nothing written
    tool.main([*argv, '--allow-other-device'])
    profiles = json.loads((directory / 'manifest.json').read_text())['profiles']
    assert profiles['device'] == 'cuda:0' and profiles['descendants']['b2']['0.4']['latency_ms'] == pytest.approx(0.6)
    assert not [f for f in os.listdir(directory) if f.startswith('.')]  # no temporary file left


def test_switcher_of_a_bank_built_for_another_teacher():
    from mmlego.block_switcher import BlockSwitcher
    model, other = make_tiny(), build_bank(make_tiny(seed=3, width=24))
    with pytest.raises(ValueError, match='block stem\\+b1 of this model does not match the bank'):
        BlockSwitcher(model, other)
