# DeepLabv3 ResNetV1c-18 on PASCAL VOC 2012 + SBD aug (documented, not run here: no dataset download).
_base_ = 'mmseg::deeplabv3/deeplabv3_r50-d8_4xb4-20k_voc12aug-512x512.py'
model = dict(
    pretrained='open-mmlab://resnet18_v1c',
    backbone=dict(depth=18),
    decode_head=dict(in_channels=512, channels=128),
    auxiliary_head=dict(in_channels=256, channels=64))
# mmseg validates and tests on VOC2012 val (1449 images); here its even images are val (teacher validation;
# LegoDNN profiling) and its odd images test (reports), disjoint halves.
voc12_val_images = 1449
val_dataloader = dict(dataset=dict(indices=list(range(0, voc12_val_images, 2))))
test_dataloader = dict(dataset=dict(indices=list(range(1, voc12_val_images, 2))))
