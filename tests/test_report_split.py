"""Profiling and reporting use disjoint data: the configs profile on val and report on test, and the LegoDNN
pipeline never reads the test split."""
import re
import shutil

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

from .conftest import CONFIGS, REAL_DATASET_CONFIGS, TEACHER_CONFIGS, run_tool
from .test_configs import _lego_path
from .test_pipeline import LEGO_CONFIGS, teacher_checkpoint, tiny_pipeline_options

SPLIT = re.compile(r'(?:^|/)(train|val|test)(?:_\d+)?(?:/|\.|$)')


def _splits(dataset) -> set:
    """The synthetic splits the files of a built dataset come from (images, masks, clip folders)."""
    found = set()
    for info in (dataset.get_data_info(i) for i in range(len(dataset))):
        for value in info.values():
            if isinstance(value, str) and 'synthetic' in value:
                found.update(SPLIT.findall(value.split('synthetic/', 1)[1]))
    return found


def _ann_files(evaluator) -> set:
    return {e.get('ann_file') for e in (evaluator if isinstance(evaluator, list) else [evaluator])} - {None}


@pytest.mark.parametrize('path', sorted(set(TEACHER_CONFIGS.values()) | set(LEGO_CONFIGS.values())))
def test_synthetic_configs_profile_on_val_and_report_on_test(path, workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    cfg = Config.fromfile(CONFIGS / path)
    init_default_scope(cfg.default_scope)
    from mmengine.registry import DATASETS
    val = DATASETS.build(cfg.val_dataloader.dataset)
    test = DATASETS.build(cfg.test_dataloader.dataset)
    assert len(val) > 0 and len(test) > 0
    assert _splits(val) == {'val'} and _splits(test) == {'test'}
    for ann_file in _ann_files(cfg.val_evaluator):
        assert ann_file.endswith('_val.json'), ann_file
    for ann_file in _ann_files(cfg.test_evaluator):
        assert ann_file.endswith('_test.json'), ann_file
    assert bool(_ann_files(cfg.val_evaluator)) == bool(_ann_files(cfg.test_evaluator))


@pytest.mark.parametrize('path', sorted(REAL_DATASET_CONFIGS.values()))
def test_real_configs_split_the_evaluation_set_into_disjoint_halves(path):
    """VOC, MPII and HMDB51 validate and test on one labelled split: val and test take alternate samples of it."""
    for variant in (path, _lego_path(path)):
        cfg = Config.fromfile(CONFIGS / variant)
        val, test = cfg.val_dataloader.dataset, cfg.test_dataloader.dataset
        assert {k: v for k, v in val.items() if k != 'indices'} == {k: v for k, v in test.items() if k != 'indices'}
        assert not set(val.indices) & set(test.indices)
        assert sorted(val.indices + test.indices) == list(range(len(val.indices) + len(test.indices)))
        assert abs(len(val.indices) - len(test.indices)) <= 1


@pytest.mark.slow
def test_pipeline_never_reads_the_test_split(workspace, tmp_path, monkeypatch):
    """The whole pipeline (retraining's held-out batches, accuracy profiling) runs with the test split deleted."""
    ws = tmp_path / 'ws'
    shutil.copytree(workspace / 'data' / 'synthetic' / 'action', ws / 'data' / 'synthetic' / 'action')
    action = ws / 'data' / 'synthetic' / 'action'
    (action / 'test_list.txt').unlink()
    for clip in action.glob('rawframes/test_*'):
        shutil.rmtree(clip)
    config = CONFIGS / LEGO_CONFIGS['tsn']
    cfg = Config.fromfile(config)
    monkeypatch.chdir(ws)  # control: here the report split cannot be loaded, the profiling split can
    init_default_scope(cfg.default_scope)
    from mmengine.registry import DATASETS
    assert len(DATASETS.build(cfg.val_dataloader.dataset)) > 0
    with pytest.raises(FileNotFoundError):
        DATASETS.build(cfg.test_dataloader.dataset)
    checkpoint = teacher_checkpoint('tsn', workspace, tmp_path)
    work_dir = tmp_path / 'work'
    run_tool('train.py', str(config), '--work-dir', str(work_dir), '--cfg-options',
             *tiny_pipeline_options(checkpoint), cwd=ws, timeout=900)
    assert (work_dir / 'bank' / 'manifest.json').is_file()
    assert not (action / 'test_list.txt').exists() and not list(action.glob('rawframes/test_*'))
