# Faster R-CNN R-18 FPN on PASCAL VOC 2007+2012 (documented, not run here: no dataset download).
_base_ = 'mmdet::pascal_voc/faster-rcnn_r50_fpn_1x_voc0712.py'
model = dict(
    backbone=dict(depth=18, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet18')),
    neck=dict(in_channels=[64, 128, 256, 512]))
# mmdet validates and tests on VOC2007 test (4952 images); here its even images are val (teacher validation;
# LegoDNN profiling) and its odd images test (reports), disjoint halves.
voc07_test_images = 4952
val_dataloader = dict(dataset=dict(indices=list(range(0, voc07_test_images, 2))))
test_dataloader = dict(dataset=dict(indices=list(range(1, voc07_test_images, 2))))
