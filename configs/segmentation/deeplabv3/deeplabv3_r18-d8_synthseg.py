# DeepLabv3 teacher at CPU scale: ResNetV1c-18 (output stride 8) at a quarter of its width (16-32-64-128 channels,
# ASPP and heads alike) on 128x128 synthetic shapes, 3000 iterations. A quarter width so that capacity matters on
# this data, as for FCN (README, "Is capacity needed on this data?"); the VOC config keeps the full width.
# Train: python tools/train.py configs/segmentation/deeplabv3/deeplabv3_r18-d8_synthseg.py
_base_ = [
    'mmseg::_base_/models/deeplabv3_r50-d8.py', '../../_base_/datasets/synthseg.py',
    'mmseg::_base_/default_runtime.py', '../../_base_/schedules/synthseg_3000it.py'
]
norm_cfg = dict(type='BN', requires_grad=True)  # SyncBN needs a process group; BN also runs under DDP
crop_size = (128, 128)
# Background is ~85% of the pixels: without weights the teacher settles for background everywhere.
class_weight = [0.25, 1.0, 1.0, 1.0]
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(depth=18, stem_channels=16, base_channels=16, norm_cfg=norm_cfg),
    decode_head=dict(
        in_channels=128, channels=32, num_classes=4, norm_cfg=norm_cfg,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0, class_weight=class_weight)),
    auxiliary_head=dict(
        in_channels=64, channels=16, num_classes=4, norm_cfg=norm_cfg,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4, class_weight=class_weight)))


randomness = dict(seed=0)  # recorded teacher metrics are reproducible runs
