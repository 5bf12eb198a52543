"""Every shipped config parses, inherits its package's config, and builds its model and datasets."""
import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

from .conftest import CONFIGS, REAL_DATASET_CONFIGS, TEACHER_CONFIGS

SCOPES = {'detection': 'mmdet', 'segmentation': 'mmseg', 'pose': 'mmpose', 'action': 'mmaction'}


def _scope_of(rel_path: str) -> str:
    return SCOPES[rel_path.split('/')[0]]


@pytest.mark.parametrize('name,rel_path', sorted({**{f'{k}-synthetic': v for k, v in TEACHER_CONFIGS.items()},
                                                  **{f'{k}-real': v for k, v in REAL_DATASET_CONFIGS.items()}}.items()))
def test_config_builds_its_model(name, rel_path):
    cfg = Config.fromfile(CONFIGS / rel_path)
    assert cfg.default_scope == _scope_of(rel_path)
    init_default_scope(cfg.default_scope)
    from mmengine.registry import MODELS
    model = MODELS.build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) > 0
    # CPU scale: ResNet-18-class backbones everywhere.
    assert cfg.model.backbone.get('depth') == 18


@pytest.mark.parametrize('name', sorted(TEACHER_CONFIGS))
def test_synthetic_config_loads_one_training_sample(name, workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    cfg = Config.fromfile(CONFIGS / TEACHER_CONFIGS[name])
    init_default_scope(cfg.default_scope)
    from mmengine.registry import DATASETS
    for loader in ('train_dataloader', 'val_dataloader'):
        dataset = DATASETS.build(cfg[loader].dataset)
        assert len(dataset) > 0
        sample = dataset[0]
        assert 'inputs' in sample and 'data_samples' in sample


def _lego_path(rel_path: str) -> str:
    """The legodnn variant of a teacher config: `{model}_{backbone}_legodnn_{data}.py`."""
    directory, name = rel_path.rsplit('/', 1)
    for backbone in ('_r18_fpn_', '_r18-d8_', '_res18_', '_r18_'):
        if backbone in name:
            return f'{directory}/{name.replace(backbone, backbone + "legodnn_", 1)}'
    raise AssertionError(f'no backbone tag in {name}')


@pytest.mark.parametrize('name,rel_path', sorted({**{f'{k}-synthetic': v for k, v in TEACHER_CONFIGS.items()},
                                                  **{f'{k}-real': v for k, v in REAL_DATASET_CONFIGS.items()}}.items()))
def test_legodnn_config_wraps_its_teacher(name, rel_path):
    """Each legodnn config is its teacher config plus the wrapper and the pipeline loop, and builds."""
    import mmlego  # noqa: F401
    from mmlego.models import LegoDNN
    teacher_cfg = Config.fromfile(CONFIGS / rel_path)
    cfg = Config.fromfile(CONFIGS / _lego_path(rel_path))
    assert cfg.default_scope == teacher_cfg.default_scope
    assert cfg.model.type == 'mmlego.LegoDNN' and cfg.model.architecture == teacher_cfg.model
    assert cfg.train_cfg.type == 'mmlego.LegoDNNPipelineLoop'
    assert cfg.load_from and cfg.val_dataloader == teacher_cfg.val_dataloader
    # The config-only route: LegoRunner, the bank its pipeline writes, and an online scaling hook with a budget.
    assert cfg.runner_type == 'mmlego.LegoRunner' and cfg.model.bank == '{work_dir}/bank'
    hooks = [hook for hook in cfg.custom_hooks if hook.type == 'mmlego.OnlineScalingHook']
    assert len(hooks) == 1
    from mmlego.engine import OnlineScalingHook
    assert OnlineScalingHook(**{k: v for k, v in hooks[0].items() if k != 'type'}).active
    init_default_scope(cfg.default_scope)
    from mmengine.registry import MODELS
    model = MODELS.build(cfg.model)
    assert isinstance(model, LegoDNN) and model.data_preprocessor is model.architecture.data_preprocessor


def test_the_device_schedule_budget_base_is_a_valid_schedule():
    from mmlego.engine import OnlineScalingHook
    cfg = Config.fromfile(CONFIGS / '_base_' / 'budgets' / 'device_schedule.py')
    hook = OnlineScalingHook(**{k: v for k, v in cfg.legodnn_scaling_hook.items() if k != 'type'})
    assert [budget for _, budget in hook._source.schedule][1] == {'latency_ms': '80%', 'memory_mb': '60%'}


def test_lego_runner_is_found_from_every_scope_and_fills_in_the_work_dir():
    import mmlego  # noqa: F401
    from mmengine.registry import RUNNERS
    from mmlego.engine import LegoRunner
    from mmlego.engine.runner import resolve_bank_placeholder
    for scope in ('mmengine', 'mmdet', 'mmseg', 'mmpose', 'mmaction', 'mmlego'):
        with RUNNERS.switch_scope_and_registry(scope) as registry:
            assert registry.get('mmlego.LegoRunner') is LegoRunner
    model = dict(type='mmlego.LegoDNN', bank='{work_dir}/bank')
    assert resolve_bank_placeholder(model, 'work_dirs/x') == dict(type='mmlego.LegoDNN', bank='work_dirs/x/bank')
    assert model['bank'] == '{work_dir}/bank'  # the config itself is left as it was
