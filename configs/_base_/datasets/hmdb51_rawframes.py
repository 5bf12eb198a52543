# HMDB51 split 1 as rawframes, prepared with mmaction's tools/data/hmdb51 scripts (documented, not run here).
dataset_type = 'RawframeDataset'
data_root = 'data/hmdb51/rawframes'
ann_file_train = 'data/hmdb51/hmdb51_train_split_1_rawframes.txt'
ann_file_val = 'data/hmdb51/hmdb51_val_split_1_rawframes.txt'  # mmaction's name for split 1's test list
# Split 1 has no validation list: mmaction validates and tests on its 1530 test clips. Here they are split by
# position into disjoint halves (the list is ordered by class, so both hold every class): even clips are val
# (teacher validation; LegoDNN profiling), odd clips are test (reports).
num_eval_clips = 1530
num_segments = 8
train_pipeline = [
    dict(type='SampleFrames', clip_len=1, frame_interval=1, num_clips=num_segments),
    dict(type='RawFrameDecode'),
    dict(type='Resize', scale=(-1, 256)),
    dict(type='MultiScaleCrop', input_size=224, scales=(1, 0.875, 0.75, 0.66), random_crop=False,
         max_wh_scale_gap=1),
    dict(type='Resize', scale=(224, 224), keep_ratio=False),
    dict(type='Flip', flip_ratio=0.5),
    dict(type='FormatShape', input_format='NCHW'),
    dict(type='PackActionInputs')
]
val_pipeline = [
    dict(type='SampleFrames', clip_len=1, frame_interval=1, num_clips=num_segments, test_mode=True),
    dict(type='RawFrameDecode'),
    dict(type='Resize', scale=(-1, 256)),
    dict(type='CenterCrop', crop_size=224),
    dict(type='FormatShape', input_format='NCHW'),
    dict(type='PackActionInputs')
]
train_dataloader = dict(
    batch_size=32, num_workers=8, persistent_workers=True, sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type=dataset_type, ann_file=ann_file_train, data_prefix=dict(img=data_root),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=32, num_workers=8, persistent_workers=True, sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, ann_file=ann_file_val, data_prefix=dict(img=data_root),
                 pipeline=val_pipeline, test_mode=True, indices=list(range(0, num_eval_clips, 2))))
test_dataloader = dict(
    batch_size=32, num_workers=8, persistent_workers=True, sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, ann_file=ann_file_val, data_prefix=dict(img=data_root),
                 pipeline=val_pipeline, test_mode=True, indices=list(range(1, num_eval_clips, 2))))
val_evaluator = dict(type='AccMetric')
test_evaluator = val_evaluator
