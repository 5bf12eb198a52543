# LegoDNN over the simplebaseline_res18_synthpose-128x128 teacher: blocks, descendants, retraining, profiling -> work_dir/bank.
# Teacher first: python tools/train.py configs/pose/simplebaseline/simplebaseline_res18_synthpose-128x128.py
# Then:          python tools/train.py configs/pose/simplebaseline/simplebaseline_res18_legodnn_synthpose-128x128.py
_base_ = ['./simplebaseline_res18_synthpose-128x128.py']
custom_imports = dict(imports=['mmlego'], allow_failed_imports=False)

load_from = 'work_dirs/simplebaseline_res18_synthpose-128x128/epoch_40.pth'  # the teacher
model = dict(_delete_=True, type='mmlego.LegoDNN', architecture={{_base_.model}})
train_cfg = dict(
    _delete_=True, type='mmlego.LegoDNNPipelineLoop', sparsities=[0.0, 0.2, 0.4, 0.6, 0.8], max_ratio=0.125,
    retrain=dict(epochs=2, lr=1e-3))
