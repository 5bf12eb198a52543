"""The wheel ships configs, tools, demos and the model index under mmlego/.mim, as OpenMMLab packages do."""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT, fast_loader_options


def test_model_index_imports_a_metafile_per_legodnn_config():
    index = yaml.safe_load((ROOT / 'model-index.yml').read_text())
    configs = sorted(str(p.relative_to(ROOT)) for p in (ROOT / 'configs').glob('*/*/*_legodnn_*synth*.py'))
    named = []
    for path in index['Import']:
        meta = yaml.safe_load((ROOT / path).read_text())
        for model in meta['Models']:
            assert (ROOT / model['Config']).is_file() and (ROOT / model['Metadata']['Teacher config']).is_file()
            assert model['Metadata']['Budget sweep'] and model['Results'][0]['Metrics']
            named.append(model['Config'])
    assert sorted(named) == configs


@pytest.mark.slow
def test_the_wheel_carries_the_mim_files_and_mim_runs_a_legodnn_config(tmp_path, workspace):
    source = tmp_path / 'src'
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns('.venv', '.git', 'work_dirs', 'data', '__pycache__',
                                                                '*.egg-info', '.mim', 'build', 'dist'))
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation', '-w',
                    str(tmp_path / 'dist'), str(source)], check=True, capture_output=True, timeout=600)
    wheel = next((tmp_path / 'dist').glob('mmlego-*.whl'))
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in ('mmlego/.mim/model-index.yml', 'mmlego/.mim/tools/train.py', 'mmlego/.mim/tools/test.py',
                 'mmlego/.mim/configs/detection/yolov3/yolov3_r18_legodnn_synthdet.py',
                 'mmlego/.mim/configs/_base_/budgets/teacher_60pct_memory_80pct_latency.py',
                 'mmlego/.mim/configs/_base_/budgets/device_schedule.yaml',
                 'mmlego/.mim/configs/detection/yolov3/metafile.yml', 'mmlego/.mim/demo/lego_demo.py'):
        assert path in names, path

    # `mim train mmlego CONFIG` / `mim test ...` from the installed wheel (first on the path): mim finds the config
    # by name in mmlego/.mim/configs and runs mmlego/.mim/tools/{train,test}.py.
    site = tmp_path / 'site'
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--target', str(site), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    from .test_pipeline import teacher_checkpoint, tiny_pipeline_options
    teacher = teacher_checkpoint('tsn', workspace, tmp_path)
    env = dict(os.environ, PYTHONPATH=str(site), CUDA_VISIBLE_DEVICES='', PYTHONWARNINGS='ignore',
               OMP_NUM_THREADS='1')
    mim = str(Path(sys.executable).parent / 'mim')
    work_dir = tmp_path / 'work'
    for command in (['train', 'mmlego', 'tsn_r18_legodnn_synthaction.py', '--work-dir', str(work_dir),
                     '--cfg-options', *tiny_pipeline_options(teacher)],
                    ['test', 'mmlego', 'tsn_r18_legodnn_synthaction.py', '--checkpoint', str(teacher), '--work-dir',
                     str(work_dir), '--cfg-options', 'custom_hooks.0.latency_repeats=1', *fast_loader_options()]):
        proc = subprocess.run([mim, *command], cwd=workspace, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
        assert str(site / 'mmlego' / '.mim' / 'tools') in proc.stdout  # the wheel's tool ran
    assert (work_dir / 'bank' / 'manifest.json').is_file()
    log = sorted(work_dir.glob('2*/2*.log'))[-1].read_text()
    assert 'OnlineScalingHook [test epoch 0]: measured' in log
