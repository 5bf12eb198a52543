# LegoDNN over the deeppose_res18_mpii-256x256 teacher: blocks, descendants, retraining, profiling -> work_dir/bank.
# Teacher first: python tools/train.py configs/pose/deeppose/deeppose_res18_mpii-256x256.py
# Then:          python tools/train.py configs/pose/deeppose/deeppose_res18_legodnn_mpii-256x256.py  (real dataset: see the teacher config for data preparation)
_base_ = ['./deeppose_res18_mpii-256x256.py']
custom_imports = dict(imports=['mmlego'], allow_failed_imports=False)

load_from = 'work_dirs/deeppose_res18_mpii-256x256/epoch_210.pth'  # the teacher
model = dict(_delete_=True, type='mmlego.LegoDNN', architecture={{_base_.model}})
train_cfg = dict(
    _delete_=True, type='mmlego.LegoDNNPipelineLoop', sparsities=[0.0, 0.2, 0.4, 0.6, 0.8], max_ratio=0.125,
    retrain=dict(epochs=5, lr=1e-3))
