"""mmengine checkpoints load with weights_only=True: load_from, --resume and tools/test.py, and nothing else."""
import os
import pickle

import pytest
import torch

from mmlego.utils.checkpoint import allow_mmengine_checkpoints

from .conftest import CONFIGS, TEACHER_CONFIGS, fast_loader_options, run_tool

CONFIG = str(CONFIGS / TEACHER_CONFIGS['tsn'])
ONE_EPOCH = ['train_cfg.val_interval=1', 'default_hooks.checkpoint.interval=1', 'train_dataloader.batch_size=4']


@pytest.fixture(scope='module')
def trained(workspace, tmp_path_factory):
    """A teacher trained here for one epoch with tools/train.py (a real mmengine checkpoint)."""
    work_dir = tmp_path_factory.mktemp('ckpt') / 'work'
    run_tool('train.py', CONFIG, '--work-dir', str(work_dir), '--device', 'cpu', '--cfg-options',
             'train_cfg.max_epochs=1', *ONE_EPOCH, *fast_loader_options(), cwd=workspace)
    return work_dir


def test_plain_weights_only_load_refuses_an_mmengine_checkpoint(trained):
    # Documents why the allowlist exists: torch's default refuses what mmengine saves.
    with pytest.raises(pickle.UnpicklingError):
        torch.load(trained / 'epoch_1.pth', weights_only=True)


def test_allowlist_loads_the_whole_checkpoint(trained):
    with allow_mmengine_checkpoints():
        ckpt = torch.load(trained / 'epoch_1.pth', weights_only=True)
    assert {'state_dict', 'meta', 'message_hub', 'optimizer'} <= set(ckpt)
    assert ckpt['meta']['epoch'] == 1
    hub = ckpt['message_hub']['log_scalars']
    assert any(name.startswith('train/loss') for name in hub)


class _Exploit:
    def __reduce__(self):
        return (os.system, ('echo pwned',))


class _AttrExploit:
    # getattr is allowed for HistoryBuffer methods only; a dunder walk towards __globals__ must fail.
    def __reduce__(self):
        from mmengine.logging import HistoryBuffer
        return (getattr, (HistoryBuffer(), '__init__'))


@pytest.mark.parametrize('payload', [_Exploit(), _AttrExploit()])
def test_allowlist_still_refuses_code_execution(payload, tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'x': payload}, path)
    with allow_mmengine_checkpoints(), pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def test_load_from_and_resume_through_tools(trained, workspace):
    # load_from: evaluate the trained teacher with tools/test.py.
    proc = run_tool('test.py', CONFIG, str(trained / 'epoch_1.pth'), '--work-dir', str(trained / 'test'),
                    '--device', 'cpu', '--cfg-options', *fast_loader_options(), cwd=workspace)
    assert 'acc/top1' in proc.stdout + proc.stderr
    # --resume: continue the same run for a second epoch.
    proc = run_tool('train.py', CONFIG, '--work-dir', str(trained), '--resume', '--device', 'cpu',
                    '--cfg-options', 'train_cfg.max_epochs=2', *ONE_EPOCH, *fast_loader_options(), cwd=workspace)
    log = proc.stdout + proc.stderr
    assert 'resumed epoch: 1' in log
    assert (trained / 'epoch_2.pth').exists()
