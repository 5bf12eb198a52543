"""The mmaction2 1.2.0 DRN import fix: idempotent, a no-op when DRN exists, and mmaction's registry builds."""
from pathlib import Path

from mmlego.utils import mmaction_compat

UPSTREAM_INIT = """# Copyright (c) OpenMMLab. All rights reserved.
from .bmn import BMN
from .bsn import PEM, TEM
from .drn.drn import DRN
from .tcanet import TCANet

__all__ = ['TEM', 'PEM', 'BMN', 'TCANet', 'DRN']
"""


def _localizers(tmp_path: Path, with_drn: bool) -> Path:
    pkg = tmp_path / 'localizers'
    pkg.mkdir()
    (pkg / '__init__.py').write_text(UPSTREAM_INIT)
    if with_drn:
        (pkg / 'drn').mkdir()
        (pkg / 'drn' / 'drn.py').write_text('DRN = object\n')
    return pkg / '__init__.py'


def test_patch_guards_only_the_drn_import_and_is_idempotent(tmp_path):
    init = _localizers(tmp_path, with_drn=False)
    assert mmaction_compat.needs_patch(init)
    assert mmaction_compat.apply(init) is True
    patched = init.read_text()
    assert not mmaction_compat.needs_patch(init)
    assert mmaction_compat.apply(init) is False
    assert init.read_text() == patched
    namespace = {'__name__': 'probe', '__package__': ''}  # relative imports fail with ImportError
    exec(compile(patched.replace('from .bmn import BMN\nfrom .bsn import PEM, TEM\n', '')
                 .replace('from .tcanet import TCANet\n', ''), str(init), 'exec'), namespace)
    assert namespace['DRN'] is None and 'DRN' not in namespace['__all__']


def test_patch_leaves_a_complete_distribution_alone(tmp_path):
    init = _localizers(tmp_path, with_drn=True)
    assert not mmaction_compat.needs_patch(init)
    assert mmaction_compat.apply(init) is False
    assert init.read_text() == UPSTREAM_INIT


def test_installed_mmaction_is_fixed_and_its_registry_builds():
    assert mmaction_compat.main([]) == 0
    from mmaction.registry import MODELS
    from mmaction.utils import register_all_modules
    register_all_modules()
    recognizer = MODELS.build(dict(
        type='Recognizer2D', backbone=dict(type='ResNet', depth=18, pretrained=None),
        cls_head=dict(type='TSNHead', num_classes=6, in_channels=512, average_clips='prob'),
        data_preprocessor=dict(type='ActionDataPreprocessor', format_shape='NCHW')))
    assert type(recognizer).__name__ == 'Recognizer2D'
