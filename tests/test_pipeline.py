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
            'train_cfg.latency_min_seconds=0',
            'train_cfg.heldout_batches=1', 'train_dataloader.batch_size=2', *fast_loader_options()]


def test_every_teacher_has_a_legodnn_config():
    assert set(LEGO_CONFIGS) == set(TEACHER_CONFIGS)
    for name, path in LEGO_CONFIGS.items():
        text = (CONFIGS / path).read_text()
        assert "type='mmlego.LegoDNN'" in text and "type='mmlego.LegoDNNPipelineLoop'" in text
        assert len([line for line in text.splitlines() if line and not line.startswith('#')]) <= 10


@pytest.mark.slow
# yolov3, fcn: test_package_tools; tsn: the kill-and-resume test (test_crash_resume.py)
# Each also trains its descendants through the model, with the task's own loss (a two-stage detector's RPN and RoI
# losses on the composite) or by distillation to the teacher's outputs.
@pytest.mark.parametrize('model_name,through', [('faster_rcnn', 'task'), ('deeppose', 'distill')])
def test_pipeline_builds_a_profiled_bank(model_name, through, workspace, tmp_path):
    checkpoint = teacher_checkpoint(model_name, workspace, tmp_path)
    work_dir = tmp_path / 'work'
    run_tool('train.py', str(CONFIGS / LEGO_CONFIGS[model_name]), '--work-dir', str(work_dir), '--cfg-options',
             *tiny_pipeline_options(checkpoint), f'train_cfg.retrain.through_model={through}', cwd=workspace,
             timeout=900)
    assert_profiled_bank(work_dir)
    # Every stage leaves a readable trace with an ETA in the run's log file (not only a terminal progress bar).
    log = sorted(work_dir.glob('2*/2*.log'))[-1].read_text()
    for stage in ('retraining epoch 1/1: 2/2, elapsed', 'accuracy profiling', 'latency profiling (in the model)',
                  f'{through} loss through the model'):
        assert stage in log, stage
    assert ', eta 0:00:00' in log
    if model_name == 'deeppose':  # 20 convs: the downsampling BasicBlocks' residual branches through the shared ReLU
        manifest = json.loads((work_dir / 'bank' / 'manifest.json').read_text())
        assert manifest['extraction']['num_convs_covered'] == 16


def assert_profiled_bank(work_dir):
    """work_dir holds a finished pipeline: a bank with two sparsities per block, fully profiled."""
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


def test_pipeline_without_teacher_is_a_clear_error(workspace, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match='needs the trained teacher'):
        _train_in_process(monkeypatch, workspace, str(CONFIGS / LEGO_CONFIGS['tsn']), '--work-dir',
                          str(tmp_path / 'w'), '--cfg-options', 'load_from=None', *fast_loader_options())
    assert not (tmp_path / 'w' / 'bank').exists()


