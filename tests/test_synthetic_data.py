"""Tests of the synthetic dataset generator and its CLI.

The important part: one sample of each dataset goes through the OpenMMLab
package's own dataset class and a real pipeline.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmlego.datasets import synthetic
from mmlego.datasets.synthetic import (ACTION_CLASSES, DET_CLASSES,
                                       KEYPOINT_NAMES, SEG_CLASSES,
                                       SEG_PALETTE, generate_all)

REPO = Path(__file__).resolve().parents[1]
TINY = dict(num_train=4, num_val=2)
# The generators' last commit before the test split was added (FORMAT_VERSION 4): train and val must still be
# byte-identical to what it wrote, so that teachers trained on them stay valid.
PRE_TEST_SPLIT_COMMIT = '774999e0e6625a333527d6b655f9f4c424f42dd1'
GENERATOR_FILES = ('__init__', 'action', 'detection', 'pose', 'segmentation', 'shapes')


def _load_cli():
    spec = importlib.util.spec_from_file_location(
        'make_synthetic_data', REPO / 'tools' / 'make_synthetic_data.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp('synthetic')
    generate_all(str(out), seed=0, **TINY)
    return out


def _scoped(scope: str):
    from mmengine.registry import DefaultScope
    return DefaultScope.overwrite_default_scope(scope)


# ----------------------------------------------------------------- layout


def test_detection_layout(root: Path) -> None:
    det = root / 'det'
    assert sorted(os.listdir(det / 'images' / 'train')) == [
        f'{i:06d}.jpg' for i in range(4)]
    coco = json.loads((det / 'annotations' / 'instances_val.json').read_text())
    assert [c['name'] for c in coco['categories']] == list(DET_CLASSES)
    assert [im['file_name'] for im in coco['images']] == ['000000.jpg',
                                                          '000001.jpg']
    assert coco['annotations']
    for ann in coco['annotations']:
        x, y, w, h = ann['bbox']
        assert 1 <= ann['category_id'] <= 3 and ann['iscrowd'] == 0
        assert 0 <= x and 0 <= y and x + w <= 128 and y + h <= 128
        assert w > 4 and h > 4 and ann['area'] > 0
        assert len(ann['segmentation'][0]) >= 6
    meta = json.loads((det / 'meta.json').read_text())
    assert meta['params'] == dict(seed=0, num_train=4, num_val=2, num_test=2,
                                  img_size=128)


def test_segmentation_layout(root: Path) -> None:
    import cv2
    seg = root / 'seg'
    for split, n in (('train', 4), ('val', 2)):
        names = sorted(os.listdir(seg / 'ann_dir' / split))
        assert names == [f'{i:06d}.png' for i in range(n)]
        for name in names:
            label = cv2.imread(str(seg / 'ann_dir' / split / name),
                               cv2.IMREAD_UNCHANGED)
            assert label.dtype == np.uint8 and label.shape == (128, 128)
            assert set(np.unique(label)) <= {0, 1, 2, 3}
            assert (seg / 'img_dir' / split / name.replace('.png', '.jpg')
                    ).is_file()


def test_pose_layout(root: Path) -> None:
    coco = json.loads((root / 'pose' / 'annotations' /
                       'person_keypoints_train.json').read_text())
    (cat, ) = coco['categories']
    assert cat['keypoints'] == list(KEYPOINT_NAMES)
    assert len(cat['skeleton']) == 19
    assert len(coco['images']) == 4
    assert 4 <= len(coco['annotations']) <= 8
    for ann in coco['annotations']:
        kpts = np.array(ann['keypoints']).reshape(17, 3)
        assert set(kpts[:, 2]) <= {1, 2}
        assert ann['num_keypoints'] == 17
        x, y, w, h = ann['bbox']
        assert 0 <= x and 0 <= y and x + w <= 160 and y + h <= 160


def test_action_layout(root: Path) -> None:
    action = root / 'action'
    assert (action / 'classes.txt').read_text().split() == list(
        ACTION_CLASSES)
    lines = (action / 'train_list.txt').read_text().splitlines()
    assert lines[0] == 'train_000000 16 0'
    assert [int(line.split()[2]) for line in lines] == [0, 1, 2, 3]
    frames = sorted(os.listdir(action / 'rawframes' / 'val_000001'))
    assert frames == [f'img_{i:05d}.jpg' for i in range(1, 17)]


# ----------------------------------------------------------- determinism


def test_deterministic(tmp_path: Path, root: Path) -> None:
    generate_all(str(tmp_path / 'a'), seed=0, **TINY)
    assert _tree(tmp_path / 'a') == _tree(root)
    generate_all(str(tmp_path / 'b'), tasks=['det'], seed=1, **TINY)
    assert (_tree(tmp_path / 'b' / 'det') != _tree(root / 'det'))


def _split_of(rel: str) -> str | None:
    """``'train'``, ``'val'`` or ``'test'`` for a data file of any task (None: meta.json, classes.txt)."""
    parts = rel.replace(os.sep, '/').split('/')
    name = parts[-1]
    for split in synthetic.SPLITS:
        if (split in parts[1:-1]  # images/<split>/, img_dir/<split>/, ann_dir/<split>/
                or parts[-2].startswith(f'{split}_')  # action/rawframes/<split>_000000/img_00001.jpg
                or name in (f'instances_{split}.json', f'person_keypoints_{split}.json', f'{split}_list.txt')):
            return split
    return None


def test_test_split_layout_and_size(root: Path) -> None:
    tree = _tree(root)
    by_split = {split: [k for k in tree if _split_of(k) == split] for split in synthetic.SPLITS}
    assert all(by_split.values())
    for task in synthetic.TASKS:
        meta = json.loads((root / task / 'meta.json').read_text())
        assert meta['format_version'] == synthetic.FORMAT_VERSION == 5
        assert meta['params']['num_test'] == meta['params']['num_val'] == 2
        assert set(meta['counts']) == {'train', 'val', 'test'}
        files = {split: [k for k in by_split[split] if k.startswith(task + os.sep)] for split in synthetic.SPLITS}
        assert len(files['test']) == len(files['val']) > 0, task  # as large as val, file for file
    coco = json.loads((root / 'det' / 'annotations' / 'instances_test.json').read_text())
    assert [im['file_name'] for im in coco['images']] == ['000000.jpg', '000001.jpg'] and coco['annotations']
    assert sorted(os.listdir(root / 'seg' / 'ann_dir' / 'test')) == ['000000.png', '000001.png']
    kpts = json.loads((root / 'pose' / 'annotations' / 'person_keypoints_test.json').read_text())
    assert len(kpts['images']) == 2 and kpts['annotations']
    lines = (root / 'action' / 'test_list.txt').read_text().splitlines()
    assert lines == ['test_000000 16 0', 'test_000001 16 1']
    assert (root / 'action' / 'rawframes' / 'test_000001' / 'img_00016.jpg').is_file()


def test_test_split_is_disjoint_from_train_and_val(root: Path) -> None:
    """No test image (or label map) is a copy of any train or val one: the split has seeds of its own."""
    tree = _tree(root)
    digests = {split: {hashlib.sha256(data).hexdigest() for rel, data in tree.items()
                       if _split_of(rel) == split and rel.endswith(('.jpg', '.png'))} for split in synthetic.SPLITS}
    assert digests['test'] and not digests['test'] & (digests['train'] | digests['val'])
    for task, ann in (('det', 'instances'), ('pose', 'person_keypoints')):
        files = {split: json.loads((root / task / 'annotations' / f'{ann}_{split}.json').read_text())
                 for split in synthetic.SPLITS}
        boxes = {split: {tuple(a['bbox']) for a in f['annotations']} for split, f in files.items()}
        assert not boxes['test'] & (boxes['train'] | boxes['val']), task


def test_num_test_knob(tmp_path: Path) -> None:
    generate_all(str(tmp_path), tasks=['det', 'action'], seed=0, num_train=2, num_val=1, num_test=3)
    coco = json.loads((tmp_path / 'det' / 'annotations' / 'instances_test.json').read_text())
    assert len(coco['images']) == 3
    assert len((tmp_path / 'action' / 'test_list.txt').read_text().splitlines()) == 3
    with pytest.raises(ValueError, match='--num-test'):
        synthetic.resolve_params('seg', num_test=0)


def _old_generators(tmp_path: Path):
    """The generator package as of :data:`PRE_TEST_SPLIT_COMMIT`, imported from a temporary copy."""
    if shutil.which('git') is None:
        pytest.skip('git is not available')
    pkg = tmp_path / 'old_synthetic'
    pkg.mkdir()
    for name in GENERATOR_FILES:
        proc = subprocess.run(['git', '-C', str(REPO), 'show',
                               f'{PRE_TEST_SPLIT_COMMIT}:mmlego/datasets/synthetic/{name}.py'],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f'commit {PRE_TEST_SPLIT_COMMIT[:8]} is not in this checkout: {proc.stderr.strip()}')
        (pkg / f'{name}.py').write_text(proc.stdout)
    spec = importlib.util.spec_from_file_location('_old_synthetic', pkg / '__init__.py',
                                                  submodule_search_locations=[str(pkg)])
    module = importlib.util.module_from_spec(spec)
    sys.modules['_old_synthetic'] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules['_old_synthetic']
    assert module.FORMAT_VERSION == 4
    return module


def test_train_and_val_are_byte_identical_to_the_generator_before_the_test_split(tmp_path: Path,
                                                                                 root: Path) -> None:
    old = _old_generators(tmp_path)
    old.generate_all(str(tmp_path / 'old'), seed=0, **TINY)
    before, after = _tree(tmp_path / 'old'), _tree(root)
    data = [rel for rel in before if not rel.endswith('meta.json')]
    assert len(data) > 40 and {_split_of(rel) for rel in data} == {'train', 'val', None}  # None: classes.txt
    assert {rel: after.get(rel) for rel in data} == {rel: before[rel] for rel in data}
    assert {rel for rel in after if rel not in before} == {rel for rel in after if _split_of(rel) == 'test'}
    for task in synthetic.TASKS:  # meta.json: same knobs and counts, plus the test split
        old_meta, new_meta = (json.loads(t[f'{task}{os.sep}meta.json']) for t in (before, after))
        assert new_meta['params'] == dict(old_meta['params'], num_test=old_meta['params']['num_val'])
        assert {k: v for k, v in new_meta['counts'].items() if k != 'test'} == old_meta['counts']
        assert new_meta.get('pixel_frequency') == old_meta.get('pixel_frequency')


def test_api_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match='unknown task'):
        generate_all(str(tmp_path), tasks=['nope'])
    with pytest.raises(ValueError, match='frames'):
        synthetic.resolve_params('action', frames=2)
    with pytest.raises(ValueError, match='--img-size'):
        generate_all(str(tmp_path), img_size=31)
    assert not os.listdir(tmp_path)


# ------------------------------------------------------------------- CLI


def test_cli_skip_and_force(tmp_path: Path) -> None:
    cli = _load_cli()
    args = ['--out', str(tmp_path), '--tasks', 'det', 'action',
            '--num-train', '2', '--num-val', '1', '--quiet']
    assert cli.build_parser().parse_args(args + ['--num-test', '3']).num_test == 3
    assert cli.main(args) == 0
    det_meta = tmp_path / 'det' / 'meta.json'
    ino = (tmp_path / 'det').stat().st_ino, det_meta.stat().st_mtime_ns
    assert cli.main(args) == 0  # up to date: untouched
    assert ((tmp_path / 'det').stat().st_ino,
            det_meta.stat().st_mtime_ns) == ino
    before = _tree(tmp_path / 'det')
    assert cli.main(args + ['--force']) == 0
    assert (tmp_path / 'det').stat().st_ino != ino[0]
    assert _tree(tmp_path / 'det') == before
    assert cli.main(args[:-1] + ['--seed', '3']) == 0  # new params: regen
    assert json.loads(det_meta.read_text())['params']['seed'] == 3
    assert sorted(os.listdir(tmp_path)) == ['action', 'det']  # no tmp left


def test_cli_progress(tmp_path: Path, capsys) -> None:
    cli = _load_cli()
    assert cli.main(['--out', str(tmp_path), '--tasks', 'seg',
                     '--num-train', '1', '--num-val', '1']) == 0
    assert '[seg]' in capsys.readouterr().out


@pytest.mark.parametrize('argv, hint', [
    (['--num-train', '0'], '--num-train'),
    (['--num-val', '-1'], '--num-val'),
    (['--img-size', '16'], '--img-size'),
    (['--tasks', 'det', 'foo'], 'choose from'),
])
def test_cli_bad_args(tmp_path: Path, capsys, argv, hint) -> None:
    cli = _load_cli()
    with pytest.raises(SystemExit) as exc:
        cli.main(['--out', str(tmp_path / 'out')] + argv)
    assert exc.value.code == 2
    assert hint in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()


# ------------------------------------------ loading with OpenMMLab classes


def test_mmdet_coco_dataset(root: Path) -> None:
    pytest.importorskip('mmdet')
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    cfg = dict(
        type='CocoDataset', data_root=str(root / 'det'),
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='images/train/'),
        metainfo=dict(classes=DET_CLASSES),
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations', with_bbox=True),
            dict(type='Resize', scale=(128, 128), keep_ratio=True),
            dict(type='PackDetInputs')])
    with _scoped('mmdet'):
        dataset = DATASETS.build(cfg)
        item = dataset[0]
    assert len(dataset) == 4
    assert tuple(item['inputs'].shape) == (3, 128, 128)
    gt = item['data_samples'].gt_instances
    boxes = gt.bboxes.tensor if hasattr(gt.bboxes, 'tensor') else gt.bboxes
    assert len(gt.labels) >= 1 and len(boxes) == len(gt.labels)
    assert int(gt.labels.min()) >= 0 and int(gt.labels.max()) <= 2
    assert float(boxes.min()) >= 0 and float(boxes.max()) <= 128


def test_mmseg_dataset(root: Path) -> None:
    pytest.importorskip('mmseg')
    from mmseg.registry import DATASETS
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    cfg = dict(
        type='BaseSegDataset', data_root=str(root / 'seg'),
        data_prefix=dict(img_path='img_dir/train',
                         seg_map_path='ann_dir/train'),
        img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=False,
        metainfo=dict(classes=SEG_CLASSES, palette=SEG_PALETTE),
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='LoadAnnotations'),
                  dict(type='PackSegInputs')])
    with _scoped('mmseg'):
        dataset = DATASETS.build(cfg)
        item = dataset[0]
    assert len(dataset) == 4
    label = item['data_samples'].gt_sem_seg.data
    assert tuple(label.shape) == (1, 128, 128)
    values = set(label.unique().tolist())
    assert values <= {0, 1, 2, 3} and len(values) >= 2


def test_mmpose_dataset(root: Path) -> None:
    pytest.importorskip('mmpose')
    from mmpose.registry import DATASETS
    from mmpose.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    codec = dict(type='MSRAHeatmap', input_size=(128, 128),
                 heatmap_size=(32, 32), sigma=2)
    cfg = dict(
        type='CocoDataset', data_root=str(root / 'pose'), data_mode='topdown',
        ann_file='annotations/person_keypoints_train.json',
        data_prefix=dict(img='images/train/'),
        pipeline=[dict(type='LoadImage'),
                  dict(type='GetBBoxCenterScale'),
                  dict(type='TopdownAffine', input_size=(128, 128)),
                  dict(type='GenerateTarget', encoder=codec),
                  dict(type='PackPoseInputs')])
    with _scoped('mmpose'):
        dataset = DATASETS.build(cfg)
        item = dataset[0]
    assert dataset.metainfo['num_keypoints'] == 17
    assert tuple(item['inputs'].shape) == (3, 128, 128)
    sample = item['data_samples']
    assert sample.gt_instances.keypoints.shape[-2:] == (17, 2)
    heatmaps = sample.gt_fields.heatmaps
    assert tuple(heatmaps.shape) == (17, 32, 32)
    assert float(heatmaps.max()) > 0.5  # targets land inside the crop


def test_mmaction_rawframe_dataset(root: Path) -> None:
    pytest.importorskip('mmaction')
    # mmaction.utils.register_all_modules imports mmaction.models, which is
    # broken in the 1.2.0 wheel; the datasets package registers what we need.
    import mmaction.datasets  # noqa: F401
    from mmaction.registry import DATASETS
    action = root / 'action'
    cfg = dict(
        type='RawframeDataset', ann_file=str(action / 'train_list.txt'),
        data_prefix=dict(img=str(action / 'rawframes')),
        filename_tmpl='img_{:05}.jpg',
        pipeline=[dict(type='SampleFrames', clip_len=1, frame_interval=1,
                       num_clips=3),
                  dict(type='RawFrameDecode'),
                  dict(type='Resize', scale=(-1, 64)),
                  dict(type='FormatShape', input_format='NCHW'),
                  dict(type='PackActionInputs')])
    with _scoped('mmaction'):
        dataset = DATASETS.build(cfg)
        item = dataset[1]
    assert len(dataset) == 4
    assert tuple(item['inputs'].shape) == (3, 3, 64, 64)
    assert int(item['data_samples'].gt_label) == 1
