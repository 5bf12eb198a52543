"""Block bank: exact save/load round trip, no pickle, clear errors for foreign or damaged banks, atomic writes.

Also home of the tiny teacher shared by the switcher, retraining and profiling tests (two blocks and a frame).
"""
import copy
import hashlib
import json
import os
import pickle
import struct
import time

import pytest
import torch
from torch import nn

from mmlego.block_bank import FORMAT_VERSION, BankError, BankProfiles, BlockBank, teacher_fingerprint
from mmlego.block_bank import bank as bank_module
from mmlego.utils import atomic_io

from .test_block_extraction import BasicRes, cbr, randomize_bn

SPARSITIES = [0.0, 0.4, 0.8]
INPUT_SHAPE = (2, 3, 16, 16)


pytestmark = pytest.mark.usefixtures('one_torch_thread')


# -- the tiny teacher shared by the bank, switcher, retraining and profiling tests --------------------------------
class TinyNet(nn.Module):
    """``stem+b1`` (conv + identity residual) and ``b2`` (residual with downsample) are its blocks; ``head`` is frame.

    Args:
        width: Channels of the first stage (the second has twice as many).
        pause: Seconds slept between the two blocks in ``forward`` (lets a concurrent switch land mid-forward).
    """

    def __init__(self, width: int = 16, pause: float = 0.0) -> None:
        super().__init__()
        self.stem = cbr(3, width)
        self.b1 = BasicRes(width, width)
        self.b2 = BasicRes(width, 2 * width, stride=2)
        self.head = nn.Conv2d(2 * width, 4, 1)
        self.pause = pause

    def forward(self, x):
        x = self.b1(self.stem(x))
        if self.pause:
            time.sleep(self.pause)
        return self.head(self.b2(x))


def make_tiny(seed: int = 0, width: int = 16) -> TinyNet:
    """A seeded TinyNet with non-trivial batch norms, in eval mode."""
    torch.manual_seed(seed)
    return randomize_bn(TinyNet(width)).eval()


def example_input(seed: int = 1, shape=INPUT_SHAPE) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def build_bank(model: nn.Module, sparsities=SPARSITIES) -> BlockBank:
    bank = BlockBank.build(model, (example_input(),), sparsities=sparsities, max_ratio=0.5, show_progress=False)
    assert [spec.name for spec in bank.blocks] == ['stem+b1', 'b2']
    return bank


