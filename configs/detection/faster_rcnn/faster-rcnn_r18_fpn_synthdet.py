# Faster R-CNN teacher at CPU scale: ResNet-18 + FPN on 128x128 synthetic shapes, at a quarter of ResNet-18's width
# (16-32-64-128 channels; FPN, RPN and RoI head at 32 channels, box head fc 128) so that capacity matters on this
# data (README, "Is capacity needed on this data?"); the VOC config keeps the full width.
# Train: python tools/train.py configs/detection/faster_rcnn/faster-rcnn_r18_fpn_synthdet.py
_base_ = [
    'mmdet::_base_/models/faster-rcnn_r50_fpn.py', '../../_base_/datasets/synthdet.py',
    'mmdet::_base_/schedules/schedule_1x.py', 'mmdet::_base_/default_runtime.py'
]
model = dict(
    # zero_init_residual=False: mmdet's ResNet zero-inits every block's last BN (bn2) when init_cfg is None; in
    # 600 iterations those gammas stayed ~0.01, so the residual branches were unused and pruning them was free.
    backbone=dict(depth=18, base_channels=16, frozen_stages=-1, norm_eval=False, zero_init_residual=False,
                  init_cfg=None),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=32),
    rpn_head=dict(
        in_channels=32, feat_channels=32,
        anchor_generator=dict(scales=[4], ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=32),
        bbox_head=dict(in_channels=32, fc_out_channels=128, num_classes=3)),
    train_cfg=dict(rpn=dict(sampler=dict(num=128)), rpn_proposal=dict(nms_pre=1000, max_per_img=300),
                   rcnn=dict(sampler=dict(num=128))),
    # score_thr 0.001 (COCO-eval practice; mmdet's default is 0.05): a weak model, e.g. the pruned one in
    # bench/capacity_check.py, still yields detections and a real mAP instead of an empty result set.
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100), rcnn=dict(score_thr=0.001, max_per_img=20)))

train_cfg = dict(max_epochs=24, val_interval=8)
optim_wrapper = dict(optimizer=dict(lr=0.02))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=200),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=24, milestones=[18, 22], gamma=0.1)
]
default_hooks = dict(checkpoint=dict(interval=8, max_keep_ckpts=1), logger=dict(interval=20))
auto_scale_lr = dict(enable=False, base_batch_size=8)

randomness = dict(seed=0)  # recorded teacher metrics are reproducible runs
