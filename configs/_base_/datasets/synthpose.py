# Synthetic stick figures in COCO keypoint format (17 COCO keypoints, person boxes), made by
# `python tools/make_synthetic_data.py --tasks pose`. Loaded by mmpose's own top-down CocoDataset.
# Pipelines are left to each model config: they depend on its codec.
# Splits: train (teacher and block retraining), val (teacher validation; LegoDNN profiling: accuracy drops and
# best retraining epochs), test (reports: tools/test.py), disjoint draws of the generator.
dataset_type = 'CocoDataset'
data_mode = 'topdown'
data_root = 'data/synthetic/pose/'
train_dataloader = dict(
    batch_size=32,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type, data_root=data_root, data_mode=data_mode,
        ann_file='annotations/person_keypoints_train.json', data_prefix=dict(img='images/train/')))
val_dataloader = dict(
    batch_size=32,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False, round_up=False),
    dataset=dict(
        type=dataset_type, data_root=data_root, data_mode=data_mode,
        ann_file='annotations/person_keypoints_val.json', data_prefix=dict(img='images/val/'), test_mode=True))
test_dataloader = dict(
    batch_size=32,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False, round_up=False),
    dataset=dict(
        type=dataset_type, data_root=data_root, data_mode=data_mode,
        ann_file='annotations/person_keypoints_test.json', data_prefix=dict(img='images/test/'), test_mode=True))
# COCO keypoint AP (OKS) on ground-truth boxes, and PCK@0.05 of the box size.
val_evaluator = [
    dict(type='CocoMetric', ann_file=data_root + 'annotations/person_keypoints_val.json'),
    dict(type='PCKAccuracy', thr=0.05)
]
test_evaluator = [
    dict(type='CocoMetric', ann_file=data_root + 'annotations/person_keypoints_test.json'),
    dict(type='PCKAccuracy', thr=0.05)
]
