"""Bad inputs: each is one clear error naming the problem and the fix, raised before any long work.

Damaged and foreign banks (missing, another teacher, another format version, truncated, bit-flipped, manifests
edited into inconsistency) are in tests/test_block_bank.py; lego config keys, references, metric and a teacher of
another architecture through tools/train.py in tests/test_pipeline.py; budget sources in tests/test_online_scaling.py.
"""
import copy
import json
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from mmlego.block_bank import BankError, BlockBank
from mmlego.block_extraction import extract_blocks
from mmlego.block_retraining import RetrainingConfig, RetrainingError, retrain_descendants
from mmlego.descendant_generation import check_sparsities
from mmlego.scaling_optimizer import BlockOption, ModelProblem, parse_budget, solve

from .test_block_bank import build_bank, example_input, make_tiny
from .test_resident_memory import trained  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures('one_torch_thread')


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


# -- pipeline settings -----------------------------------------------------------------------------------------
@pytest.mark.parametrize('sparsities', [[0.2, 0.4], [0.0, 0.8, 0.4], [0.0, 0.4, 0.4], [0.0, 1.0], [0.0, -0.2]],
                         ids=['not-from-zero', 'unsorted', 'duplicated', 'one', 'negative'])
def test_bad_sparsities(sparsities):
    with pytest.raises(ValueError, match=r'increasing, unique, in \[0, 1\) and start with 0.0'):
        check_sparsities(sparsities)


@pytest.mark.parametrize('max_ratio', [0, -0.1, 1.5])
def test_bad_max_ratio(max_ratio):
    with pytest.raises(ValueError, match=r'max_ratio must be in \(0, 1\]'):
        extract_blocks(make_tiny(), (example_input(),), max_ratio=max_ratio)


def test_model_without_convolutions():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    with pytest.raises(ValueError, match='no block found: the traced path has 0 convs'):
        BlockBank.build(model, (example_input(),), show_progress=False)


def test_model_without_a_valid_block():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()  # one conv: no block of 2..max convs
    with pytest.raises(ValueError, match='no block found.*try a larger max_ratio'):
        BlockBank.build(model, (example_input(),), show_progress=False)


def test_teacher_checkpoint_of_another_architecture(tmp_path):
    from mmlego.utils.checkpoint import TeacherCheckpointError, check_teacher_checkpoint
    path = tmp_path / 'other.pth'
    torch.save({'state_dict': nn.Conv2d(3, 8, 3).state_dict()}, path)
    model = SimpleNamespace(architecture=nn.Conv2d(3, 4, 3), is_teacher_state_dict=lambda keys: True)
    with pytest.raises(TeacherCheckpointError, match=r'does not fit the teacher architecture.*weight \(8, 3, 3, 3\) vs \(4, 3, 3, 3\)'):
        check_teacher_checkpoint(model, str(path))


# -- retraining ------------------------------------------------------------------------------------------------
def _retrain(trained, train, val):
    teacher, bank = trained
    return retrain_descendants(teacher, copy.deepcopy(bank.descendants), train, val,
                               teacher_forward=lambda model, batch: model(batch), config=RetrainingConfig(epochs=1),
                               show_progress=False)


def test_empty_training_dataloader(trained):
    with pytest.raises(RetrainingError, match='training dataloader yielded no batch'):
        _retrain(trained, [], [example_input()])


def test_empty_held_out_dataloader(trained):
    with pytest.raises(RetrainingError, match='held-out dataloader yielded no batch'):
        _retrain(trained, [example_input()], [])


def test_non_finite_loss_stops_only_that_descendant(trained):
    teacher, bank = trained
    descendants = copy.deepcopy(bank.descendants)
    broken = descendants['b2'][0.8].module
    untrained = {k: t.clone() for k, t in broken.state_dict().items()}
    broken.register_forward_hook(lambda module, args, output: output * math.nan if module.training else output)
    healthy = descendants['b2'][0.4].module
    before = {k: t.clone() for k, t in healthy.state_dict().items()}
    batches = [example_input(seed=s, shape=(4, 3, 16, 16)) for s in range(2)]
    report = retrain_descendants(teacher, descendants, batches, batches[:1],
                                 teacher_forward=lambda model, batch: model(batch),
                                 config=RetrainingConfig(epochs=2, lr=1e-2), show_progress=False)
    assert list(report.stopped) == ['b2@0.8'] and 'loss nan at epoch 1, batch 0' in report.stopped['b2@0.8']
    assert all(torch.equal(broken.state_dict()[k], t) for k, t in untrained.items())  # its epoch-0 weights
    assert report.epochs_run == 2 and report.best_epoch['b2@0.8'] == 0
    assert any(not torch.equal(healthy.state_dict()[k], t) for k, t in before.items())  # the rest trained on


# -- banks -----------------------------------------------------------------------------------------------------
def test_bank_with_a_plan_that_does_not_fit_its_tensors(trained, tmp_path):
    teacher, bank = trained
    directory = bank.save(tmp_path / 'bank')
    manifest = json.loads((directory / 'manifest.json').read_text())
    manifest['plans']['b2']['0.4']['structure']['b2.conv1']['out_channels'] += 1  # 20 filters, 19 stored
    (directory / 'manifest.json').write_text(json.dumps(manifest))
    with pytest.raises(BankError, match='rebuild'):
        BlockBank.load(directory, copy.deepcopy(teacher))


def test_bank_loaded_on_a_device_this_machine_lacks(trained, tmp_path):
    if torch.cuda.is_available():
        pytest.skip('needs a machine without CUDA (here a CUDA device exists)')
    teacher, bank = trained
    directory = bank.save(tmp_path / 'bank')
    with pytest.raises(ValueError, match="device cuda is not available here.*map_location='cpu'"):
        BlockBank.load(directory, copy.deepcopy(teacher), map_location='cuda')


def test_latency_table_of_another_bank(trained):
    from mmlego.profiling.cost import LatencyTable
    _, bank = trained
    table = LatencyTable('0' * 64, 'cpu', 1.0, {}, {})
    with pytest.raises(ValueError, match='measured for another teacher; profile this bank'):
        table.apply(bank)


def test_switcher_of_a_bank_built_for_another_teacher():
    from mmlego.block_switcher import BlockSwitcher
    model, other = make_tiny(), build_bank(make_tiny(seed=3, width=24))
    with pytest.raises(ValueError, match='block stem\\+b1 of this model does not match the bank'):
        BlockSwitcher(model, other)
