"""A legodnn config through the task package's own installed tools (mmdet's and mmseg's tools/train.py, test.py).

The route an OpenMMLab user takes: no mmlego tool at all. ``runner_type='mmlego.LegoRunner'`` makes their
``RUNNERS.build(cfg)`` load an mmengine checkpoint under ``weights_only=True`` and fill in ``model.bank``; the config's
``OnlineScalingHook`` scales the model at test time; its numbers reach the run's log and its JSON scalars.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .conftest import CONFIGS, fast_loader_options
from .test_pipeline import LEGO_CONFIGS, assert_profiled_bank, teacher_checkpoint, tiny_pipeline_options


def package_tool(package: str, tool: str) -> Path:
    """``<package>/.mim/tools/<tool>.py`` as pip installed it."""
    path = Path(importlib.util.find_spec(package).origin).parent / '.mim' / 'tools' / f'{tool}.py'
    assert path.is_file(), f'{package} ships no {path}'
    return path


def run_package_tool(package, tool, *args, cwd):
    env = dict(os.environ, PYTHONWARNINGS='ignore', CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, str(package_tool(package, tool)), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise AssertionError(f'{package} {tool}.py {" ".join(args)} failed:\n{proc.stdout[-3000:]}\n'
                             f'{proc.stderr[-6000:]}')
    return proc


def mmengine_style_checkpoint(path: Path) -> Path:
    """The teacher weights plus a message hub (HistoryBuffer, numpy), as mmengine saves them: torch's default
    ``weights_only=True`` refuses such a file."""
    from mmengine.logging import MessageHub
    hub = MessageHub.get_instance('mmlego_test_checkpoint')
    hub.update_scalar('train/loss', 1.5)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint['message_hub'] = hub.state_dict()
    torch.save(checkpoint, path)
    with pytest.raises(Exception, match='Weights only load failed'):
        torch.load(path, weights_only=True)
    return path


@pytest.mark.slow
@pytest.mark.parametrize('package, model_name', [('mmdet', 'yolov3'), ('mmseg', 'fcn')])
def test_package_tools_run_a_legodnn_config_end_to_end(package, model_name, workspace, tmp_path):
    teacher = mmengine_style_checkpoint(teacher_checkpoint(model_name, workspace, tmp_path))
    config = str(CONFIGS / LEGO_CONFIGS[model_name])
    work_dir = tmp_path / 'work'
    run_package_tool(package, 'train', config, '--work-dir', str(work_dir), '--cfg-options',
                     *tiny_pipeline_options(teacher), cwd=workspace)
    assert_profiled_bank(work_dir)

    # The config-only route: CONFIG TEACHER_CKPT, the bank from model.bank='{work_dir}/bank', the budget from
    # the config's hook (shares of the full model).
    proc = run_package_tool(package, 'test', config, str(teacher), '--work-dir', str(work_dir), '--cfg-options',
                            'custom_hooks.0.latency_repeats=2', *fast_loader_options(), cwd=workspace)
    logs = sorted(work_dir.glob('*/*.log'))
    log = logs[-1].read_text()
    assert 'OnlineScalingHook [test epoch 0]: budget latency<=' in log and 'memory<=' in log
    assert 'OnlineScalingHook [test epoch 0]: measured' in log
    manifest = json.loads((work_dir / 'bank' / 'manifest.json').read_text())
    full_mb = manifest['profiles']['model_memory_bytes'] / 2 ** 20
    scalars = json.loads(logs[-1].with_suffix('.json').read_text())  # LoggerHook's test scalars, by name
    assert scalars['legodnn_estimated_memory_mb'] <= 0.6 * full_mb * (1 + 1e-6)  # the config's 60% budget
    assert scalars['legodnn_measured_latency_ms'] > 0 and 'legodnn_resident_memory_mb' in scalars
    assert proc.returncode == 0
