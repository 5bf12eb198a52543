"""The wheel ships configs, tools, demos and the model index under mmlego/.mim, as OpenMMLab packages do."""
import shutil
import subprocess
import sys
import zipfile

import pytest
import yaml

from .conftest import ROOT


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
def test_the_wheel_carries_the_mim_files(tmp_path):
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
