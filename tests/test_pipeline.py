"""The legodnn configs through tools/train.py: the whole offline pipeline per task family, on tiny data."""
import json

import pytest
import torch

from .conftest import CONFIGS, TEACHER_CONFIGS, fast_loader_options, run_tool

LEGO_CONFIGS = {
    'yolov3': 'detection/yolov3/yolov3_r18_legodnn_synthdet.py',
    'faster_rcnn': 'detection/faster_rcnn/faster-rcnn_r18_fpn_legodnn_synthdet.py',
    'fcn': 'segmentation/fcn/fcn_r18-d8_legodnn_synthseg.py',
    'deeplabv3': 'segmentation/deeplabv3/deeplabv3_r18-d8_legodnn_synthseg.py',
    'deeppose': 'pose/deeppose/deeppose_res18_legodnn_synthpose-128x128.py',
    'simplebaseline': 'pose/simplebaseline/simplebaseline_res18_legodnn_synthpose-128x128.py',
    'tsn': 'action/tsn/tsn_r18_legodnn_synthaction.py',
    'trn': 'action/trn/trn_r18_legodnn_synthaction.py',
}


def teacher_checkpoint(model_name, workspace, tmp_path):
    """A randomly initialized teacher saved as an mmengine-style checkpoint (structure is what matters here)."""
    from mmengine.config import Config

    from mmlego.models import build_model
    torch.manual_seed(0)
    model = build_model(Config.fromfile(str(CONFIGS / TEACHER_CONFIGS[model_name])))
    path = tmp_path / f'{model_name}_teacher.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return path


def tiny_pipeline_options(checkpoint):
    return ['load_from=' + str(checkpoint), 'train_cfg.retrain.max_batches_per_epoch=2', 'train_cfg.retrain.epochs=1',
            "train_cfg.references=['teacher']", 'train_cfg.sparsities=[0.0,0.8]', 'train_cfg.latency_repeats=2',
            'train_cfg.heldout_batches=1', 'train_dataloader.batch_size=2', *fast_loader_options()]


def test_every_teacher_has_a_legodnn_config():
    assert set(LEGO_CONFIGS) == set(TEACHER_CONFIGS)
    for name, path in LEGO_CONFIGS.items():
        text = (CONFIGS / path).read_text()
        assert "type='mmlego.LegoDNN'" in text and "type='mmlego.LegoDNNPipelineLoop'" in text
        assert len([line for line in text.splitlines() if line and not line.startswith('#')]) <= 10


@pytest.mark.slow
@pytest.mark.parametrize('model_name', ['yolov3', 'faster_rcnn', 'fcn', 'simplebaseline', 'tsn'])
def test_pipeline_builds_a_profiled_bank(model_name, workspace, tmp_path):
    checkpoint = teacher_checkpoint(model_name, workspace, tmp_path)
    work_dir = tmp_path / 'work'
    run_tool('train.py', str(CONFIGS / LEGO_CONFIGS[model_name]), '--work-dir', str(work_dir), '--cfg-options',
             *tiny_pipeline_options(checkpoint), cwd=workspace, timeout=900)
    manifest = json.loads((work_dir / 'bank' / 'manifest.json').read_text())
    profiles = manifest['profiles']
    assert profiles['teacher_metric'] is not None and profiles['metric_name']
    assert profiles['model_memory_bytes'] > 0 and profiles['model_latency_ms'] > 0
    assert len(manifest['extraction']['blocks']) >= 5
    for block in manifest['extraction']['blocks']:
        by_sparsity = profiles['descendants'][block['name']]
        assert set(by_sparsity) == {'0', '0.8'}
        assert by_sparsity['0.8']['memory_bytes'] < by_sparsity['0']['memory_bytes']
        assert by_sparsity['0']['accuracy_drop'] == 0.0
    stage = json.loads((work_dir / 'legodnn' / 'pipeline.json').read_text())['stage']
    assert stage == 'done'


@pytest.mark.slow
def test_pipeline_resumes_at_the_stage_it_stopped(workspace, tmp_path):
    checkpoint = teacher_checkpoint('tsn', workspace, tmp_path)
    work_dir = tmp_path / 'work'
    args = [str(CONFIGS / LEGO_CONFIGS['tsn']), '--work-dir', str(work_dir), '--cfg-options',
            *tiny_pipeline_options(checkpoint)]
    run_tool('train.py', *args, cwd=workspace, timeout=900)
    # Pretend the run stopped after retraining: later stages must rerun, earlier ones must not.
    (work_dir / 'legodnn' / 'pipeline.json').write_text(json.dumps({'stage': 'retrained'}))
    retrained = (work_dir / 'legodnn' / 'retraining' / 'state.json').stat().st_mtime_ns
    proc = run_tool('train.py', *args[:3], '--resume', *args[3:], cwd=workspace, timeout=900)
    assert 'resuming the LegoDNN pipeline after stage "retrained"' in proc.stdout + proc.stderr
    assert (work_dir / 'legodnn' / 'retraining' / 'state.json').stat().st_mtime_ns == retrained
    assert json.loads((work_dir / 'legodnn' / 'pipeline.json').read_text())['stage'] == 'done'


def test_pipeline_without_teacher_is_a_clear_error(workspace, tmp_path):
    with pytest.raises(AssertionError, match='needs the trained teacher'):
        run_tool('train.py', str(CONFIGS / LEGO_CONFIGS['tsn']), '--work-dir', str(tmp_path / 'w'),
                 '--cfg-options', 'load_from=None', *fast_loader_options(), cwd=workspace)
    assert not (tmp_path / 'w' / 'bank').exists()
