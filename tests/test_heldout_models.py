"""OpenMMLab models outside the eight keep working: blocks found on their tensor path, descendants generated, a
configuration switched in that runs with the teacher's output shapes (random weights, one synthetic input each)."""
import pytest
import torch

from mmlego.block_bank import BlockBank
from mmlego.block_switcher import BlockSwitcher
from mmlego.models import TENSOR_PATHS, trace_tensor_path

pytestmark = pytest.mark.usefixtures('one_torch_thread')

# The package's own configs (``mmdet::`` etc.); input shapes small enough for a test.
HELD_OUT = {
    'retinanet': ('mmdet::retinanet/retinanet_r18_fpn_1x_coco.py', (1, 3, 128, 128)),
    'unet': ('mmseg::unet/unet-s5-d16_deeplabv3_4xb4-40k_drive-64x64.py', (1, 3, 64, 64)),
    'mobilenetv2_pose': ('mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_mobilenetv2_8xb64-210e_coco-256x192.py',
                         (1, 3, 128, 96)),
    'tsm_mobilenetv2': ('mmaction::recognition/tsm/tsm_imagenet-pretrained-mobilenetv2_8xb16-1x1x8-100e_'
                        'kinetics400-rgb.py', (1, 8, 3, 64, 64)),
    'hrnet_pose': ('mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w32_8xb64-210e_coco-256x192.py',
                   (1, 3, 64, 64)),
}
# HRNet's four stages and fuse layers as mmpose builds them, one module of one block per branch at an eighth of the
# width (the W32 config has 293 convs: too slow for a unit test; same structure).
MODEL_OPTIONS = {
    'hrnet_pose': {'model.backbone.extra': dict(
        stage1=dict(num_modules=1, num_branches=1, block='BOTTLENECK', num_blocks=(1,), num_channels=(16,)),
        stage2=dict(num_modules=1, num_branches=2, block='BASIC', num_blocks=(1, 1), num_channels=(8, 16)),
        stage3=dict(num_modules=1, num_branches=3, block='BASIC', num_blocks=(1, 1, 1), num_channels=(8, 16, 32)),
        stage4=dict(num_modules=1, num_branches=4, block='BASIC', num_blocks=(1, 1, 1, 1),
                    num_channels=(8, 16, 32, 64))),
        'model.head.in_channels': 8},
}


def _outputs(result):
    return [tuple(t.shape) for t in torch.utils._pytree.tree_leaves(result) if isinstance(t, torch.Tensor)]


def _build(config: str, options: dict | None = None):
    """The package config's model (``options`` merged in) with random weights (no pretrained weights: nothing to
    download), in eval mode."""
    from mmengine.hub import get_config
    from mmengine.registry import MODELS, init_default_scope
    cfg = get_config(config)
    cfg.merge_from_dict(options or {})
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    model_cfg = cfg.model
    for part in (model_cfg, model_cfg.get('backbone') or {}):
        part.pop('pretrained', None)
        part.pop('init_cfg', None)
    torch.manual_seed(0)
    return MODELS.build(model_cfg).eval()


def _bank_and_switch(model, x, max_ratio=0.125):
    """Builds a bank (sparsities 0 and 0.5), switches every block to 0.5; asserts the outputs keep the teacher's
    shapes and the model got physically smaller. Returns the bank."""
    path, _ = trace_tensor_path(model, x)
    bank = BlockBank.build(model, (x,), [0.0, 0.5], max_ratio, TENSOR_PATHS[path], show_progress=False)
    teacher_params = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        reference = TENSOR_PATHS[path](model, x)
        BlockSwitcher(model, bank, guard_forward=False).switch({spec.name: 0.5 for spec in bank.blocks})
        switched = TENSOR_PATHS[path](model, x)
    assert _outputs(switched) == _outputs(reference)
    assert sum(p.numel() for p in model.parameters()) < teacher_params  # physically smaller
    return bank


@pytest.mark.parametrize('name', sorted(HELD_OUT))
def test_a_held_out_model_gets_blocks_and_runs_switched(name):
    config, shape = HELD_OUT[name]
    bank = _bank_and_switch(_build(config, MODEL_OPTIONS.get(name)), torch.randn(*shape))
    assert len(bank.blocks) >= 5 and bank.extraction.num_convs_covered >= bank.extraction.num_convs_total / 2


@pytest.mark.parametrize('config, branches', [
    ('mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py', 'decode_head.psp_modules.'),
    ('mmseg::deeplabv3plus/deeplabv3plus_r18-d8_4xb2-80k_cityscapes-512x1024.py', 'decode_head.aspp_modules.'),
])
def test_held_out_pyramid_heads_become_fan_out_blocks(config, branches):
    """PSPNet's pyramid pooling and DeepLabv3+'s ASPP: branches side by side, resized and concatenated by the head's
    own code, one fan-out block with its bottleneck (at max_ratio 0.25, as the DeepLabv3 configs); switched at 0.5
    through the heads' own ops."""
    bank = _bank_and_switch(_build(config), torch.randn(1, 3, 64, 64), max_ratio=0.25)
    (fan_out,) = [spec for spec in bank.blocks if spec.wiring is not None]
    assert sum(conv.startswith(branches) for conv in fan_out.prunable_convs) == 4
    assert 'decode_head.bottleneck.conv' in fan_out.convs
    assert bank.descendant(fan_out.name, 0.5).plan.unpruned_reason is None  # PSPNet's concat holds the block input


def test_a_held_out_two_stage_detector_gets_blocks_in_its_roi_heads():
    """Mask R-CNN (ResNet-18 FPN): its path runs the RPN and the RoI heads on the proposals (tensor_with_samples), and
    both heads it reaches beyond extract_feat, box and mask, hold blocks; switched, it runs with outputs of the
    teacher's shapes but for the proposal count, which follows the pruned features."""
    from mmengine.hub import get_config
    from mmengine.registry import MODELS, init_default_scope
    cfg = get_config('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py')
    init_default_scope('mmdet')
    cfg.model.backbone.update(depth=18, init_cfg=None)
    cfg.model.neck.in_channels = [64, 128, 256, 512]
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    x = torch.randn(1, 3, 128, 128)
    path, _ = trace_tensor_path(model, x)
    assert path == 'tensor_with_samples'
    bank = BlockBank.build(model, (x,), [0.0, 0.5], 0.125, TENSOR_PATHS[path], show_progress=False)
    names = [spec.name for spec in bank.blocks]
    assert any(name.startswith('roi_head.bbox_head.shared_fcs.0') for name in names)
    assert sum(name.startswith('roi_head.mask_head.') for name in names) >= 1
    teacher_params = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        reference = TENSOR_PATHS[path](model, x)
        BlockSwitcher(model, bank, guard_forward=False).switch({spec.name: 0.5 for spec in bank.blocks})
        switched = TENSOR_PATHS[path](model, x)
    assert [shape[1:] for shape in _outputs(switched)] == [shape[1:] for shape in _outputs(reference)]
    assert sum(p.numel() for p in model.parameters()) < teacher_params
