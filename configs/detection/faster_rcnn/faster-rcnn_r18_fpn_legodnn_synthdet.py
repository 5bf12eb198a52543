# LegoDNN over the faster-rcnn_r18_fpn_synthdet teacher: blocks, descendants, retraining, profiling -> work_dir/bank.
# Teacher first: python tools/train.py configs/detection/faster_rcnn/faster-rcnn_r18_fpn_synthdet.py
# Then:          python tools/train.py configs/detection/faster_rcnn/faster-rcnn_r18_fpn_legodnn_synthdet.py
# Scaled:        python tools/test.py configs/detection/faster_rcnn/faster-rcnn_r18_fpn_legodnn_synthdet.py work_dirs/faster-rcnn_r18_fpn_synthdet/epoch_24.pth  (at the budget of its OnlineScalingHook)
_base_ = ['./faster-rcnn_r18_fpn_synthdet.py', '../../_base_/budgets/teacher_60pct_memory_80pct_latency.py']
custom_imports = dict(imports=['mmlego'], allow_failed_imports=False)
runner_type = 'mmlego.LegoRunner'  # any package's tools/train.py and test.py build it
custom_hooks = [{{_base_.legodnn_scaling_hook}}]  # online scaling at test time (budget: _base_)

load_from = 'work_dirs/faster-rcnn_r18_fpn_synthdet/epoch_24.pth'  # the teacher
model = dict(_delete_=True, type='mmlego.LegoDNN', architecture={{_base_.model}}, bank='{work_dir}/bank')
# 0.9 on top, not 0.8: the backbone's BasicBlocks are pruned on one side only (see the FCN config) and the stem, FPN
# and RPN stay in the frame, so 0.8 stopped at 25% of the teacher's bytes and 0.9 reaches 16% (README, "How small can
# a configuration get?"; B4 met with it).
train_cfg = dict(
    _delete_=True, type='mmlego.LegoDNNPipelineLoop', sparsities=[0.0, 0.2, 0.4, 0.6, 0.9], max_ratio=0.125,
    retrain=dict(epochs=6, lr=1e-3))
