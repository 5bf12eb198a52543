"""tools/profile_latency.py: a latency table measured for a bank, copied, and applied to the bank's manifest."""
import json
import shutil

import torch

from .conftest import CONFIGS, TEACHER_CONFIGS, run_tool


def _bank_for_config(config, bank_dir, seed):
    from mmengine.config import Config

    from mmlego.block_bank import BlockBank
    from mmlego.models import TENSOR_PATHS, build_model, example_batch, trace_tensor_path
    torch.manual_seed(seed)
    cfg = Config.fromfile(config)
    model = build_model(cfg)
    inputs = example_batch(cfg, model, batch_size=1)
    path, _ = trace_tensor_path(model, inputs)
    bank = BlockBank.build(model, (inputs,), sparsities=[0.0, 0.8], forward_fn=TENSOR_PATHS[path],
                           show_progress=False)
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
             '--repeats', '2', '--warmup', '1', cwd=workspace)
    measured = json.loads(table.read_text())
    assert measured['model_latency_ms'] > 0
    # the legodnn config of the same teacher names the same model (its architecture): same fingerprint, no error
    lego_table = tmp_path / 'lego_table.json'
    run_tool('profile_latency.py', str(CONFIGS / 'action/tsn/tsn_r18_legodnn_synthaction.py'), str(bank_dir),
             '--checkpoint', str(checkpoint), '--out', str(lego_table), '--repeats', '2', '--warmup', '1', cwd=workspace)
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

    other = tmp_path / 'other_bank'
    _bank_for_config(config, other, seed=1)
    try:
        run_tool('profile_latency.py', '--apply', str(table), str(other), cwd=workspace)
    except AssertionError as error:
        assert 'another teacher' in str(error)
    else:
        raise AssertionError('applying a table of another teacher must fail')
