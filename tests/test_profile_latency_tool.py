"""tools/profile_latency.py: a latency table measured for a bank, copied, and applied to the bank's manifest."""
import json
import shutil

import numpy as np
import pytest
import torch

from .conftest import CONFIGS, TEACHER_CONFIGS, run_tool_in_process as run_tool


def _bank_for_config(config, bank_dir, seed, max_ratio=0.125):
    from mmengine.config import Config

    from mmlego.block_bank import BlockBank
    from mmlego.models import TENSOR_PATHS, build_model, example_batch, trace_tensor_path
    torch.manual_seed(seed)
    cfg = Config.fromfile(config)
    model = build_model(cfg)
    inputs = example_batch(cfg, model, batch_size=1)
    path, _ = trace_tensor_path(model, inputs)
    bank = BlockBank.build(model, (inputs,), sparsities=[0.0, 0.8], max_ratio=max_ratio,
                           forward_fn=TENSOR_PATHS[path], show_progress=False)
    bank.meta['tensor_path'] = path
    checkpoint = bank_dir.parent / f'{bank_dir.name}.pth'
    torch.save({'state_dict': model.state_dict()}, checkpoint)
    bank.save(bank_dir)
    return checkpoint


def test_measure_copy_apply(workspace, tmp_path, monkeypatch):
    monkeypatch.chdir(workspace)  # the config's data paths are relative
    config = str(CONFIGS / TEACHER_CONFIGS['tsn'])
    bank_dir = tmp_path / 'bank'
    checkpoint = _bank_for_config(config, bank_dir, seed=0)
    table = tmp_path / 'device_table.json'
    run_tool('profile_latency.py', config, str(bank_dir), '--checkpoint', str(checkpoint), '--out', str(table),
             '--repeats', '2', '--warmup', '1', '--threads', '1', '--min-seconds', '0', cwd=workspace)
    measured = json.loads(table.read_text())
    assert measured['model_latency_ms'] > 0
    assert measured['num_threads'] == 1  # measured with the thread count asked for, recorded for serving
    # the legodnn config of the same teacher names the same model (its architecture): same fingerprint, no error
    lego_table = tmp_path / 'lego_table.json'
    run_tool('profile_latency.py', str(CONFIGS / 'action/tsn/tsn_r18_legodnn_synthaction.py'), str(bank_dir),
             '--checkpoint', str(checkpoint), '--out', str(lego_table), '--repeats', '2', '--warmup', '1',
             '--min-seconds', '0.5', cwd=workspace)
    assert json.loads(lego_table.read_text())['teacher_fingerprint'] == measured['teacher_fingerprint']
    assert all(v > 0 for block in measured['blocks'].values() for v in block.values())

    copied = tmp_path / 'elsewhere'
    shutil.copytree(bank_dir, copied)
    run_tool('profile_latency.py', '--apply', str(table), str(copied), cwd=workspace)
    profiles = json.loads((copied / 'manifest.json').read_text())['profiles']
    assert profiles['model_latency_ms'] == measured['model_latency_ms']
    for name, by_sparsity in measured['blocks'].items():
        for key, latency in by_sparsity.items():
            assert profiles['descendants'][name][key]['latency_ms'] == latency
        assert profiles['descendants'][name]['0']['latency_drop'] == 0.0
    assert profiles['num_threads'] == 1

    other = tmp_path / 'other_bank'
    _bank_for_config(config, other, seed=1)
    try:
        run_tool('profile_latency.py', '--apply', str(table), str(other), cwd=workspace)
    except AssertionError as error:
        assert 'another teacher' in str(error)
    else:
        raise AssertionError('applying a table of another teacher must fail')



