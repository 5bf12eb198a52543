"""Each teacher config trains a few iterations with tools/train.py, validates, and saves a checkpoint."""
import json

import pytest

from .conftest import CONFIGS, TEACHER_CONFIGS, fast_loader_options, run_tool

# Two iterations of training then one validation pass, whatever the loop type.
SHORT_SCHEDULE = {
    'EpochBasedTrainLoop': ['train_cfg.max_epochs=1', 'train_cfg.val_interval=1', 'train_cfg.val_begin=1',
                            'default_hooks.checkpoint.interval=1', 'train_dataloader.batch_size=4'],
    'IterBasedTrainLoop': ['train_cfg.max_iters=2', 'train_cfg.val_interval=2',
                           'default_hooks.checkpoint.interval=2', 'train_dataloader.batch_size=4'],
}


def short_schedule(rel_path: str) -> list:
    from mmengine.config import Config
    loop = Config.fromfile(CONFIGS / rel_path).train_cfg.get('type', 'EpochBasedTrainLoop')
    return SHORT_SCHEDULE[loop]


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(TEACHER_CONFIGS))
def test_teacher_trains_and_validates(name, workspace, tmp_path):
    rel_path = TEACHER_CONFIGS[name]
    work_dir = tmp_path / 'work'
    run_tool('train.py', str(CONFIGS / rel_path), '--work-dir', str(work_dir), '--device', 'cpu',
             '--cfg-options', *short_schedule(rel_path), *fast_loader_options(), cwd=workspace)
    assert (work_dir / 'last_checkpoint').exists()
    checkpoint = (work_dir / 'last_checkpoint').read_text().strip()
    assert checkpoint.endswith('.pth')
    # The validation pass logged the task metric.
    scalars = list(work_dir.glob('*/vis_data/scalars.json'))
    assert scalars, 'no scalars.json written'
    logged = [json.loads(line) for line in scalars[0].read_text().splitlines() if line.strip()]
    metric_keys = {k for entry in logged for k in entry} - {'lr', 'loss', 'time', 'data_time', 'iter', 'epoch',
                                                            'step', 'memory', 'base_lr', 'grad_norm'}
    assert any(not k.startswith('loss') for k in metric_keys), f'no validation metric logged: {metric_keys}'


@pytest.mark.slow
def test_distributed_training_on_cpu_with_gloo(workspace, tmp_path):
    """tools/dist_train.sh with 2 CPU processes (torchrun + gloo) trains and saves one checkpoint."""
    import os
    import subprocess
    import sys

    from .conftest import ROOT
    rel_path = TEACHER_CONFIGS['tsn']
    work_dir = tmp_path / 'work'
    env = dict(os.environ, PYTHON=sys.executable, CUDA_VISIBLE_DEVICES='', PORT='29611', OMP_NUM_THREADS='1')
    proc = subprocess.run(
        ['bash', str(ROOT / 'tools' / 'dist_train.sh'), str(CONFIGS / rel_path), '2', '--work-dir', str(work_dir),
         '--device', 'cpu', '--cfg-options', *short_schedule(rel_path), *fast_loader_options()],
        cwd=workspace, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    log = proc.stdout + proc.stderr
    assert "'backend': 'gloo'" in log or 'backend: gloo' in log or 'Distributed launcher: pytorch' in log
    assert 'Distributed training: True' in log
    assert (work_dir / 'epoch_1.pth').exists()
