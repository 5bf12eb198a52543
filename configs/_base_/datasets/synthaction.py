# Synthetic moving-shapes clips as rawframes, made by `python tools/make_synthetic_data.py --tasks action`.
# Loaded by mmaction's own RawframeDataset (list lines: `<clip_dir> <num_frames> <label>`).
# Splits: train (teacher and block retraining), val (teacher validation; LegoDNN profiling: accuracy drops and
# best retraining epochs), test (reports: tools/test.py), disjoint draws of the generator.
dataset_type = 'RawframeDataset'
data_root = 'data/synthetic/action/'
num_segments = 8
train_pipeline = [
    dict(type='SampleFrames', clip_len=1, frame_interval=1, num_clips=num_segments),
    dict(type='RawFrameDecode'),
    dict(type='Resize', scale=(64, 64), keep_ratio=False),
    dict(type='FormatShape', input_format='NCHW'),
    dict(type='PackActionInputs')
]
val_pipeline = [
    dict(type='SampleFrames', clip_len=1, frame_interval=1, num_clips=num_segments, test_mode=True),
    dict(type='RawFrameDecode'),
    dict(type='Resize', scale=(64, 64), keep_ratio=False),
    dict(type='FormatShape', input_format='NCHW'),
    dict(type='PackActionInputs')
]
_dataset = dict(
    type=dataset_type, data_prefix=dict(img=data_root + 'rawframes'), filename_tmpl='img_{:05}.jpg', start_index=1)
train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(**_dataset, ann_file=data_root + 'train_list.txt', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(**_dataset, ann_file=data_root + 'val_list.txt', pipeline=val_pipeline, test_mode=True))
test_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(**_dataset, ann_file=data_root + 'test_list.txt', pipeline=val_pipeline, test_mode=True))
val_evaluator = dict(type='AccMetric')
test_evaluator = val_evaluator
