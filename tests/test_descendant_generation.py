"""Descendant generation: L1 filter pruning that keeps every block's I/O shapes, replayable from its plan."""
import json

import pytest
import torch
import torch_pruning as tp
from torch import nn

from mmlego.block_extraction import BlockSpec, extract_blocks, is_conv, trace_model
from mmlego.block_extraction.block_module import block_module_of
from mmlego.descendant_generation import (DEFAULT_SPARSITIES, PruningPlan, apply_plan, check_sparsities,
                                          generate_descendants, prune_block, rebuild_descendant)

from .test_block_extraction import capture, make_mmdet, make_toy

SPARSITIES = [0.0, 0.2, 0.4, 0.6, 0.8]


pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _case(model: nn.Module, x: torch.Tensor, ratios, keep=None) -> dict:
    """Blocks at several ratios (distinct names), their real inputs/outputs and all descendants."""
    graph = trace_model(model, (x,))
    blocks = {}
    for ratio in ratios:
        for spec in extract_blocks(model, (x,), max_ratio=ratio, graph=graph).blocks:
            blocks.setdefault(spec.name, spec)
    blocks = [spec for name, spec in blocks.items() if keep is None or name in keep]
    before = {key: value.clone() for key, value in model.state_dict().items()}
    descendants = generate_descendants(model, blocks, SPARSITIES, show_progress=False)
    after = model.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before), 'the teacher was modified'
    return dict(model=model, blocks=blocks, io=capture(model, x, blocks)[1], descendants=descendants)


@pytest.fixture(scope='module')
def toy_case():
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return _case(make_toy(), x, [0.125, 0.25])


@pytest.fixture(scope='module')
def resnet_case():
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return _case(make_mmdet('resnet18'), x, [0.2])


@pytest.fixture(scope='module')
def darknet_case():  # two prunable convs tied by a residual add (conv_res_block1.conv and res0.conv2)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return _case(make_mmdet('darknet53'), x, [0.2], keep={'conv1+conv_res_block1+conv_res_block2'})


CASES = ['toy_case', 'resnet_case', 'darknet_case']


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize('case', CASES)
def test_shapes_params_and_exact_copy(case, request):
    case = request.getfixturevalue(case)
    model = case['model']
    assert len(case['descendants']) == len(case['blocks'])
    for spec in case['blocks']:
        x, y = case['io'][spec.name]['in'], case['io'][spec.name]['out']
        teacher = block_module_of(model, spec).eval()
        descendants = case['descendants'][spec.name]
        assert sorted(descendants) == SPARSITIES
        params = []
        for sparsity, descendant in descendants.items():
            assert descendant.sparsity == sparsity and descendant.spec is spec
            with torch.no_grad():
                out = descendant.module(x)
            assert out.shape == y.shape, (spec.name, sparsity)
            if sparsity == 0:
                assert descendant.plan.channels == {} and descendant.plan.unpruned_reason is None
                assert torch.equal(out, y) and same_state(descendant.module, teacher)
            else:  # these blocks all prune: every prunable conv loses filters
                assert descendant.plan.unpruned_reason is None, (spec.name, descendant.plan.unpruned_reason)
                for conv in spec.prunable_convs:
                    entry = descendant.plan.channels[conv]
                    assert len(entry['out']) < entry['out_total'], (spec.name, conv)
                for conv in spec.protected_convs:
                    assert 'out' not in descendant.plan.channels.get(conv, {}), (spec.name, conv)
            params.append(num_params(descendant.module))
        assert all(a > b for a, b in zip(params, params[1:])), (spec.name, params)