def test_onnx_latency_on_a_device_with_only_onnxruntime(workspace, tmp_path, monkeypatch):
    """Export the suite here, time it where torch cannot be imported, build the table here; a mixed configuration
    timed whole in onnxruntime matches the table's estimate (loosely: the machine is shared)."""
    import subprocess
    import sys

    from mmengine.config import Config

    from mmlego.block_bank import BlockBank
    from mmlego.block_switcher import BlockSwitcher
    from mmlego.export import TensorPathModule, export_onnx
    from mmlego.models import TENSOR_PATHS, build_model, example_batch
    from mmlego.profiling import LatencyTable
    from mmlego.profiling.onnx_timing import time_suite
    from .conftest import ROOT, load_tool
    monkeypatch.chdir(workspace)
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    config = str(CONFIGS / TEACHER_CONFIGS['simplebaseline'])
    bank_dir = tmp_path / 'bank'
    checkpoint = _bank_for_config(config, bank_dir, seed=0, max_ratio=0.5)  # few, large blocks: few exports
    suite, table_path = tmp_path / 'suite', tmp_path / 'table.json'
    tool = load_tool('profile_latency')
    common = [config, str(bank_dir), '--checkpoint', str(checkpoint), '--onnx-suite', str(suite)]
    (tmp_path / 'keep').mkdir()
    (tmp_path / 'keep' / 'notes.txt').write_text('mine')
    with pytest.raises(SystemExit, match='exists and is not a latency suite'):  # never deletes a user's directory
        tool.main([config, str(bank_dir), '--checkpoint', str(checkpoint), '--onnx-suite', str(tmp_path / 'keep'),
                   '--onnx', '--export-only'])
    assert (tmp_path / 'keep' / 'notes.txt').read_text() == 'mine'
    tool.main(common + ['--onnx', '--export-only'])
    assert not (suite / 'timings.json').exists()
    code = ('import runpy, sys\n'
            "sys.modules['torch'] = None\nsys.modules['mmlego'] = None  # importing either now fails\n"
            f"sys.argv = ['onnx_timing.py', {str(suite)!r}, '--threads', '1', '--repeats', '12']\n"
            f"runpy.run_path({str(ROOT / 'mmlego' / 'profiling' / 'onnx_timing.py')!r}, run_name='__main__')\n")
    subprocess.run([sys.executable, '-c', code], check=True, capture_output=True, text=True)
    tool.main(common + ['--onnx-timings', str(suite / 'timings.json'), '--out', str(table_path)])
    table = LatencyTable.load(table_path)
    timings = json.loads((suite / 'timings.json').read_text())['ms']
    assert table.device.startswith('cpu (onnxruntime') and table.model_latency_ms == timings['composite@0']
    assert set(table.composites) == {'0', '0.8'} and all(len(v) == 2 for v in table.blocks.values())

    # Timings that miss a model of the suite, a suite of another teacher: one error each, the table untouched.
    from mmlego.profiling.onnx_latency import apply_onnx_timings
    partial = dict(json.loads((suite / 'timings.json').read_text()))
    partial['ms'] = {key: value for key, value in partial['ms'].items() if key != 'block0@0.8'}
    with pytest.raises(SystemExit, match=r'the timings lack block0@0.8; time the whole suite'):
        (suite / 'partial.json').write_text(json.dumps(partial))
        tool.main(common + ['--onnx-timings', str(suite / 'partial.json'), '--out', str(table_path)])
    assert LatencyTable.load(table_path).blocks == table.blocks
    foreign = json.loads((suite / 'suite.json').read_text())
    foreign['teacher_fingerprint'] = 'another'
    (suite / 'suite.json').write_text(json.dumps(foreign))
    cfg = Config.fromfile(config)
    model = build_model(cfg, str(checkpoint))
    bank = BlockBank.load(bank_dir, model)
    with pytest.raises(ValueError, match='exported from another teacher than this bank'):
        apply_onnx_timings(bank, suite)

    # A configuration the suite never timed: half the blocks pruned, exported and timed whole.
    inputs = example_batch(cfg, model, batch_size=1)
    names = [spec.name for spec in bank.blocks]
    mixed = {name: (0.8 if i % 2 else 0.0) for i, name in enumerate(names)}
    switcher = BlockSwitcher(model, bank, guard_forward=False)
    switcher.switch(mixed)
    probe = tmp_path / 'probe'
    probe.mkdir()
    export_onnx(TensorPathModule(model, TENSOR_PATHS[bank.meta['tensor_path']]), inputs, probe / 'mixed.onnx')
    np.save(probe / 'inputs.npy', inputs.numpy(), allow_pickle=False)
    (probe / 'suite.json').write_text(json.dumps(dict(format=1, entries=[
        dict(id='mixed', file='mixed.onnx', input='inputs.npy')])))
    measured = time_suite(str(probe), threads=1, repeats=12)['ms']['mixed']
    frame = table.model_latency_ms - sum(table.blocks[name]['0'] for name in names)
    estimate = max(0.0, frame) + sum(table.blocks[name][f'{s:g}'] for name, s in mixed.items())
    assert abs(estimate - measured) / measured < 0.5, (estimate, measured)
    # Between the two composites it was anchored on.
    assert timings['composite@0.8'] * 0.8 < measured < timings['composite@0'] * 1.25
