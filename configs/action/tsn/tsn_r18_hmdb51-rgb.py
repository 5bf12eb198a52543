# TSN ResNet-18 on HMDB51 split 1, 8 segments (documented, not run here: no dataset download).
_base_ = [
    'mmaction::_base_/models/tsn_r50.py', '../../_base_/datasets/hmdb51_rawframes.py',
    'mmaction::_base_/schedules/sgd_100e.py', 'mmaction::_base_/default_runtime.py'
]
model = dict(
    backbone=dict(pretrained='torchvision://resnet18', depth=18),
    cls_head=dict(num_classes=51, in_channels=512))
