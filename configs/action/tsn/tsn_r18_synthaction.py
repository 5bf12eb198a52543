# TSN teacher at CPU scale: ResNet-18 at a quarter of its width (stem and stages 16-32-64-128 channels), 8 segments
# of 64x64 frames of synthetic moving shapes. A model no wider than the data needs, so that pruning it costs
# accuracy even after fine-tuning (README, "Is capacity needed on this data?"); the HMDB51 config keeps full width.
# Train: python tools/train.py configs/action/tsn/tsn_r18_synthaction.py
_base_ = [
    'mmaction::_base_/models/tsn_r50.py', '../../_base_/datasets/synthaction.py',
    '../../_base_/schedules/synthaction_20e.py'
]
custom_imports = dict(imports=['mmlego.models.mmaction_resnet'], allow_failed_imports=False)  # NarrowResNet
model = dict(
    backbone=dict(type='NarrowResNet', pretrained=None, depth=18, base_channels=16),
    cls_head=dict(num_classes=6, in_channels=128, dropout_ratio=0.2))

randomness = dict(seed=0)  # recorded teacher metrics are reproducible runs
