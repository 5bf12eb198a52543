# CPU-scale schedule for the synthetic pose teachers (mmpose's 210-epoch Adam schedule, shortened), over mmpose's
# default runtime (which already defines default_hooks, so it is inherited here, not beside this file).
_base_ = 'mmpose::_base_/default_runtime.py'
max_epochs = 40
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=10)
val_cfg = dict()
test_cfg = dict()
optim_wrapper = dict(optimizer=dict(type='Adam', lr=2e-3))
param_scheduler = [
    dict(type='LinearLR', begin=0, end=100, start_factor=0.01, by_epoch=False),
    dict(type='MultiStepLR', begin=0, end=max_epochs, milestones=[30, 37], gamma=0.1, by_epoch=True)
]
auto_scale_lr = dict(base_batch_size=32)
default_hooks = dict(
    logger=dict(interval=20), checkpoint=dict(interval=10, max_keep_ckpts=1, save_best='coco/AP', rule='greater'))
