# CPU-scale schedule for the quarter-width synthetic segmentation teachers: 3000 iterations (a quarter-width
# ResNetV1c-18 iteration took ~0.13 s against ~0.9 s at full width, so 3000 take less time than 600 did).
_base_ = './synthseg_600it.py'
max_iters = 3000
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=max_iters, by_epoch=False)]
train_cfg = dict(max_iters=max_iters, val_interval=1000)
default_hooks = dict(checkpoint=dict(interval=1000))
