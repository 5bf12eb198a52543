"""Argument errors of the tools are one clear message, before anything runs."""
import subprocess
import sys

import pytest
import torch

from .conftest import CONFIGS, ROOT, TEACHER_CONFIGS


@pytest.mark.skipif(torch.cuda.is_available(), reason='asserts the message given when no GPU is visible')
def test_device_cuda_without_gpu_is_a_clear_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'train.py'), str(CONFIGS / TEACHER_CONFIGS['tsn']), '--device', 'cuda',
         '--work-dir', str(tmp_path / 'work')], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert '--device cuda was given but no CUDA device is visible' in proc.stderr
    assert not (tmp_path / 'work').exists()
