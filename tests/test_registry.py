"""mmlego's registries: found from configs through default_scope and through custom_imports."""
import subprocess
import sys

import pytest
import mmengine.hooks  # noqa: F401  (registers CheckpointHook & co. in the root, as the Runner does)
import mmengine.model  # noqa: F401
from mmengine.registry import DefaultScope
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS

import mmlego.registry as registry

ALL_REGISTRIES = [
    'RUNNERS', 'RUNNER_CONSTRUCTORS', 'LOOPS', 'HOOKS', 'LOG_PROCESSORS', 'OPTIMIZERS', 'OPTIM_WRAPPERS',
    'OPTIM_WRAPPER_CONSTRUCTORS', 'PARAM_SCHEDULERS', 'MODELS', 'MODEL_WRAPPERS', 'WEIGHT_INITIALIZERS',
    'TASK_UTILS', 'DATASETS', 'DATA_SAMPLERS', 'TRANSFORMS', 'METRICS', 'EVALUATOR', 'VISUALIZERS', 'VISBACKENDS'
]


@pytest.mark.parametrize('name', ALL_REGISTRIES)
def test_registry_is_mmlego_child_with_locations(name):
    reg = getattr(registry, name)
    assert reg.scope == 'mmlego'
    assert reg.parent is not None and reg.parent.scope == 'mmengine'
    assert reg.parent.children['mmlego'] is reg
    # Without locations mmengine cannot import mmlego's modules: mmlego is not in MODULE2PACKAGE.
    assert reg._locations, f'{name} has no locations'
    reg.import_from_location()  # every location must import


def test_default_scope_mmlego_builds_parent_modules():
    with DefaultScope.overwrite_default_scope('mmlego'):
        hook = registry.HOOKS.build(dict(type='CheckpointHook', interval=3))
        assert type(hook).__name__ == 'CheckpointHook'
        # mmengine's root registry switches to the mmlego child when the default scope is mmlego.
        preprocessor = MMENGINE_MODELS.build(dict(type='ImgDataPreprocessor', pad_size_divisor=4))
        assert preprocessor.pad_size_divisor == 4


def test_scoped_type_reaches_mmlego_from_another_scope():
    @registry.HOOKS.register_module(force=True)
    class _ProbeHook:
        def __init__(self, value):
            self.value = value

    try:
        with DefaultScope.overwrite_default_scope('mmengine'):
            hook = MMENGINE_HOOKS.build(dict(type='mmlego._ProbeHook', value=7))
        assert isinstance(hook, _ProbeHook) and hook.value == 7
    finally:
        registry.HOOKS._module_dict.pop('_ProbeHook')


def test_custom_imports_config_imports_mmlego(tmp_path):
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text("custom_imports = dict(imports=['mmlego'], allow_failed_imports=False)\n")
    code = (
        'import sys\n'
        'from mmengine.config import Config\n'
        f'cfg = Config.fromfile({str(cfg_file)!r})\n'
        "assert 'mmlego' in sys.modules\n"
        'from mmengine.registry import HOOKS, LOOPS, MODELS, RUNNERS\n'
        "assert MODELS.children['mmlego'] is sys.modules['mmlego.registry'].MODELS\n"
        # What the legodnn configs name, found from mmengine's roots by their mmlego. prefix (the registries'
        # locations import the modules on first use).
        "assert MODELS.get('mmlego.LegoDNN').__name__ == 'LegoDNN'\n"
        "assert 'mmlego.engine' not in sys.modules  # building a model does not import the training stack\n"
        "assert HOOKS.get('mmlego.OnlineScalingHook').__name__ == 'OnlineScalingHook'\n"
        "assert LOOPS.get('mmlego.LegoDNNPipelineLoop').__name__ == 'LegoDNNPipelineLoop'\n"
        "assert RUNNERS.get('mmlego.LegoRunner').__name__ == 'LegoRunner'\n")
    subprocess.run([sys.executable, '-c', code], check=True)


def test_whole_stack_imports():
    """The install's contract: every package the pipeline builds on imports, compiled mmcv ops included."""
    code = 'import mmlego, mmcv.ops, mmdet.models, mmseg.models, mmpose.models, mmaction.models, pulp'
    subprocess.run([sys.executable, '-c', code], check=True)

