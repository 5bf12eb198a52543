"""The README's Python API example runs as written and scales the model under its budget."""
import os
import re
import subprocess
import sys

from .conftest import ROOT


def readme_example() -> str:
    text = (ROOT / 'README.md').read_text()
    section = text.split('## Python API', 1)[1]
    match = re.search(r'```python\n(.*?)```', section, re.S)
    assert match, 'README has no python block under "## Python API"'
    return match.group(1)


def test_readme_python_api_example_runs(tmp_path):
    script = tmp_path / 'example.py'
    script.write_text(readme_example())
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    status = next(line for line in lines if line.startswith(('optimal', 'infeasible')))
    assert status.startswith('optimal'), proc.stdout
    choice = eval(status.split(' ', 1)[1])  # the printed selection dict
    assert any(sparsity > 0 for sparsity in choice.values()), 'a 70% memory budget must prune some block'
    bank = tmp_path / 'work_dirs' / 'plain_cnn_bank'
    assert (bank / 'manifest.json').exists() and list(bank.glob('*.safetensors'))
    assert not list(bank.glob('*.pth')) and not list(bank.glob('*.pkl'))
