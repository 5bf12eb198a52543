# CPU-scale schedule for the synthetic segmentation teachers: mmseg's schedule_20k shortened to 600 iterations.
_base_ = 'mmseg::_base_/schedules/schedule_20k.py'
max_iters = 600
# AdamW converges from scratch (no pretrained backbone here) far faster than the SGD of mmseg's schedule.
optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=1e-3, weight_decay=0.01))
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=max_iters, by_epoch=False)]
train_cfg = dict(max_iters=max_iters, val_interval=200)
default_hooks = dict(
    logger=dict(interval=20), checkpoint=dict(interval=200, max_keep_ckpts=1, save_best='mIoU', rule='greater'))
