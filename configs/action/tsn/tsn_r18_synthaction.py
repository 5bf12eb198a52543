# TSN teacher at CPU scale: ResNet-18, 8 segments of 64x64 frames of synthetic moving shapes.
# Train: python tools/train.py configs/action/tsn/tsn_r18_synthaction.py
_base_ = [
    'mmaction::_base_/models/tsn_r50.py', '../../_base_/datasets/synthaction.py',
    '../../_base_/schedules/synthaction_20e.py'
]
model = dict(
    backbone=dict(pretrained=None, depth=18),
    cls_head=dict(num_classes=6, in_channels=512, dropout_ratio=0.2))

randomness = dict(seed=0)  # recorded teacher metrics are reproducible runs
