"""Crash safety: the LegoDNN pipeline killed (SIGKILL) at random points of every stage and rerun with --resume ends
with the bank of an uninterrupted run (bit-exact: retraining resumes at the saved epoch, on the batches and random
state of an uninterrupted run), loses at most one retraining epoch, and never leaves a loadable half bank.

``MMLEGO_KILL_SEED`` picks other kill points (default 0)."""
import json
import os
import random
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from .conftest import CONFIGS, ROOT
from .test_pipeline import LEGO_CONFIGS, _train_in_process, assert_profiled_bank, teacher_checkpoint
from .test_pipeline import tiny_pipeline_options

# Runs tools/train.py with a SIGKILL planted at the k-th call of one function of a stage (argv: stage k args...).
KILLER = r'''
import os, runpy, signal, sys
stage, k = sys.argv[1], int(sys.argv[2])
sys.argv = [sys.argv[3]] + sys.argv[4:]
import mmlego.block_extraction.detection as detection
import mmlego.descendant_generation.generation as generation
import mmlego.block_retraining.retraining as retraining
import mmlego.block_retraining.state as state
import mmlego.engine.pipeline_loop as loop
import mmlego.profiling.latency as latency
import mmlego.utils.atomic_io as atomic_io
calls, epochs_saved = [0], [0]

def plant(module, name, counts=lambda *a, **kw: True):
    original = getattr(module, name)
    def wrapper(*args, **kwargs):
        if counts(*args, **kwargs):
            calls[0] += 1
            if calls[0] == k:
                os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)
    setattr(module, name, wrapper)

if stage == 'extraction':  # the block search, module by module
    plant(detection._Detector, 'visit')
elif stage == 'descendants':
    plant(generation, 'prune_block')
elif stage == 'retraining':  # inside the second epoch: the first one is saved
    save_epoch = state.RetrainingState.save_epoch
    def counting_save(self, epoch, *args, **kwargs):
        save_epoch(self, epoch, *args, **kwargs)
        epochs_saved[0] = epoch
    state.RetrainingState.save_epoch = counting_save
    plant(retraining, 'feature_loss', lambda *a, **kw: epochs_saved[0] >= 1)
elif stage == 'accuracy':
    plant(loop, 'evaluate_model')
elif stage == 'latency':
    plant(latency, 'synchronize')
elif stage == 'bank':  # the final bank: its tensors renamed into place, its manifest not yet
    plant(atomic_io, 'replace_durably', lambda src, dst: str(dst).endswith(os.path.join('work', 'bank', 'manifest.json')))
runpy.run_path(sys.argv[0], run_name='__main__')
'''


def run_killed(stage, k, args, workspace):
    env = dict(os.environ, PYTHONWARNINGS='ignore', CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, '-c', KILLER, stage, str(k), str(ROOT / 'tools' / 'train.py'), *args],
                          cwd=workspace, env=env, capture_output=True, text=True, timeout=900)
    return proc


def bank_contents(work_dir):
    manifest = json.loads((work_dir / 'bank' / 'manifest.json').read_text())
    tensors = load_file(str(work_dir / 'bank' / manifest['tensors']['file']))
    return manifest, tensors


@pytest.mark.slow
def test_killed_in_every_stage_and_resumed_equals_an_uninterrupted_run(workspace, tmp_path, monkeypatch):
    from mmlego.block_bank import BankError, BlockBank
    checkpoint = teacher_checkpoint('tsn', workspace, tmp_path)
    options = [*tiny_pipeline_options(checkpoint), 'train_cfg.retrain.epochs=2']
    config = str(CONFIGS / LEGO_CONFIGS['tsn'])
    reference = tmp_path / 'reference'
    args = [config, '--work-dir', str(reference), '--cfg-options', *options]
    env = dict(os.environ, PYTHONWARNINGS='ignore', CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='1')
    subprocess.run([sys.executable, str(ROOT / 'tools' / 'train.py'), *args], cwd=workspace, env=env, check=True,
                   capture_output=True, timeout=900)
    assert_profiled_bank(reference)
    # A rerun without --resume neither deletes the earlier run nor continues it; --resume with changed settings
    # refuses, naming them.
    with pytest.raises(RuntimeError, match='holds an earlier LegoDNN run'):
        _train_in_process(monkeypatch, workspace, *args)
    with pytest.raises(RuntimeError, match=r"settings changed \(max_ratio: 0.125 -> 0.25\)"):
        _train_in_process(monkeypatch, workspace, *args[:3], '--resume', *args[3:], 'train_cfg.max_ratio=0.25')

    rng = random.Random(int(os.environ.get('MMLEGO_KILL_SEED', '0')))
    work = tmp_path / 'work'
    killed = [config, '--work-dir', str(work), '--resume', '--cfg-options', *options]
    kills = [('extraction', rng.randint(1, 20)), ('descendants', rng.randint(1, 6)),
             ('retraining', rng.randint(1, 8)), ('accuracy', rng.randint(1, 3)), ('latency', rng.randint(1, 20)),
             ('bank', 1)]  # the final bank: killed between its tensors' rename and its manifest's
    for stage, k in kills:
        proc = run_killed(stage, k, killed, workspace)
        assert proc.returncode == -9, f'{stage}@{k} was not killed:\n{proc.stderr[-3000:]}'
        with pytest.raises(BankError):  # never a loadable half bank where the finished one goes
            BlockBank.load(work / 'bank', torch.nn.Conv2d(1, 1, 1))
        if stage == 'retraining':
            state = json.loads((work / 'legodnn' / 'retraining' / 'state.json').read_text())
            assert state['epoch'] == 1  # the kill lost only the epoch it was in
    print(f'\nkilled at {kills}')
    proc = subprocess.run([sys.executable, str(ROOT / 'tools' / 'train.py'), *killed], cwd=workspace, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_profiled_bank(work)
    (ref_manifest, ref_tensors), (manifest, tensors) = bank_contents(reference), bank_contents(work)
    for key in ('teacher_fingerprint', 'sparsities', 'extraction', 'plans'):
        assert manifest[key] == ref_manifest[key], key
    assert tensors.keys() == ref_tensors.keys()
    for key in tensors:  # deterministic on CPU with the config's seed: bit-exact, retraining included
        assert torch.equal(tensors[key], ref_tensors[key]), key
    for block, by_sparsity in ref_manifest['profiles']['descendants'].items():
        for sparsity, profile in by_sparsity.items():
            resumed = manifest['profiles']['descendants'][block][sparsity]
            assert resumed['accuracy_drop'] == profile['accuracy_drop'], (block, sparsity)
            assert resumed['memory_bytes'] == profile['memory_bytes'], (block, sparsity)


def test_atomic_writes_fsync_the_file_before_the_rename_and_its_directory_after(tmp_path, monkeypatch):
    from mmlego.utils import atomic_io
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic_io.os, 'fsync',
                        lambda fd: (events.append(('fsync', os.readlink(f'/proc/self/fd/{fd}'))), real_fsync(fd)))
    monkeypatch.setattr(atomic_io.os, 'replace', lambda a, b: (events.append(('replace', str(b))), real_replace(a, b)))
    target = tmp_path / 'out.json'
    atomic_io.atomic_write_json(target, {'a': 1})
    assert [kind for kind, _ in events] == ['fsync', 'replace', 'fsync']
    assert events[0][1].startswith(str(tmp_path / '.out.json.')) and events[1][1] == str(target)
    assert events[2][1] == str(tmp_path)  # the directory entry of the rename
    assert json.loads(target.read_text()) == {'a': 1}
