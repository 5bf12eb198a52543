"""Safe loading: a pickle payload planted in any file a loader reads is refused with a clear error, never run."""
import ast
import copy
import hashlib
import json
import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from mmlego.block_bank import BankError, BlockBank
from mmlego.profiling import profile_accuracy
from mmlego.profiling.cost import LatencyTable

from .conftest import ROOT
from .test_block_bank import example_input, tensor_file
from .test_resident_memory import trained  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures('one_torch_thread')


class Payload:
    """Unpickling it creates ``marker`` (a stand-in for any code a file could run)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, 'w')


def pickled(marker) -> bytes:
    return pickle.dumps({'state_dict': {}, 'x': Payload(marker)})


def torch_pickled(path: Path, marker) -> None:
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'x': Payload(marker)}, path)


@pytest.fixture
def saved(trained, tmp_path):
    teacher, bank = trained
    return copy.deepcopy(teacher), bank.save(tmp_path / 'bank'), tmp_path / 'PWNED'


def test_unpickling_the_payload_would_create_the_marker(tmp_path):
    """Control: the payload works, so the tests below would see it run."""
    marker = tmp_path / 'PWNED'
    pickle.loads(pickled(marker))
    assert marker.exists()


def test_bank_manifest_holding_a_pickle(saved):
    model, directory, marker = saved
    (directory / 'manifest.json').write_bytes(pickled(marker))
    with pytest.raises(BankError, match='manifest.json is not valid JSON.*rebuild it'):
        BlockBank.load(directory, model)
    assert not marker.exists()


def test_bank_tensors_holding_a_pickle(saved):
    model, directory, marker = saved
    tensors = Path(tensor_file(directory))
    tensors.write_bytes(pickled(marker))
    with pytest.raises(BankError, match='SHA-256 differs'):
        BlockBank.load(directory, model)
    # Even with a manifest edited to the planted file's hash, safetensors parses no pickle.
    torch_pickled(tensors, marker)
    manifest = json.loads((directory / 'manifest.json').read_text())
    manifest['tensors']['sha256'] = hashlib.sha256(tensors.read_bytes()).hexdigest()
    (directory / 'manifest.json').write_text(json.dumps(manifest))
    with pytest.raises(BankError, match='cannot be read as safetensors'):
        BlockBank.load(directory, model)
    assert not marker.exists()


def test_latency_table_holding_a_pickle(tmp_path):
    marker, path = tmp_path / 'PWNED', tmp_path / 'latency.json'
    path.write_bytes(pickled(marker))
    with pytest.raises(ValueError, match='is not a latency table.*tools/profile_latency.py'):
        LatencyTable.load(path)
    assert not marker.exists()


def _retrain_into(trained, state_dir, epochs):
    from mmlego.block_retraining import RetrainingConfig, retrain_descendants
    teacher, bank = trained
    batches = [example_input(seed=s, shape=(4, 3, 16, 16)) for s in range(2)]
    return retrain_descendants(teacher, copy.deepcopy(bank.descendants), batches, batches[:1],
                               teacher_forward=lambda model, batch: model(batch),
                               config=RetrainingConfig(epochs=epochs, lr=1e-3), state_dir=str(state_dir),
                               show_progress=False)


@pytest.mark.parametrize('planted, message', [
    ('state.json', 'state.json is not a readable JSON file.*remove the directory'),
    ('epoch_1_optim.pth', 'retraining state .* is unreadable.*remove the directory'),
    ('epoch_1.safetensors', 'retraining state .* is unreadable.*remove the directory')])
def test_retraining_state_holding_a_pickle(trained, tmp_path, planted, message):
    state_dir, marker = tmp_path / 'retraining', tmp_path / 'PWNED'
    _retrain_into(trained, state_dir, epochs=1)
    path = state_dir / planted
    assert path.exists()
    if path.suffix == '.pth':
        torch_pickled(path, marker)
    else:
        path.write_bytes(pickled(marker))
    with pytest.raises(ValueError, match=message):
        _retrain_into(trained, state_dir, epochs=2)
    assert not marker.exists()


def test_accuracy_cache_holding_a_pickle_is_ignored(trained, tmp_path, monkeypatch):
    from mmlego.profiling import accuracy
    teacher, bank = trained
    model, bank = copy.deepcopy(teacher), copy.deepcopy(bank)
    cache, marker = tmp_path / 'accuracy_cache.json', tmp_path / 'PWNED'
    cache.write_bytes(pickled(marker))
    calls = []
    x = example_input(seed=3)

    def evaluate(m):
        calls.append(1)
        with torch.no_grad():
            return -float(m(x).abs().mean())

    logged = []
    monkeypatch.setattr(accuracy, 'print_log', lambda message, **kwargs: logged.append(message))
    profile_accuracy(bank, model, evaluate, references=['teacher'], cache_file=cache, show_progress=False)
    assert not marker.exists()
    assert calls and any('accuracy_cache.json is not a readable JSON file' in m for m in logged), logged
    assert json.loads(cache.read_text())['metrics']  # rewritten as JSON


def test_teacher_checkpoint_holding_a_pickle(tmp_path):
    from mmlego.utils.checkpoint import TeacherCheckpointError, check_teacher_checkpoint, load_checkpoint
    path, marker = tmp_path / 'teacher.pth', tmp_path / 'PWNED'
    torch_pickled(path, marker)
    with pytest.raises(TeacherCheckpointError, match='refused unexecuted.*load_from must be'):
        check_teacher_checkpoint(SimpleNamespace(), str(path))
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(torch.nn.Linear(1, 1), str(path))
    assert not marker.exists()


def test_pipeline_stage_record_holding_a_pickle(tmp_path):
    from mmlego.engine.pipeline_loop import LegoDNNPipelineLoop
    marker = tmp_path / 'PWNED'
    (tmp_path / 'pipeline.json').write_bytes(pickled(marker))
    with pytest.raises(RuntimeError, match='stage record.*is corrupted.*overwrite=True'):
        LegoDNNPipelineLoop._saved(SimpleNamespace(lego_dir=tmp_path))
    assert not marker.exists()


def test_every_torch_load_is_weights_only():
    calls = []
    for path in [*ROOT.glob('mmlego/**/*.py'), *ROOT.glob('tools/*.py'), *ROOT.glob('bench/*.py')]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == 'load' \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == 'torch':
                keywords = {k.arg: k.value for k in node.keywords}
                safe = isinstance(keywords.get('weights_only'), ast.Constant) and keywords['weights_only'].value
                calls.append((f'{path.relative_to(ROOT)}:{node.lineno}', safe))
    assert calls, 'the scan found no torch.load at all (state.py has one)'
    assert all(safe for _, safe in calls), [where for where, safe in calls if not safe]
