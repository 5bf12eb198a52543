# YOLOv3 with a ResNet-18 backbone on PASCAL VOC 2007+2012 (documented, not run here: no dataset download).
# Data layout: data/VOCdevkit/VOC2007, data/VOCdevkit/VOC2012 as mmdet expects (docs/en/user_guides/dataset_prepare).
_base_ = 'mmdet::yolo/yolov3_d53_8xb8-320-273e_coco.py'

model = dict(
    backbone=dict(
        _delete_=True, type='ResNet', depth=18, num_stages=4, out_indices=(1, 2, 3), frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True), norm_eval=True, style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet18')),
    neck=dict(in_channels=[512, 256, 128], out_channels=[256, 128, 64]),
    bbox_head=dict(num_classes=20, in_channels=[256, 128, 64], out_channels=[512, 256, 128]))

dataset_type = 'VOCDataset'
data_root = 'data/VOCdevkit/'
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='RepeatDataset',
        times=3,
        dataset=dict(
            type='ConcatDataset',
            ignore_keys=['dataset_type'],
            datasets=[
                dict(type=dataset_type, data_root=data_root, ann_file='VOC2007/ImageSets/Main/trainval.txt',
                     data_prefix=dict(sub_data_root='VOC2007/'), filter_cfg=dict(filter_empty_gt=True, min_size=32),
                     pipeline={{_base_.train_pipeline}}),
                dict(type=dataset_type, data_root=data_root, ann_file='VOC2012/ImageSets/Main/trainval.txt',
                     data_prefix=dict(sub_data_root='VOC2012/'), filter_cfg=dict(filter_empty_gt=True, min_size=32),
                     pipeline={{_base_.train_pipeline}}),
            ])))
# mmdet validates and tests on VOC2007 test (4952 images); here its even images are val (teacher validation;
# LegoDNN profiling) and its odd images test (reports), disjoint halves.
voc07_test_images = 4952
val_dataloader = dict(
    dataset=dict(
        _delete_=True, type=dataset_type, data_root=data_root, ann_file='VOC2007/ImageSets/Main/test.txt',
        data_prefix=dict(sub_data_root='VOC2007/'), test_mode=True, pipeline={{_base_.test_pipeline}},
        indices=list(range(0, voc07_test_images, 2))))
test_dataloader = dict(
    dataset=dict(
        _delete_=True, type=dataset_type, data_root=data_root, ann_file='VOC2007/ImageSets/Main/test.txt',
        data_prefix=dict(sub_data_root='VOC2007/'), test_mode=True, pipeline={{_base_.test_pipeline}},
        indices=list(range(1, voc07_test_images, 2))))
val_evaluator = dict(_delete_=True, type='VOCMetric', metric='mAP', eval_mode='11points')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=30, val_interval=5)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', by_epoch=True, milestones=[24, 28], gamma=0.1)
]