def perturb(bank: BlockBank, seed: int = 0) -> BlockBank:
    """Noise on every pruned descendant's parameters (as retraining would), so they differ from the teacher's."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for by_sparsity in bank.descendants.values():
            for sparsity, descendant in by_sparsity.items():
                if sparsity > 0:
                    for param in descendant.module.parameters():
                        param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return bank


def state_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].dtype == sb[k].dtype and sa[k].shape == sb[k].shape
                                          and torch.equal(sa[k], sb[k]) for k in sa)


def assert_same_bank(loaded: BlockBank, original: BlockBank) -> None:
    assert loaded.fingerprint == original.fingerprint and loaded.sparsities == original.sparsities
    assert loaded.extraction.to_dict() == original.extraction.to_dict()
    assert set(loaded.descendants) == set(original.descendants)
    for name, by_sparsity in original.descendants.items():
        assert set(loaded.descendants[name]) == set(by_sparsity)
        for sparsity, descendant in by_sparsity.items():
            twin = loaded.descendants[name][sparsity]
            assert twin.plan.to_dict() == descendant.plan.to_dict()
            assert state_equal(twin.module, descendant.module), (name, sparsity)
            assert not twin.module.training
            x = example_input(seed=7, shape=descendant.spec.input_shape)
            with torch.no_grad():
                assert torch.equal(twin.module(x), descendant.module.eval()(x)), (name, sparsity)


@pytest.fixture(scope='module')
def teacher():
    return make_tiny()


@pytest.fixture(scope='module')
def bank(teacher):
    return build_bank(teacher)


@pytest.fixture
def saved(tmp_path, bank):
    """A retrained-looking copy of the bank, saved to ``tmp_path / 'bank'``."""
    trained = perturb(copy.deepcopy(bank))
    trained.profiles.get('b2', 0.4).accuracy_drop = 0.125
    trained.profiles.teacher_metric = 0.5
    trained.meta = {'config': 'tiny.py'}
    return trained, trained.save(tmp_path / 'bank')


def tensor_file(directory) -> str:
    return os.path.join(directory, json.loads((directory / 'manifest.json').read_text())['tensors']['file'])


# -- round trip ---------------------------------------------------------------------------------------------------
def test_build_save_load_round_trip(saved, teacher):
    trained, directory = saved
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    loaded = BlockBank.load(directory, teacher)
    assert_same_bank(loaded, trained)
    assert loaded.profiles.to_dict() == trained.profiles.to_dict() and loaded.meta == trained.meta
    assert loaded.profiles.get('b2', 0.4).accuracy_drop == 0.125
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items()), 'load modified the teacher'
    # The pruned descendants hold the saved (retrained) tensors, not the teacher's kept channels.
    fresh = build_bank(teacher)
    assert not state_equal(loaded.descendant('b2', 0.8).module, fresh.descendant('b2', 0.8).module)
    assert state_equal(loaded.descendant('b2', 0.0).module, fresh.descendant('b2', 0.0).module)


def test_manifest_and_no_pickle(saved, teacher, monkeypatch):
    trained, directory = saved
    manifest = json.loads((directory / 'manifest.json').read_text())
    assert manifest['format_version'] == FORMAT_VERSION
    assert manifest['teacher_fingerprint'] == teacher_fingerprint(teacher) == trained.fingerprint
    files = sorted(os.listdir(directory))
    assert files == sorted(['manifest.json', manifest['tensors']['file']]), files
    assert manifest['tensors']['file'].endswith('.safetensors')
    open(directory / 'plain', 'w').close()  # written files get the usual permissions, not mkstemp's 0o600
    assert {os.stat(directory / f).st_mode & 0o777 for f in files} == {os.stat(directory / 'plain').st_mode & 0o777}
    os.unlink(directory / 'plain')
    # safetensors layout: 8-byte little-endian header size, a JSON header, raw tensor bytes (no pickle, no zip).
    raw = open(tensor_file(directory), 'rb').read()
    (size,) = struct.unpack('<Q', raw[:8])
    header = json.loads(raw[8:8 + size])
    assert header['__metadata__']['format_version'] == str(FORMAT_VERSION)
    assert all(set(entry) == {'dtype', 'shape', 'data_offsets'} for key, entry in header.items()
               if key != '__metadata__')
    # Sparsity 0.0 is the teacher's own block: not stored. Every pruned descendant is, with its structure.
    assert len(header) - 1 == sum(len(d.module.state_dict()) for by_s in trained.descendants.values()
                                  for s, d in by_s.items() if s > 0)
    assert not [key for key in header if '|0|' in key]
    assert manifest['plans']['b2']['0.4']['structure']['b2.conv1']['out_channels'] < 32

    def refuse(*args, **kwargs):
        raise AssertionError('the bank must not unpickle anything')

    for target, name in [(pickle, 'load'), (pickle, 'loads'), (pickle, 'Unpickler'), (torch, 'load')]:
        monkeypatch.setattr(target, name, refuse)
    assert_same_bank(BlockBank.load(directory, teacher), trained)


def test_non_decimal_sparsities_survive_round_trip(bank, teacher, tmp_path):
    """Sparsity keys on disk must parse back to the very same floats (``f'{2/3:g}'`` would give 0.666667)."""
    odd = copy.deepcopy(bank)
    odd.sparsities = [0.0, 0.4, 2 / 3]
    for name, by_sparsity in odd.descendants.items():
        descendant = by_sparsity.pop(0.8)
        descendant.plan.sparsity = 2 / 3
        by_sparsity[2 / 3] = descendant
        odd.profiles.get(name, 2 / 3).memory_bytes = 123
    loaded = BlockBank.load(odd.save(tmp_path / 'odd'), teacher)
    assert loaded.sparsities == [0.0, 0.4, 2 / 3]
    assert all(sorted(by_s) == [0.0, 0.4, 2 / 3] for by_s in loaded.descendants.values())
    assert loaded.profiles.get('b2', 2 / 3).memory_bytes == 123
    assert BankProfiles.from_dict(json.loads(json.dumps(odd.profiles.to_dict()))).to_dict() == \
        odd.profiles.to_dict()


# -- foreign and damaged banks ------------------------------------------------------------------------------------
def test_other_teacher_is_refused(saved):
    _, directory = saved
    with pytest.raises(BankError, match='another teacher'):
        BlockBank.load(directory, make_tiny(seed=1))  # same architecture, other weights
    with pytest.raises(BankError, match='another teacher'):
        BlockBank.load(directory, make_tiny(width=24))


def test_missing_or_corrupted_tensors(saved, teacher):
    _, directory = saved
    path = tensor_file(directory)
    raw = bytearray(open(path, 'rb').read())
    flipped = bytearray(raw)
    for i in range(len(raw) // 2, len(raw) // 2 + 8):
        flipped[i] ^= 0xFF
    open(path, 'wb').write(flipped)
    with pytest.raises(BankError, match='corrupted'):
        BlockBank.load(directory, teacher)
    # A damaged file whose checksum was updated too still fails clearly when parsed.
    open(path, 'wb').write(raw[:len(raw) // 3])
    manifest = json.loads((directory / 'manifest.json').read_text())
    manifest['tensors']['sha256'] = hashlib.sha256(raw[:len(raw) // 3]).hexdigest()
    (directory / 'manifest.json').write_text(json.dumps(manifest))
    with pytest.raises(BankError, match='safetensors'):
        BlockBank.load(directory, teacher)
    os.unlink(path)
    with pytest.raises(BankError, match='missing'):
        BlockBank.load(directory, teacher)


def _edit_manifest(directory, edit):
    path = directory / 'manifest.json'
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize('damage, message', [
    (lambda d: (d / 'manifest.json').write_text((d / 'manifest.json').read_text()[:200]), 'not valid JSON'),
    (lambda d: (d / 'manifest.json').write_bytes(b'\xff\xfe{'), 'not valid JSON'),
    (lambda d: (d / 'manifest.json').write_text('[1, 2]'), 'not a block bank'),
    (lambda d: (d / 'manifest.json').write_text('42'), 'not a block bank'),
    (lambda d: _edit_manifest(d, lambda m: m.pop('plans')), 'lacks "plans"'),
    (lambda d: _edit_manifest(d, lambda m: m.update(format_version=99)), 'format 99'),
    (lambda d: _edit_manifest(d, lambda m: m['plans'].pop('b2')), 'malformed'),
    (lambda d: _edit_manifest(d, lambda m: m['plans']['b2'].pop('0.4')), 'malformed'),
    (lambda d: _edit_manifest(d, lambda m: m.update(tensors='descendants.safetensors')), 'malformed'),
    (lambda d: _edit_manifest(d, lambda m: m['extraction']['blocks'][0].pop('members')), 'malformed'),
    (lambda d: os.unlink(d / 'manifest.json'), 'not a block bank'),
], ids=['truncated', 'not-utf8', 'json-list', 'json-number', 'no-plans', 'format-version', 'block-without-plans',
        'sparsity-without-plan', 'tensors-not-a-dict', 'block-without-members', 'missing'])
def test_damaged_manifest(saved, teacher, damage, message):
    _, directory = saved
    damage(directory)
    with pytest.raises(BankError, match=message):
        BlockBank.load(directory, teacher)


# -- atomic writes ------------------------------------------------------------------------------------------------
def _partial_write_then_fail(tensors, filename, metadata=None):
    with open(filename, 'wb') as file:
        file.write(b'partial')
    raise OSError('disk full')


def test_failed_tensor_write_keeps_previous_bank(saved, teacher, monkeypatch):
    trained, directory = saved
    before = sorted(os.listdir(directory))
    newer = perturb(copy.deepcopy(trained), seed=1)
    import safetensors.torch
    monkeypatch.setattr(safetensors.torch, 'save_file', _partial_write_then_fail)
    with pytest.raises(OSError, match='disk full'):
        newer.save(directory)
    monkeypatch.undo()
    assert sorted(os.listdir(directory)) == before, 'temporary files left behind'
    assert_same_bank(BlockBank.load(directory, teacher), trained)


def test_failed_manifest_write_keeps_previous_bank(saved, teacher, monkeypatch):
    """The tensors of the new bank are on disk, its manifest is not: the old manifest and its tensors still load."""
    trained, directory = saved
    newer = perturb(copy.deepcopy(trained), seed=1)

    def fail(*args, **kwargs):
        raise OSError('disk full')

    monkeypatch.setattr(bank_module, 'atomic_write_json', fail)
    with pytest.raises(OSError, match='disk full'):
        newer.save(directory)
    monkeypatch.undo()
    assert_same_bank(BlockBank.load(directory, teacher), trained)
    newer.save(directory)  # a later successful save replaces it and leaves no stale tensor file behind
    assert_same_bank(BlockBank.load(directory, teacher), newer)
    assert len([f for f in os.listdir(directory) if f.endswith('.safetensors')]) == 1


def test_atomic_files_get_normal_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        atomic_io.atomic_write_text(tmp_path / 'a.txt', 'x')
        open(tmp_path / 'b.txt', 'w').close()
    finally:
        os.umask(umask)
    assert os.stat(tmp_path / 'a.txt').st_mode & 0o777 == os.stat(tmp_path / 'b.txt').st_mode & 0o777 == 0o644


def test_save_profiles_keeps_tensors(saved, teacher, bank, tmp_path):
    trained, directory = saved
    path = tensor_file(directory)
    raw, mtime = open(path, 'rb').read(), os.stat(path).st_mtime_ns
    trained.profiles.get('stem+b1', 0.8).latency_ms = 1.5
    trained.profiles.model_memory_bytes = 4096
    trained.meta['profiled'] = True
    trained.save_profiles(directory)
    assert open(path, 'rb').read() == raw and os.stat(path).st_mtime_ns == mtime
    loaded = BlockBank.load(directory, teacher)
    assert loaded.profiles.get('stem+b1', 0.8).latency_ms == 1.5 and loaded.profiles.model_memory_bytes == 4096
    assert loaded.meta == {'config': 'tiny.py', 'profiled': True}
    assert_same_bank(loaded, trained)
    # Profiles of one teacher's bank must not land in another teacher's bank directory.
    other = build_bank(make_tiny(seed=1)).save(tmp_path / 'other')
    with pytest.raises(BankError, match='another teacher'):
        trained.save_profiles(other)
    with pytest.raises(BankError, match='not a block bank'):
        trained.save_profiles(tmp_path / 'nowhere')


def test_descendant_lookup_errors(bank):
    assert bank.descendant('b2', 0.4) is bank.descendants['b2'][0.4]
    with pytest.raises(KeyError, match='sparsities'):
        bank.descendant('b2', 0.5)
    with pytest.raises(KeyError, match='blocks are'):
        bank.descendant('nope', 0.4)
    assert sum(len(by_s) for by_s in bank.descendants.values()) == 6
