# LegoDNN over the deeplabv3_r18-d8_voc12aug-512x512 teacher: blocks, descendants, retraining, profiling -> work_dir/bank.
# Teacher first: python tools/train.py configs/segmentation/deeplabv3/deeplabv3_r18-d8_voc12aug-512x512.py
# Then:          python tools/train.py configs/segmentation/deeplabv3/deeplabv3_r18-d8_legodnn_voc12aug-512x512.py  (real dataset: see the teacher config for data preparation)
# Scaled:        python tools/test.py configs/segmentation/deeplabv3/deeplabv3_r18-d8_legodnn_voc12aug-512x512.py work_dirs/deeplabv3_r18-d8_voc12aug-512x512/iter_20000.pth  (at the budget of its OnlineScalingHook)
_base_ = ['./deeplabv3_r18-d8_voc12aug-512x512.py', '../../_base_/budgets/teacher_60pct_memory_80pct_latency.py']
custom_imports = dict(imports=['mmlego'], allow_failed_imports=False)
runner_type = 'mmlego.LegoRunner'  # any package's tools/train.py and test.py build it
custom_hooks = [{{_base_.legodnn_scaling_hook}}]  # online scaling at test time (budget: _base_)

load_from = 'work_dirs/deeplabv3_r18-d8_voc12aug-512x512/iter_20000.pth'  # the teacher
model = dict(_delete_=True, type='mmlego.LegoDNN', architecture={{_base_.model}}, bank='{work_dir}/bank')
# max_ratio 0.25: the ASPP (image pool and four dilated branches concatenated, then the bottleneck and classifier)
# is one fan-out block of 7 of the path's 29 convs, over 0.125's cap of 3; without it the branches stay in the frame
# and the smallest configuration keeps 32% of the teacher's bytes. 0.85 on top, not 0.8, as for FCN: a BasicBlock
# ResNet's blocks keep 1 - s of their weights (README, "How small can a configuration get?").
train_cfg = dict(
    _delete_=True, type='mmlego.LegoDNNPipelineLoop', sparsities=[0.0, 0.2, 0.4, 0.6, 0.85], max_ratio=0.25,
    retrain=dict(epochs=5, lr=1e-3))
