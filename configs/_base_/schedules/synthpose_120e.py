# CPU-scale schedule for the quarter-width synthetic pose teachers: mmpose's Adam schedule, shortened to 120 epochs
# (SimpleBaseline: 120 quarter-width epochs took 7.1 min, 40 full-width ones 8.5 min, validation included; the
# teacher gets close to converged: val AP 0.83 / 0.88 / 0.92 after 40 / 80 / 120 epochs).
_base_ = './synthpose_40e.py'
max_epochs = 120
train_cfg = dict(max_epochs=max_epochs, val_interval=40)
param_scheduler = [
    dict(type='LinearLR', begin=0, end=100, start_factor=0.01, by_epoch=False),
    dict(type='MultiStepLR', begin=0, end=max_epochs, milestones=[90, 111], gamma=0.1, by_epoch=True)
]
default_hooks = dict(checkpoint=dict(interval=40))
