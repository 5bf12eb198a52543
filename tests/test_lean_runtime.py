"""The lean runtime: loading a bank or an exported configuration, solving, switching and profiling latency import
no retraining, no accuracy profiling, no pulp and no torch-pruning (checked in a fresh interpreter)."""
import json
import os
import subprocess
import sys

#: What serving must not import (the offline stack).
OFFLINE_MODULES = ['pulp', 'torch_pruning', 'mmlego.block_retraining', 'mmlego.profiling.accuracy', 'mmlego.engine',
                   'mmlego.descendant_generation.pruning', 'mmlego.descendant_generation.generation',
                   'mmlego.scaling_optimizer.pulp_solver']

_SERVE = '''
import json, sys
import torch
torch.set_num_threads(1)
import mmlego.runtime as rt
from mmlego.models import TENSOR_PATHS, example_batch
config, bank, teacher, out = sys.argv[1:5]
model = rt.init_lego_model(config, bank, checkpoint=teacher)
result = rt.scale_model(model, memory_mb='50%')
inputs = example_batch(model.cfg, model.architecture, split='test')
forward = TENSOR_PATHS[model.tensor_path]
with torch.no_grad():
    scaled = forward(model.architecture, inputs)
# Latency profiling on the serving device (as tools/profile_latency.py does): the bank's descendants timed in a
# bare teacher architecture.
from mmengine.config import Config
from mmlego.models import build_model
arch = build_model(Config.fromfile(config), teacher)
profiled = rt.BlockBank.load(bank, arch)
check = rt.profile_latency(profiled, arch, [inputs], forward, warmup=1, repeats=2, rounds=1, settle_s=0.0,
                           show_progress=False, min_seconds=0)
table = rt.LatencyTable.from_bank(profiled)
# An exported configuration, loaded without bank or teacher, runs the same outputs.
from mmlego.export import export_configuration
export_configuration(model, out, inputs, onnx=False)
loaded, meta = rt.load_configuration(out)
with torch.no_grad():
    again = forward(loaded, inputs)
same = meta['selection'] == result['selection'] and all(torch.equal(a, b) for a, b in zip(torch.utils._pytree.tree_leaves(scaled),
                                              torch.utils._pytree.tree_leaves(again)))
print(json.dumps(dict(modules=sorted(sys.modules), selection=result['selection'], same=same,
                      checked=sorted(check), table_blocks=len(table.blocks))))
'''


def test_serving_imports_no_offline_stack(lego, workspace, tmp_path):
    proc = subprocess.run([sys.executable, '-c', _SERVE, str(lego.config), str(lego.bank), str(lego.teacher),
                           str(tmp_path / 'artifact')], cwd=workspace, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONWARNINGS='ignore', CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report['same'], 'the exported configuration does not reproduce the scaled model'
    assert 0.8 in report['selection'].values(), 'a 50% memory budget must prune something'
    assert report['checked'] == ['0', '0.8'] and report['table_blocks'] == len(report['selection'])
    loaded = set(report['modules'])
    assert [m for m in OFFLINE_MODULES if m in loaded] == []
    assert not any(m.startswith(('mmlego.engine', 'mmlego.block_retraining')) for m in loaded)
