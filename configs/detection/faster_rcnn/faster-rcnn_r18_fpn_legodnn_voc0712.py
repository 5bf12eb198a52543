# LegoDNN over the faster-rcnn_r18_fpn_voc0712 teacher: blocks, descendants, retraining, profiling -> work_dir/bank.
# Teacher first: python tools/train.py configs/detection/faster_rcnn/faster-rcnn_r18_fpn_voc0712.py
# Then:          python tools/train.py configs/detection/faster_rcnn/faster-rcnn_r18_fpn_legodnn_voc0712.py  (real dataset: see the teacher config for data preparation)
# Scaled:        python tools/test.py configs/detection/faster_rcnn/faster-rcnn_r18_fpn_legodnn_voc0712.py work_dirs/faster-rcnn_r18_fpn_voc0712/epoch_4.pth  (at the budget of its OnlineScalingHook)
_base_ = ['./faster-rcnn_r18_fpn_voc0712.py', '../../_base_/budgets/teacher_60pct_memory_80pct_latency.py']
custom_imports = dict(imports=['mmlego'], allow_failed_imports=False)
runner_type = 'mmlego.LegoRunner'  # any package's tools/train.py and test.py build it
custom_hooks = [{{_base_.legodnn_scaling_hook}}]  # online scaling at test time (budget: _base_)

load_from = 'work_dirs/faster-rcnn_r18_fpn_voc0712/epoch_4.pth'  # the teacher
model = dict(_delete_=True, type='mmlego.LegoDNN', architecture={{_base_.model}}, bank='{work_dir}/bank')
# 0.9 on top, as the synthetic config (README, "How small can a configuration get?").
train_cfg = dict(
    _delete_=True, type='mmlego.LegoDNNPipelineLoop', sparsities=[0.0, 0.2, 0.4, 0.6, 0.9], max_ratio=0.125,
    retrain=dict(epochs=2, lr=1e-3))