@pytest.mark.slow
def test_distributed_pipeline_matches_single_process(workspace, tmp_path):
    """2 CPU ranks (gloo) with batch 2 each retrain like 1 process with batch 4: same bank within 1e-4.

    Deterministic inputs (the val pipeline, no shuffling) so that both runs see the same samples per step.
    """
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    from .conftest import ROOT
    checkpoint = teacher_checkpoint('tsn', workspace, tmp_path)
    config = tmp_path / 'tsn_lego_deterministic.py'
    config.write_text(f"_base_ = ['{CONFIGS / LEGO_CONFIGS['tsn']}']\n"
                      "train_dataloader = dict(sampler=dict(shuffle=False), "
                      "dataset=dict(pipeline={{_base_.val_pipeline}}))\n")
    options = [o for o in tiny_pipeline_options(checkpoint) if not o.startswith('train_dataloader.batch_size')]
    single, double = tmp_path / 'single', tmp_path / 'double'
    run_tool('train.py', str(config), '--work-dir', str(single), '--cfg-options', *options,
             'train_dataloader.batch_size=4', cwd=workspace, timeout=900)
    env = dict(os.environ, PYTHON=sys.executable, CUDA_VISIBLE_DEVICES='', PORT='29631', OMP_NUM_THREADS='1')
    proc = subprocess.run(['bash', str(ROOT / 'tools' / 'dist_train.sh'), str(config), '2', '--work-dir',
                           str(double), '--device', 'cpu', '--cfg-options', *options, 'train_dataloader.batch_size=2'],
                          cwd=workspace, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    manifests = [json.loads((d / 'bank' / 'manifest.json').read_text()) for d in (single, double)]
    assert manifests[0]['plans'] == manifests[1]['plans']
    assert manifests[0]['teacher_fingerprint'] == manifests[1]['teacher_fingerprint']
    tensors = [load_file(str(d / 'bank' / m['tensors']['file'])) for d, m in zip((single, double), manifests)]
    assert tensors[0].keys() == tensors[1].keys()
    trained = [key for key in tensors[0] if '|0.8|' in key and key.endswith('weight')]
    assert trained
    for key in tensors[0]:
        torch.testing.assert_close(tensors[1][key], tensors[0][key], atol=1e-4, rtol=1e-4, msg=key)
    # Both runs retrained (one epoch of 2 steps) and agree on the held-out losses that picked the kept epoch.
    states = [json.loads((d / 'legodnn' / 'retraining' / 'state.json').read_text()) for d in (single, double)]
    assert states[0]['epoch'] == states[1]['epoch'] == 1
    for key, value in states[0]['best_val'].items():
        assert value == pytest.approx(states[1]['best_val'][key], rel=1e-4, abs=1e-6)
    assert manifests[0]['profiles']['teacher_metric'] == manifests[1]['profiles']['teacher_metric']


def test_epoch_view_gives_full_epochs_from_infinite_and_finite_loaders():
    from mmengine.dataset import InfiniteSampler
    from torch.utils.data import DataLoader

    from mmlego.engine.pipeline_loop import EpochView
    data = list(range(10))
    infinite = DataLoader(data, batch_size=3, sampler=InfiniteSampler(data, shuffle=False))
    view = EpochView(infinite, 4)
    epochs = [[batch.tolist() for batch in view] for _ in range(3)]
    assert [len(epoch) for epoch in epochs] == [4, 4, 4]
    assert epochs[0][0] == [0, 1, 2] and epochs[1][0] == [2, 3, 4]  # continues where the last epoch stopped
    finite = EpochView(DataLoader(data, batch_size=5), 2)
    assert [[b.tolist() for b in finite] for _ in range(2)] == [[list(range(5)), list(range(5, 10))]] * 2
    resumed = EpochView(DataLoader(data, batch_size=3, sampler=InfiniteSampler(data, shuffle=False)), 4, 1)
    assert [batch.tolist() for batch in resumed] == epochs[1]  # a resumed run's first epoch is the second


def _train_in_process(monkeypatch, workspace, *argv):
    """tools/train.py's main in this process: errors surface as the exceptions they are."""
    from .conftest import load_tool
    monkeypatch.chdir(workspace)
    monkeypatch.setenv('LOCAL_RANK', '0')
    load_tool('train').main(list(argv))


@pytest.mark.parametrize('option, error, message', [
    ('train_cfg.metric=acc/top1_typo', ValueError, r"train_cfg.metric: the evaluator reports .*'acc/top1'.*not "
                                                   r"'acc/top1_typo'"),
    ("train_cfg.references=['teacher','middel']", ValueError, "unknown reference composite 'middel'"),
    ('train_cfg.sparsities=[0.0,0.8,0.4]', ValueError, 'increasing'),
    ('train_cfg.max_ratio=0', ValueError, r'max_ratio must be a number in \(0, 1\]'),
    ('train_cfg.retrain.epoch=2', ValueError, r"unknown keys \['epoch'\]; the valid keys are .*'epochs'"),
])
def test_pipeline_settings_fail_before_any_stage(option, error, message, workspace, tmp_path, monkeypatch):
    checkpoint = teacher_checkpoint('tsn', workspace, tmp_path)
    work_dir = tmp_path / 'work'
    with pytest.raises(error, match=message):
        _train_in_process(monkeypatch, workspace, str(CONFIGS / LEGO_CONFIGS['tsn']), '--work-dir', str(work_dir),
                          '--cfg-options', *tiny_pipeline_options(checkpoint), option)
    assert not (work_dir / 'legodnn').exists() and not (work_dir / 'bank').exists()


def test_a_teacher_of_another_architecture_is_refused_naming_the_keys(workspace, tmp_path, monkeypatch):
    from mmlego.utils.checkpoint import TeacherCheckpointError
    other = teacher_checkpoint('trn', workspace, tmp_path)  # same backbone, another head
    work_dir = tmp_path / 'work'
    with pytest.raises(TeacherCheckpointError, match=r'does not fit the teacher architecture .*cls_head'):
        _train_in_process(monkeypatch, workspace, str(CONFIGS / LEGO_CONFIGS['tsn']), '--work-dir', str(work_dir),
                          '--cfg-options', *tiny_pipeline_options(other))
    assert not (work_dir / 'legodnn').exists()
