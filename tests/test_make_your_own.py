"""README's "Make your own model lego" guide, done exactly as written on a model outside the eight (PSPNet-R18)."""
import json
import re

import torch

from .conftest import CONFIGS, ROOT, run_tool, run_tool_in_process
from .test_pipeline import tiny_pipeline_options


def guide_config() -> str:
    """The lego config template of the guide (README), with its placeholders."""
    text = (ROOT / 'README.md').read_text()
    section = text.split('## Make your own model lego', 1)[1]
    return re.search(r'```python\n(.*?)```', section, re.S).group(1)


def test_guide_turns_pspnet_into_a_lego_model(workspace, tmp_path):
    from mmengine.config import Config

    from mmlego.models import build_model
    # Step 0: a user's own teacher config (PSPNet-R18 on the synthetic segmentation data) and checkpoint.
    teacher_config = tmp_path / 'pspnet_r18-d8_synthseg.py'
    teacher_config.write_text(
        f"_base_ = ['{CONFIGS / 'segmentation/fcn/fcn_r18-d8_synthseg.py'}']\n"
        "model = dict(decode_head=dict(_delete_=True, type='PSPHead', in_channels=128, in_index=3, channels=32,\n"
        "    pool_scales=(1, 2, 3, 6), dropout_ratio=0.1, num_classes=4, norm_cfg=dict(type='BN', requires_grad=True),\n"
        "    align_corners=False, loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)))\n")
    torch.manual_seed(0)
    teacher = build_model(Config.fromfile(str(teacher_config)))
    checkpoint = tmp_path / 'work_dirs' / 'pspnet_r18-d8_synthseg' / 'iter_600.pth'
    checkpoint.parent.mkdir(parents=True)
    torch.save({'state_dict': teacher.state_dict()}, checkpoint)
    # Step 1: the lego config, from the guide's template.
    template = guide_config()
    lego_config = tmp_path / 'pspnet_r18-d8_legodnn_synthseg.py'
    lego_config.write_text(template.replace('my_model', 'pspnet_r18-d8_synthseg')
                           .replace('epoch_12.pth', 'iter_600.pth')
                           .replace("load_from = 'work_dirs", f"load_from = '{tmp_path}/work_dirs"))
    # Step 2: the blocks.
    proc = run_tool_in_process('analyze_blocks.py', str(lego_config.parent / 'pspnet_r18-d8_synthseg.py'),
                               cwd=workspace)
    assert 'blocks covering' in proc.stdout
    # Step 3: the pipeline (tiny settings for the test; the guide runs it with the config's own).
    options = [o for o in tiny_pipeline_options(checkpoint) if not o.startswith('load_from')]
    work_dir = tmp_path / 'work'
    run_tool('train.py', str(lego_config), '--work-dir', str(work_dir), '--cfg-options', *options, cwd=workspace,
             timeout=900)
    manifest = json.loads((work_dir / 'bank' / 'manifest.json').read_text())
    assert manifest['profiles']['metric_name'] == 'mIoU'
    assert len(manifest['extraction']['blocks']) >= 6
