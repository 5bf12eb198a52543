# SimpleBaseline teacher at CPU scale: ResNet-18 at a quarter of its width (16-32-64-128 channels) + deconvolution
# heatmap head, 128x128 crops of synthetic figures. A quarter width so that capacity matters on this data: at full
# width a uniformly pruned 0.8 model (4% of the parameters) fine-tuned with the teacher's schedule lost nothing
# (README, "Is capacity needed on this data?"). The MPII config keeps the full width.
# Train: python tools/train.py configs/pose/simplebaseline/simplebaseline_res18_synthpose-128x128.py
_base_ = ['../../_base_/datasets/synthpose.py', '../../_base_/schedules/synthpose_120e.py']
codec = dict(type='MSRAHeatmap', input_size=(128, 128), heatmap_size=(32, 32), sigma=2)
model = dict(
    type='TopdownPoseEstimator',
    data_preprocessor=dict(
        type='PoseDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
    backbone=dict(type='ResNet', depth=18, stem_channels=16, base_channels=16),
    head=dict(
        type='HeatmapHead', in_channels=128, out_channels=17, deconv_out_channels=(64, 64, 64),
        loss=dict(type='KeypointMSELoss', use_target_weight=True), decoder=codec),
    test_cfg=dict(flip_test=True, flip_mode='heatmap', shift_heatmap=True))
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
