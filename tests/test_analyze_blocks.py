"""tools/analyze_blocks.py on OpenMMLab configs: blocks as a table and as JSON."""
import json

import pytest

from .conftest import CONFIGS, TEACHER_CONFIGS, run_tool_in_process as run_tool


@pytest.mark.parametrize('model', ['fcn', 'tsn'])
def test_analyze_blocks_json(model, workspace, tmp_path):
    out = tmp_path / 'blocks.json'
    run_tool('analyze_blocks.py', str(CONFIGS / TEACHER_CONFIGS[model]), '--json', str(out), cwd=workspace)
    result = json.loads(out.read_text())
    assert result['num_convs_total'] >= 20
    assert len(result['blocks']) >= 6  # ResNet-18-class backbones
    covered = sum(len(block['convs']) for block in result['blocks'])
    assert result['num_convs_covered'] == covered <= result['num_convs_total']
    all_convs = [conv for block in result['blocks'] for conv in block['convs']]
    assert len(all_convs) == len(set(all_convs)), 'a conv belongs to two blocks'
    for block in result['blocks']:
        assert 2 <= len(block['convs']) <= result['max_convs_per_block']
        assert block['prunable_convs'] and set(block['prunable_convs']) < set(block['convs'])


@pytest.mark.slow
def test_analyze_blocks_table_two_stage_detector(workspace):
    """Faster R-CNN's mode='tensor' needs data samples: the tool runs it with samples carrying the image shape,
    traces extract_feat, and the box head (run on the proposals) alone: its shared fcs are a block too."""
    proc = run_tool('analyze_blocks.py', str(CONFIGS / TEACHER_CONFIGS['faster_rcnn']), '--max-ratio', '0.2',
                    cwd=workspace)
    assert "traced path 'tensor_with_samples'" in proc.stdout
    assert 'backbone.layer' in proc.stdout and 'at most 6 convs per block (max_ratio 0.2;' in proc.stdout
    assert 'members: roi_head.bbox_head.shared_fcs.0, roi_head.bbox_head.relu, roi_head.bbox_head.shared_fcs.1' in \
        proc.stdout


def test_analyze_blocks_with_a_shape_needs_no_dataset(tmp_path):
    """A real-dataset config (VOC is not on this machine) with --shape, as mmdet's get_flops.py."""
    from .conftest import REAL_DATASET_CONFIGS
    empty = tmp_path / 'no_data'
    empty.mkdir()
    out = tmp_path / 'blocks.json'
    run_tool('analyze_blocks.py', str(CONFIGS / REAL_DATASET_CONFIGS['fcn']), '--shape', '128', '160', '--json',
             str(out), cwd=empty)
    result = json.loads(out.read_text())
    assert len(result['blocks']) >= 6 and result['num_convs_total'] >= 20
    assert all(block['name'].startswith(('backbone.', 'decode_head.')) for block in result['blocks'])
    with pytest.raises(AssertionError, match='--shape takes positive sizes'):
        run_tool('analyze_blocks.py', str(CONFIGS / REAL_DATASET_CONFIGS['fcn']), '--shape', '0', cwd=empty)
