# SimpleBaseline ResNet-18 on MPII (documented, not run here: no dataset download).
_base_ = 'mmpose::body_2d_keypoint/topdown_heatmap/mpii/td-hm_res50_8xb64-210e_mpii-256x256.py'
model = dict(
    backbone=dict(depth=18, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet18')),
    head=dict(in_channels=512))
