# TRN teacher at CPU scale: ResNet-18 at a quarter of its width (stem and stages 16-32-64-128 channels) + multi-scale
# temporal relation head (hidden 32, a quarter of the full-width config's 128) over 8 segments of 64x64 frames. A
# model no wider than the data needs, so that pruning it costs accuracy even after fine-tuning (README, "Is capacity
# needed on this data?"); the HMDB51 config keeps full width.
# Train: python tools/train.py configs/action/trn/trn_r18_synthaction.py
_base_ = [
    'mmaction::_base_/models/trn_r50.py', '../../_base_/datasets/synthaction.py',
    '../../_base_/schedules/synthaction_20e.py'
]
custom_imports = dict(imports=['mmlego.models.mmaction_resnet'], allow_failed_imports=False)  # NarrowResNet
model = dict(
    backbone=dict(type='NarrowResNet', pretrained=None, depth=18, base_channels=16, partial_bn=False),
    cls_head=dict(num_classes=6, in_channels=128, num_segments={{_base_.num_segments}}, dropout_ratio=0.5,
                  hidden_dim=32))

randomness = dict(seed=0)  # recorded teacher metrics are reproducible runs
