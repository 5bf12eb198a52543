# DeepPose teacher at CPU scale: ResNet-18 at a quarter of its width (16-32-64-128 channels) + global pooling +
# keypoint regression, 128x128 crops of synthetic figures. A quarter width so that capacity matters on this data, as
# for SimpleBaseline (README, "Is capacity needed on this data?"). The MPII config keeps the full width.
# Train: python tools/train.py configs/pose/deeppose/deeppose_res18_synthpose-128x128.py
_base_ = ['../../_base_/datasets/synthpose.py', '../../_base_/schedules/synthpose_120e.py']
codec = dict(type='RegressionLabel', input_size=(128, 128))
model = dict(
    type='TopdownPoseEstimator',
    data_preprocessor=dict(
        type='PoseDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
    backbone=dict(type='ResNet', depth=18, stem_channels=16, base_channels=16),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='RegressionHead', in_channels=128, num_joints=17,
        loss=dict(type='SmoothL1Loss', use_target_weight=True), decoder=codec),
    test_cfg=dict(flip_test=True, shift_coords=True))
train_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(type='RandomFlip', direction='horizontal'),
    dict(type='RandomBBoxTransform'),
    dict(type='TopdownAffine', input_size=codec['input_size']),
    dict(type='GenerateTarget', encoder=codec),
    dict(type='PackPoseInputs')
]
val_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(type='TopdownAffine', input_size=codec['input_size']),
    dict(type='PackPoseInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=val_pipeline))
test_dataloader = dict(dataset=dict(pipeline=val_pipeline))  # the test split (see the base dataset config)

randomness = dict(seed=0)  # recorded teacher metrics are reproducible runs
