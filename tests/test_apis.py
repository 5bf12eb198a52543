"""mmlego.apis round trip per task family (init with a bank, scale to a budget, infer) and the demo script."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from .conftest import CONFIGS, ROOT, TEACHER_CONFIGS

FAMILY_MODELS = {'det': 'yolov3', 'seg': 'fcn', 'pose': 'simplebaseline', 'action': 'tsn'}
SAMPLES = {  # one synthetic val sample per family, relative to the workspace
    'det': 'data/synthetic/det/images/val/000000.jpg',
    'seg': 'data/synthetic/seg/img_dir/val/000000.jpg',
    'pose': 'data/synthetic/pose/images/val/000000.jpg',
    'action': 'data/synthetic/action/rawframes/val_000000',
}


pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _teacher(config, seed):
    from mmengine.config import Config

    from mmlego.models import build_model, example_batch
    torch.manual_seed(seed)
    cfg = Config.fromfile(config)
    model = build_model(cfg)
    return model, example_batch(cfg, model, batch_size=1)


def _save_teacher(model, path):
    torch.save({'state_dict': model.state_dict()}, path)
    return str(path)


def _build_profiled_bank(config, out_dir):
    """A tiny bank (sparsities 0.0/0.8) with costs measured, accuracy drop = sparsity, teacher metric 1.0."""
    from mmlego.block_bank import BlockBank
    from mmlego.models import TENSOR_PATHS, trace_tensor_path
    from mmlego.profiling import profile_costs, profile_model
    model, inputs = _teacher(config, seed=0)
    path, _ = trace_tensor_path(model, inputs)
    bank = BlockBank.build(model, (inputs,), sparsities=[0.0, 0.8], forward_fn=TENSOR_PATHS[path],
                           show_progress=False)
    bank.meta['tensor_path'] = path
    profile_costs(bank, show_progress=False)
    profile_model(bank, model, (inputs,), forward_fn=TENSOR_PATHS[path], warmup=0, repeats=1, show_progress=False,
                  min_seconds=0)
    for spec in bank.blocks:
        for sparsity in bank.sparsities:
            bank.profiles.get(spec.name, sparsity).accuracy_drop = sparsity
    bank.profiles.teacher_metric, bank.profiles.metric_name = 1.0, 'test/metric'
    out_dir.mkdir(parents=True, exist_ok=True)
    bank.save(out_dir / 'bank')
    return str(out_dir / 'bank'), _save_teacher(model, out_dir / 'teacher.pth')


@pytest.fixture(scope='module')
def banks(workspace, tmp_path_factory):
    """family -> (teacher config, bank dir, teacher checkpoint), built on first use."""
    built = {}

    def get(family):
        if family not in built:
            config = str(CONFIGS / TEACHER_CONFIGS[FAMILY_MODELS[family]])
            cwd = os.getcwd()
            os.chdir(workspace)  # the configs' data paths are relative
            try:
                bank_dir, checkpoint = _build_profiled_bank(config, tmp_path_factory.mktemp(family))
            finally:
                os.chdir(cwd)
            built[family] = config, bank_dir, checkpoint
        return built[family]
    return get


def _tight_memory_mb(model):
    """A memory budget a quarter of the way from the smallest configuration to the teacher."""
    from mmlego.block_bank import problem_from_bank
    problem = problem_from_bank(model.bank)
    smallest = problem.frame_memory_bytes + sum(min(o.memory_bytes for o in opts) for opts in problem.blocks.values())
    teacher = problem.frame_memory_bytes + sum(next(o.memory_bytes for o in opts if o.sparsity == 0.0)
                                               for opts in problem.blocks.values())
    assert smallest < teacher
    return (smallest + 0.25 * (teacher - smallest)) / 2 ** 20


def _check_prediction(family, sample):
    from mmaction.structures import ActionDataSample
    from mmdet.structures import DetDataSample
    from mmpose.structures import PoseDataSample
    from mmseg.structures import SegDataSample
    if family == 'det':
        assert isinstance(sample, DetDataSample)
        assert sample.pred_instances.bboxes.shape[1] == 4
        assert len(sample.pred_instances.scores) == len(sample.pred_instances.labels)
    elif family == 'seg':
        assert isinstance(sample, SegDataSample)
        assert tuple(sample.pred_sem_seg.data.shape[-2:]) == tuple(sample.ori_shape)
        assert int(sample.pred_sem_seg.data.max()) < 4
    elif family == 'pose':
        assert isinstance(sample, PoseDataSample)
        assert sample.pred_instances.keypoints.shape == (1, 17, 2)
        assert np.isfinite(sample.pred_instances.keypoint_scores).all()
    else:
        assert isinstance(sample, ActionDataSample)
        assert sample.pred_score.shape == (6,) and 0 <= int(sample.pred_label) < 6


@pytest.mark.parametrize('family', list(FAMILY_MODELS))
def test_round_trip(family, banks, workspace, monkeypatch):
    import mmcv

    from mmlego.apis import inference_lego_model, init_lego_model, scale_model, task_family
    from mmlego.models import LegoDNN
    monkeypatch.chdir(workspace)
    config, bank_dir, checkpoint = banks(family)
    if family == 'action':  # a legodnn config (its load_from does not exist here: the argument wins)
        config = str(CONFIGS / 'action/tsn/tsn_r18_legodnn_synthaction.py')
    model = init_lego_model(config, bank_dir, checkpoint=checkpoint)  # task configs are wrapped automatically
    assert isinstance(model, LegoDNN) and model.bank is not None and task_family(model) == family
    assert model.cfg.model.type == 'mmlego.LegoDNN'
    if family in ('det', 'seg'):
        assert 'circle' in model.dataset_meta['classes']
    if family == 'pose':
        assert len(model.dataset_meta['flip_indices']) == 17
    assert set(model.selection.values()) == {0.0}

    budget = _tight_memory_mb(model)
    summary = scale_model(model, memory_mb=budget)
    assert summary['status'] == 'optimal'
    assert summary['memory_mb'] <= budget + 1e-6 and summary['memory_mb'] < summary['teacher_memory_mb']
    assert summary['metric'] < summary['teacher_metric'] == 1.0 and summary['latency_ms'] > 0
    assert summary['selection'] == model.selection and max(model.selection.values()) == 0.8

    sample = SAMPLES[family]
    if family == 'seg':
        sample = mmcv.imread(sample)  # an in-memory BGR image
    kwargs = dict(bboxes=[[10, 10, 120, 120]]) if family == 'pose' else {}
    result = inference_lego_model(model, sample, **kwargs)
    _check_prediction(family, result)
    if family == 'det':  # a list in, a list out; paths and arrays alike
        results = inference_lego_model(model, [SAMPLES['det'], mmcv.imread(SAMPLES['det'])])
        assert len(results) == 2
        torch.testing.assert_close(results[0].pred_instances.bboxes, results[1].pred_instances.bboxes)
    if family == 'action':  # frames in memory (RGB) instead of a rawframe directory
        frames = [mmcv.imread(os.path.join(SAMPLES['action'], f), channel_order='rgb')
                  for f in sorted(os.listdir(SAMPLES['action']))]
        _check_prediction(family, inference_lego_model(model, frames))

    smallest = scale_model(model, memory_mb=1e-3)  # below the smallest configuration: that one runs
    assert smallest['status'] == 'infeasible' and set(model.selection.values()) == {0.8}


def test_errors(banks, workspace, monkeypatch, tmp_path):
    from mmengine.config import Config
    from mmengine.model import BaseModel

    from mmlego.apis import inference_lego_model, init_lego_model, scale_model
    from mmlego.block_bank.bank import BankError
    from mmlego.models import LegoDNN
    monkeypatch.chdir(workspace)
    config, bank_dir, checkpoint = banks('action')

    other, _ = _teacher(config, seed=1)
    with pytest.raises(BankError, match='another teacher'):
        init_lego_model(config, bank_dir, checkpoint=_save_teacher(other, tmp_path / 'other.pth'))
    with pytest.raises(ValueError, match='no load_from'):  # a bank but no teacher weights anywhere
        init_lego_model(config, bank_dir)
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        init_lego_model(config, bank_dir, checkpoint=str(tmp_path / 'missing.pth'))
    (tmp_path / 'empty').mkdir()
    with pytest.raises(BankError, match='not a block bank'):
        init_lego_model(config, str(tmp_path / 'empty'), checkpoint=checkpoint)

    teacher_only = init_lego_model(config, checkpoint)  # a checkpoint, no bank: runs, but cannot scale
    with pytest.raises(RuntimeError, match='no block bank'):
        scale_model(teacher_only, memory_mb=10)
    with pytest.raises(TypeError, match='LegoDNN'):
        scale_model(teacher_only.architecture, memory_mb=10)

    class Tiny(BaseModel):  # a model of no known task package
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, inputs, data_samples=None, mode='tensor'):
            return self.conv(inputs)

    unknown = LegoDNN(Tiny())
    unknown.cfg = Config(dict(default_scope='mmengine', model=dict(type='mmlego.LegoDNN'),
                              test_dataloader=dict(dataset=dict(pipeline=[]))))
    with pytest.raises(ValueError, match='unknown task family'):
        inference_lego_model(unknown, SAMPLES['det'])


def test_demo_script(banks, workspace, tmp_path):
    config, bank_dir, checkpoint = banks('seg')
    out = tmp_path / 'vis' / 'seg.png'
    env = dict(os.environ, PYTHONWARNINGS='ignore', CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'demo' / 'lego_seg_demo.py'), config, bank_dir, '--checkpoint', checkpoint,
         '--memory-mb', '1e-3', '--out', str(out)],
        cwd=workspace, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert 'infeasible' in proc.stdout and 'SegDataSample' in proc.stdout
    import mmcv
    image = mmcv.imread(str(out))
    assert image is not None and image.shape[2] == 3 and image.size > 0
