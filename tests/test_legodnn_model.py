"""mmlego.LegoDNN: teacher checkpoints load into it, and it runs every mode of each task family's model."""
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from .conftest import CONFIGS, TEACHER_CONFIGS
from .test_pipeline import LEGO_CONFIGS

FAMILIES = ['yolov3', 'fcn', 'simplebaseline', 'tsn']
pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _build(name):
    import mmlego  # noqa: F401
    from mmengine.registry import MODELS
    cfg = Config.fromfile(CONFIGS / LEGO_CONFIGS[name])
    init_default_scope(cfg.default_scope)
    return cfg, MODELS.build(cfg.model)


def _batch(cfg, split='val_dataloader'):
    from mmengine.runner import Runner
    loader_cfg = cfg[split].copy()
    loader_cfg.update(batch_size=2, num_workers=0, persistent_workers=False)
    return next(iter(Runner.build_dataloader(loader_cfg)))


@pytest.mark.parametrize('name', FAMILIES)
def test_wrapper_runs_every_mode(name, workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    cfg, model = _build(name)
    teacher = model.architecture
    model.eval()
    data = model.data_preprocessor(_batch(cfg), False)
    with torch.no_grad():
        wrapped = model(data['inputs'], data['data_samples'], mode='predict')
        direct = teacher(data['inputs'], data['data_samples'], mode='predict')
    assert type(wrapped[0]) is type(direct[0]) and len(wrapped) == len(direct)
    if name != 'faster_rcnn':
        with torch.no_grad():
            out = model(data['inputs'], mode='tensor')
        # The wrapper feeds the teacher a contiguous batch (mmaction's clips arrive as a permuted HWC view): the
        # same as the teacher on that layout, and within rounding of the teacher on the layout as given.
        ref = teacher(data['inputs'].contiguous(), None, mode='tensor')
        as_given = teacher(data['inputs'], None, mode='tensor')
        flat = [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
        flat_ref = [t for t in torch.utils._pytree.tree_leaves(ref) if isinstance(t, torch.Tensor)]
        flat_given = [t for t in torch.utils._pytree.tree_leaves(as_given) if isinstance(t, torch.Tensor)]
        assert all(torch.equal(a, b) for a, b in zip(flat, flat_ref)) and flat
        assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-4) for a, b in zip(flat, flat_given))
    model.train()
    train_data = model.data_preprocessor(_batch(cfg, 'train_dataloader'), True)
    losses = model(train_data['inputs'], train_data['data_samples'], mode='loss')
    assert losses and all(torch.isfinite(v).all() for v in torch.utils._pytree.tree_leaves(losses)
                          if isinstance(v, torch.Tensor))


def test_teacher_checkpoint_loads_into_the_wrapper(tmp_path):
    from mmengine.runner.checkpoint import _load_checkpoint_to_model

    from mmlego.models import build_model
    cfg, model = _build('tsn')
    torch.manual_seed(1)
    teacher = build_model(Config.fromfile(CONFIGS / TEACHER_CONFIGS['tsn']))
    checkpoint = {'state_dict': teacher.state_dict()}
    _load_checkpoint_to_model(model, checkpoint['state_dict'], strict=True)  # what runner.load_checkpoint does
    for key, value in teacher.state_dict().items():
        assert torch.equal(model.architecture.state_dict()[key], value), key
    # And a checkpoint of the wrapper itself (architecture.* keys) loads unchanged.
    _load_checkpoint_to_model(model, model.state_dict(), strict=True)


def test_scaling_without_bank_is_a_clear_error():
    from mmlego.block_bank.bank import BankError
    _, model = _build('tsn')
    # The config's bank='{work_dir}/bank' needs a runner's work dir: built without one, the error says so.
    with pytest.raises(BankError, match="names the run's work dir.*mmlego.LegoRunner"):
        model.scale(memory_mb=10)
    model._bank_dir = None
    with pytest.raises(RuntimeError, match='no block bank'):
        model.scale(memory_mb=10)


def test_a_two_stage_detector_serves_mode_tensor_as_its_path_ran(workspace, monkeypatch):
    """Faster R-CNN's mode='tensor' needs data samples; on its bank's path (tensor_with_samples, set from the bank's
    manifest when one is attached) the wrapper supplies the image shape, and returns what profiling timed."""
    from mmlego.models import TENSOR_PATHS
    monkeypatch.chdir(workspace)
    cfg, model = _build('faster_rcnn')
    model.tensor_path = 'tensor_with_samples'
    model.eval()
    inputs = model.data_preprocessor(_batch(cfg), False)['inputs']
    with torch.no_grad():
        out = model(inputs, mode='tensor')
        ref = TENSOR_PATHS['tensor_with_samples'](model.architecture, inputs.contiguous())
    flat = [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
    flat_ref = [t for t in torch.utils._pytree.tree_leaves(ref) if isinstance(t, torch.Tensor)]
    assert flat and len(flat) == len(flat_ref) and all(torch.equal(a, b) for a, b in zip(flat, flat_ref))


def test_retraining_feeds_a_two_stage_detector_the_batch_s_own_image_shapes(workspace, monkeypatch):
    """Retraining's teacher forward (``batch_forward``) on the tensor_with_samples path passes the batch's samples
    (their image shapes clip the proposals as in serving; padding is no region of interest); other paths ignore them."""
    from mmlego.models.tensor_path import batch_forward, image_samples, tensor_with_samples
    monkeypatch.chdir(workspace)
    cfg, model = _build('faster_rcnn')
    teacher = model.architecture.eval()
    batch = _batch(cfg)
    for sample in batch['data_samples']:  # an image smaller than the padded batch, as on a real dataset
        sample.set_metainfo(dict(img_shape=(100, 90)))
    data = teacher.data_preprocessor(batch, False)
    assert tuple(data['inputs'].shape[-2:]) != (100, 90)
    seen = []
    monkeypatch.setattr(type(teacher), '_forward', lambda self, inputs, samples: seen.append(samples) or (inputs,))
    batch_forward('tensor_with_samples')(teacher, batch)
    assert [s.metainfo['img_shape'] for s in seen[-1]] == [(100, 90)] * len(batch['data_samples'])
    tensor_with_samples(teacher, data['inputs'])  # no samples: the padded batch's shape
    padded = [s.metainfo['img_shape'] for s in image_samples(data['inputs'])]
    assert [s.metainfo['img_shape'] for s in seen[-1]] == padded
    out = batch_forward('extract_feat')(teacher, batch)
    assert len(seen) == 2 and isinstance(out, tuple)  # extract_feat: never the tensor mode
