# YOLOv3 teacher at CPU scale: mmdet's YOLOv3 with a ResNet-18 backbone (a ResNet-18-class stand-in for
# DarkNet-53) at a quarter of its width (16-32-64-128 channels), on 128x128 synthetic shapes, 90 epochs. A quarter
# width so that capacity matters on this data (README, "Is capacity needed on this data?"); the VOC config keeps the
# full width. Train: python tools/train.py configs/detection/yolov3/yolov3_r18_synthdet.py
# mmdet's YOLOv3 config carries its own (COCO) data settings, so the synthetic ones are merged in here rather than
# from configs/_base_/datasets/synthdet.py (mmengine forbids two bases defining the same key).
_base_ = 'mmdet::yolo/yolov3_d53_8xb8-320-273e_coco.py'

model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(
        _delete_=True, type='ResNet', depth=18, base_channels=16, num_stages=4, out_indices=(1, 2, 3),
        frozen_stages=-1, norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False, style='pytorch', init_cfg=None),
    neck=dict(in_channels=[128, 64, 32], out_channels=[64, 32, 16]),
    bbox_head=dict(
        num_classes=3,
        in_channels=[64, 32, 16],
        out_channels=[64, 32, 16],
        # anchors for objects of 16..56 px in 128x128 images
        anchor_generator=dict(
            base_sizes=[[(48, 48), (56, 40), (40, 56)], [(28, 28), (34, 24), (24, 34)], [(14, 14), (18, 12), (12, 18)]])),
    test_cfg=dict(score_thr=0.01, conf_thr=0.005, max_per_img=20))

train_cfg = dict(max_epochs=90, val_interval=30)
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=200),
    dict(type='MultiStepLR', by_epoch=True, milestones=[72, 84], gamma=0.1)
]
default_hooks = dict(checkpoint=dict(interval=30, max_keep_ckpts=1), logger=dict(interval=20))
auto_scale_lr = dict(enable=False, base_batch_size=8)

data_root = 'data/synthetic/det/'
metainfo = dict(classes=('circle', 'square', 'triangle'), palette=[(220, 20, 60), (0, 128, 0), (0, 0, 142)])
img_scale = (128, 128)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PhotoMetricDistortion'),
    dict(type='RandomResize', scale=[(112, 112), (144, 144)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    dataset=dict(
        data_root=data_root, metainfo=metainfo, ann_file='annotations/instances_train.json',
        data_prefix=dict(img='images/train/'), filter_cfg=dict(filter_empty_gt=True, min_size=4),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=2,
    dataset=dict(
        data_root=data_root, metainfo=metainfo, ann_file='annotations/instances_val.json',
        data_prefix=dict(img='images/val/'), pipeline=test_pipeline))
test_dataloader = dict(  # reports; val is LegoDNN's profiling split
    batch_size=8,
    num_workers=2,
    dataset=dict(
        data_root=data_root, metainfo=metainfo, ann_file='annotations/instances_test.json',
        data_prefix=dict(img='images/test/'), pipeline=test_pipeline))
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = dict(ann_file=data_root + 'annotations/instances_test.json')

randomness = dict(seed=0)  # recorded teacher metrics are reproducible runs
