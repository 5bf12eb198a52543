# DeepPose ResNet-18 on MPII (documented, not run here: no dataset download).
_base_ = 'mmpose::body_2d_keypoint/topdown_regression/mpii/td-reg_res50_8xb64-210e_mpii-256x256.py'
model = dict(
    backbone=dict(depth=18, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet18')),
    head=dict(in_channels=512))
# mmpose validates and tests on mpii_val.json (2958 people; MPII's test labels are not public); here its even
# instances are val (teacher validation; LegoDNN profiling) and its odd instances test (reports), disjoint halves.
mpii_val_instances = 2958
val_dataloader = dict(dataset=dict(indices=list(range(0, mpii_val_instances, 2))))
test_dataloader = dict(dataset=dict(indices=list(range(1, mpii_val_instances, 2))))
