# TRN teacher at CPU scale: ResNet-18 + multi-scale temporal relation head over 8 segments of 64x64 frames.
# Train: python tools/train.py configs/action/trn/trn_r18_synthaction.py
_base_ = [
    'mmaction::_base_/models/trn_r50.py', '../../_base_/datasets/synthaction.py',
    '../../_base_/schedules/synthaction_20e.py'
]
model = dict(
    backbone=dict(pretrained=None, depth=18, partial_bn=False),
    cls_head=dict(num_classes=6, in_channels=512, num_segments={{_base_.num_segments}}, dropout_ratio=0.5,
                  hidden_dim=128))

randomness = dict(seed=0)  # recorded teacher metrics are reproducible runs
