# LegoDNN over the fcn_r18-d8_synthseg teacher: blocks, descendants, retraining, profiling -> work_dir/bank.
# Teacher first: python tools/train.py configs/segmentation/fcn/fcn_r18-d8_synthseg.py
# Then:          python tools/train.py configs/segmentation/fcn/fcn_r18-d8_legodnn_synthseg.py
_base_ = ['./fcn_r18-d8_synthseg.py']
custom_imports = dict(imports=['mmlego'], allow_failed_imports=False)

load_from = 'work_dirs/fcn_r18-d8_synthseg/iter_600.pth'  # the teacher
model = dict(_delete_=True, type='mmlego.LegoDNN', architecture={{_base_.model}})
train_cfg = dict(
    _delete_=True, type='mmlego.LegoDNNPipelineLoop', sparsities=[0.0, 0.2, 0.4, 0.6, 0.8], max_ratio=0.125,
    retrain=dict(epochs=2, lr=1e-3))