def largest_l1(conv: nn.Conv2d, k: int, groups: int = 1) -> set:
    """The ``k`` filters of ``conv`` with the largest L1 norm.

    With ``groups > 1`` (``conv`` is grouped, or feeds a grouped conv) every group of filters must keep as many
    channels: the same positions are kept in every group, those with the largest L1 summed over the groups.
    """
    l1 = conv.weight.detach().abs().flatten(1).sum(1)
    if groups == 1:
        return set(torch.topk(l1, k).indices.tolist())
    per_group = conv.out_channels // groups
    positions = torch.topk(l1.view(groups, per_group).sum(0), k // groups).indices.tolist()
    return {group * per_group + position for group in range(groups) for position in positions}


@pytest.mark.parametrize('case', CASES)
def test_kept_filters_have_largest_l1(case, request):
    case = request.getfixturevalue(case)
    model = case['model']
    checked = 0
    for spec in case['blocks']:
        for sparsity, descendant in case['descendants'][spec.name].items():
            if sparsity == 0:
                continue
            kept_out = {name: entry['out'] for name, entry in descendant.plan.channels.items()
                        if 'out' in entry and is_conv(model.get_submodule(name))}
            for name, kept in kept_out.items():
                teacher = model.get_submodule(name)
                total = teacher.out_channels
                assert kept == sorted(set(kept)) and 0 < len(kept) < total
                # Grouped convs (not depthwise) in the block: counts rounded down to a multiple of their groups.
                group_counts = {1} | {model.get_submodule(conv).groups for conv in spec.convs
                                      if 1 < model.get_submodule(conv).groups < model.get_submodule(conv).out_channels}
                assert 0 <= total * (1 - sparsity) - len(kept) < max(group_counts), (name, sparsity, len(kept))
                # Convs tied by an add/depthwise conv share their kept channels; the group follows one of them.
                tied = [other for other, channels in kept_out.items() if channels == kept]
                assert any(largest_l1(model.get_submodule(conv), len(kept), groups) == set(kept)
                           for conv in tied for groups in group_counts), (spec.name, sparsity, name)
                checked += 1
            for name, entry in descendant.plan.channels.items():  # weights are the teacher's kept channels
                teacher = model.get_submodule(name)
                pruned = descendant.module.module_by_model_name(name)
                if is_conv(teacher) and teacher.groups == 1:
                    weight = teacher.weight[entry.get('out', slice(None))][:, entry.get('in', slice(None))]
                    assert torch.equal(pruned.weight, weight), name
                elif isinstance(teacher, nn.BatchNorm2d):
                    assert torch.equal(pruned.running_var, teacher.running_var[entry['out']]), name
    assert checked


@pytest.mark.parametrize('case', CASES)
def test_rebuild_from_plan_is_identical(case, request):
    case = request.getfixturevalue(case)
    model = case['model']
    for spec in case['blocks']:
        x = case['io'][spec.name]['in']
        for sparsity, descendant in case['descendants'][spec.name].items():
            plan = PruningPlan.from_dict(json.loads(json.dumps(descendant.plan.to_dict())))
            rebuilt = rebuild_descendant(model, spec, plan)
            assert rebuilt.sparsity == sparsity and not rebuilt.module.training
            assert same_state(rebuilt.module, descendant.module), (spec.name, sparsity)
            with torch.no_grad():
                assert torch.equal(rebuilt.module(x), descendant.module(x))


def test_plan_from_another_teacher_raises(toy_case):
    spec = next(spec for spec in toy_case['blocks'] if spec.name == 'res_id')
    plan = toy_case['descendants']['res_id'][0.4].plan
    wider = make_toy(width=24)
    with pytest.raises(ValueError, match='another teacher'):
        rebuild_descendant(wider, spec, plan)
    bad = PruningPlan(sparsity=0.4, channels={'res_id.nonexistent': {'out': [0], 'out_total': 16}})
    with pytest.raises(ValueError, match='does not have'):
        apply_plan(block_module_of(toy_case['model'], spec), bad)
    bad = PruningPlan(sparsity=0.4, channels={'res_id.conv1': {'out': [0, 99]}})
    with pytest.raises(ValueError, match='outside'):
        apply_plan(block_module_of(toy_case['model'], spec), bad)


def test_plan_from_another_resnet_raises(resnet_case):
    spec = next(spec for spec in resnet_case['blocks'] if spec.name == 'layer2.0')
    plan = resnet_case['descendants']['layer2.0'][0.2].plan
    with pytest.raises(ValueError, match='another teacher'):
        rebuild_descendant(make_mmdet('resnet18', base_channels=32), spec, plan)


def test_grouped_depthwise_and_concat(toy_case):
    descendants = toy_case['descendants']
    assert {'incep', 'grouped', 'grouped.0+grouped.1', 'dwsep+twice'} <= set(descendants)
    for sparsity in SPARSITIES[1:]:
        incep = descendants['incep'][sparsity].module  # concat: each branch keeps its output width
        for branch in ('incep.branch_a', 'incep.branch_b'):
            last = incep.module_by_model_name(f'{branch}.1.0')
            assert last.out_channels == 16 and last.in_channels < 16
        dw = descendants['dwsep+twice'][sparsity].module.module_by_model_name('dwsep.1.0')
        assert dw.groups == dw.in_channels == dw.out_channels < 32  # still depthwise, pruned with its input
        grouped = descendants['grouped.0+grouped.1'][sparsity].module.module_by_model_name('grouped.0.0')
        assert grouped.groups == 4 and grouped.out_channels % 4 == 0 and grouped.out_channels < 32


def _teacher_spec(model: nn.Module, name: str, prunable: list) -> BlockSpec:
    module = model.get_submodule(name)
    return BlockSpec(name=name, members=[name], convs=[n for n, m in module.named_modules() if is_conv(m)],
                     prunable_convs=prunable, input_shape=[1, 32, 8, 8], output_shape=[1, 32, 8, 8],
                     num_params=num_params(module))


def test_block_that_breaks_when_pruned_stays_whole(toy_case):
    """conv_a is added to the block input: a spec that marks it prunable must give unpruned descendants."""
    model = toy_case['model']
    spec = _teacher_spec(model, 'preskip', ['preskip.conv_a'])
    spec.convs = ['preskip.conv_a', 'preskip.conv_b']
    teacher = block_module_of(model, spec).eval()
    descendants = generate_descendants(model, [spec], show_progress=False)['preskip']
    assert sorted(descendants) == list(DEFAULT_SPARSITIES)
    for sparsity, descendant in descendants.items():
        if sparsity:
            assert descendant.plan.unpruned_reason and not descendant.plan.channels
        assert same_state(descendant.module, teacher)
        with torch.no_grad():
            assert descendant.module(torch.randn(1, 32, 8, 8)).shape == (1, 32, 8, 8)


def test_failure_midway_rolls_back(toy_case, monkeypatch):
    """torch-pruning failing after pruning one group leaves the block whole, with the reason."""
    model = toy_case['model']
    spec = next(spec for spec in toy_case['blocks'] if spec.name == 'incep')
    original = tp.pruner.BasePruner.step

    def failing_step(self, interactive=False):
        for i, group in enumerate(original(self, interactive=True)):
            if i == 1:
                raise RuntimeError('unsupported op')
            yield group

    monkeypatch.setattr(tp.pruner.BasePruner, 'step', failing_step)
    block = block_module_of(model, spec).eval()
    plan = prune_block(block, spec, 0.4)
    assert 'unsupported op' in plan.unpruned_reason and not plan.channels
    assert same_state(block, block_module_of(model, spec))


def test_prune_block_keeps_mode_and_statistics(toy_case):
    model = toy_case['model']
    spec = next(spec for spec in toy_case['blocks'] if spec.name == 'res_id')
    block = block_module_of(model, spec)
    block.train()
    plan = prune_block(block, spec, 0.4)
    assert block.training and plan.channels
    kept = plan.channels['res_id.bn1']['out']
    assert torch.equal(block.module_by_model_name('res_id.bn1').running_mean,
                       model.get_submodule('res_id.bn1').running_mean[kept])
    assert torch.equal(block.module_by_model_name('res_id.bn2').running_mean,
                       model.get_submodule('res_id.bn2').running_mean)


@pytest.mark.parametrize('sparsities', [[], [0.2, 0.4], [0.0, 0.4, 0.2], [0.0, 0.2, 0.2], [0.0, 1.0], [0.0, -0.2]])
def test_invalid_sparsities(sparsities):
    with pytest.raises(ValueError, match='sparsities'):
        check_sparsities(sparsities)
    with pytest.raises(ValueError):
        generate_descendants(nn.Conv2d(3, 16, 3), [], sparsities, show_progress=False)


def test_default_sparsities():
    assert check_sparsities(DEFAULT_SPARSITIES) == SPARSITIES
    with pytest.raises(ValueError, match='sparsity'):
        prune_block(None, None, 1.0)
