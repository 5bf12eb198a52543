# Synthetic shapes segmentation, made by `python tools/make_synthetic_data.py --tasks seg`.
# Loaded by mmseg's own BaseSegDataset: masks are single-channel PNGs whose value is the class index, and 0 is
# the real class 'background' (as in VOC/Cityscapes, not ADE20K), so reduce_zero_label=False; 255 never occurs
# in the masks and stays the ignore index (padding).
# Splits: train (teacher and block retraining), val (teacher validation; LegoDNN profiling: accuracy drops and
# best retraining epochs), test (reports: tools/test.py), disjoint draws of the generator.
dataset_type = 'BaseSegDataset'
data_root = 'data/synthetic/seg/'
metainfo = dict(
    classes=('background', 'circle', 'square', 'triangle'),
    palette=[[0, 0, 0], [220, 20, 60], [0, 128, 0], [0, 0, 142]])
crop_size = (128, 128)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=False),
    # No downscaling below the crop: padded pixels (255) crash mmseg 1.2.2's class-weighted CE loss.
    dict(type='RandomResize', scale=(128, 128), ratio_range=(1.0, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.9),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=False),
    dict(type='PackSegInputs')
]
_dataset = dict(
    type=dataset_type,
    data_root=data_root,
    metainfo=metainfo,
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=False)
train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        **_dataset, data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        **_dataset, data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'), pipeline=test_pipeline))
test_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        **_dataset, data_prefix=dict(img_path='img_dir/test', seg_map_path='ann_dir/test'), pipeline=test_pipeline))
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
