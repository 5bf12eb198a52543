# CPU-scale schedule for the synthetic action teachers (mmaction's sgd_100e, shortened), over mmaction's default
# runtime (which already defines default_hooks, so it is inherited here, not beside this file).
_base_ = ['mmaction::_base_/schedules/sgd_100e.py', 'mmaction::_base_/default_runtime.py']
max_epochs = 30
train_cfg = dict(max_epochs=max_epochs, val_begin=1, val_interval=10)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=60),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[20, 26], gamma=0.1)
]
optim_wrapper = dict(optimizer=dict(lr=0.02))
default_hooks = dict(checkpoint=dict(interval=10, max_keep_ckpts=1))
auto_scale_lr = dict(enable=False, base_batch_size=8)
