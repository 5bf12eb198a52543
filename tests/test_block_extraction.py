"""Block extraction: LegoDNN's block rules on tiny CNNs and on mmdet's ResNet-18 and Darknet-53.

Every detected block is checked against a real forward of the model (hooks capture the block's input and output):
the standalone block reproduces the output exactly (one input, one output, skips closed), runs every module as
often as the whole model does (no module used outside its block), and protects the convs feeding its output.
"""
import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmlego.block_extraction import BlockSpec, extract_blocks, is_conv, trace_model
from mmlego.block_extraction.block_module import block_module_of
from mmlego.block_extraction.detection import _Detector


# -- tiny models ---------------------------------------------------------------------------------------------------
def cbr(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv, batch norm, ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())


class BasicRes(nn.Module):
    """Residual block, identity or with a downsample conv; its ReLU is called twice."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Inception(nn.Module):
    """Two conv branches concatenated."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.branch_a = nn.Sequential(cbr(c, c // 2, 1), cbr(c // 2, c // 2))
        self.branch_b = nn.Sequential(cbr(c, c // 2, 1), cbr(c // 2, c // 2, 5))

    def forward(self, x):
        return torch.cat([self.branch_a(x), self.branch_b(x)], dim=1)


class Twice(nn.Module):
    """The same conv applied twice in sequence, with a shared ReLU."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(c, c, 1)
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv(self.relu(self.conv(self.relu(self.conv_in(x))))))


class Fuse(nn.Module):
    """Takes two tensors: never a block member."""

    def forward(self, a, b):
        return a + b


class PreSkip(nn.Module):
    """A skip from the module input joined before the last conv: conv_a's filters are tied to the input."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(c, c, 3, padding=1)
        self.conv_b = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv_b(F.relu(x + self.conv_a(x)))


class ToyNet(nn.Module):
    """Residuals, concat, grouped and depthwise-separable convs, shared modules, a two-tensor module."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w, c = width, 2 * width
        self.stem = cbr(3, w)
        self.res_id = BasicRes(w, w)
        self.res_down = BasicRes(w, c, stride=2)
        self.incep = Inception(c)
        self.grouped = nn.Sequential(cbr(c, c, groups=4), cbr(c, c, 1), cbr(c, c, groups=4))
        self.dwsep = nn.Sequential(cbr(c, c, 1), cbr(c, c, groups=c), cbr(c, c, 1))
        self.twice = Twice(c)
        self.side = nn.Conv2d(c, c, 1)
        self.fuse = Fuse()
        self.act = nn.ReLU()  # called twice at the top level
        self.preskip = PreSkip(c)
        self.head = nn.Conv2d(c, 8, 1)

    def forward(self, x):
        x = self.act(self.stem(x))
        x = self.res_down(self.res_id(x))
        x = self.twice(self.dwsep(self.grouped(self.incep(x))))
        x = self.act(self.fuse(x, self.side(x)))
        return self.head(self.preskip(x))


class LevelsNet(nn.Module):
    """A head that keeps each level's bridge and prediction conv in two ``ModuleList``s and loops over the levels
    (as mmdet's YOLOv3 head): the chains cross the module tree. A third level's bridge output is also returned."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 8)
        self.down = cbr(8, 16, stride=2)
        self.bridges = nn.ModuleList([cbr(8, 16), cbr(16, 32)])
        self.preds = nn.ModuleList([nn.Conv2d(16, 6, 1), nn.Conv2d(32, 6, 1)])
        self.side_bridge = cbr(16, 16)
        self.side_pred = nn.Conv2d(16, 6, 1)

    def forward(self, x):
        features = [self.stem(x)]
        features.append(self.down(features[0]))
        outputs = [self.preds[i](self.bridges[i](feature)) for i, feature in enumerate(features)]
        side = self.side_bridge(features[1])
        return (*outputs, self.side_pred(side), side)


class NestedLevels(nn.Module):
    """LevelsNet one level down, inside a module called once that returns one tensor (too many convs for a block):
    its submodules still chain. A second head computes both bridges before either prediction: interleaved, no block."""

    def __init__(self) -> None:
        super().__init__()
        self.levels = _OneTensorLevels()
        self.late_stem = cbr(3, 8)
        self.late = nn.ModuleDict(dict(bridges=nn.ModuleList([cbr(8, 8), cbr(8, 8)]),
                                       preds=nn.ModuleList([nn.Conv2d(8, 3, 1), nn.Conv2d(8, 3, 1)])))

    def forward(self, x):
        flat = self.levels(x)
        first = self.late_stem(x)
        bridged = [bridge(first) for bridge in self.late['bridges']]
        return flat, [pred(b) for pred, b in zip(self.late['preds'], bridged)]


class _OneTensorLevels(LevelsNet):
    def forward(self, x):
        return torch.cat([output.flatten(1) for output in super().forward(x)], dim=1)


def randomize_bn(model: nn.Module) -> nn.Module:
    """Non-trivial batch-norm statistics and affine parameters (so eval outputs depend on them)."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.5, 0.5)
    return model


def make_toy(width: int = 16, seed: int = 0) -> ToyNet:
    """A seeded ToyNet in eval mode."""
    torch.manual_seed(seed)
    model = randomize_bn(ToyNet(width))
    model.eval()
    return model


def make_mmdet(name: str, **kwargs) -> nn.Module:
    """A seeded mmdet backbone in eval mode (its ``train`` returns None: no chaining)."""
    from mmdet.models.backbones import Darknet, ResNet
    torch.manual_seed(0)
    model = randomize_bn(ResNet(depth=18, **kwargs) if name == 'resnet18' else Darknet(depth=53, **kwargs))
    model.eval()
    return model


# -- checks --------------------------------------------------------------------------------------------------------
def capture(model: nn.Module, x: torch.Tensor, blocks) -> tuple[Counter, dict]:
    """One real forward: calls per module (by id) and each block's input and output."""
    counts, io, handles = Counter(), {}, []

    def count(module, args):
        counts[id(module)] += 1

    for module in model.modules():
        handles.append(module.register_forward_pre_hook(count))
    for spec in blocks:
        first, last = model.get_submodule(spec.members[0]), model.get_submodule(spec.members[-1])
        handles.append(first.register_forward_pre_hook(
            lambda m, args, key=spec.name: io.setdefault(key, {}).__setitem__('in', args[0].detach().clone())))
        handles.append(last.register_forward_hook(
            lambda m, args, out, key=spec.name: io.setdefault(key, {}).__setitem__('out', out.detach().clone())))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return counts, io


def stateless(module: nn.Module) -> bool:
    """No parameters, buffers or children (e.g. a ReLU): the same function wherever it runs."""
    return not (list(module.parameters()) or list(module.buffers()) or list(module.children()))


def fx_output_convs(block: nn.Module) -> set:
    """Independently of the package: the first conv on every path back from the block output (torch.fx)."""
    traced = torch.fx.symbolic_trace(block)
    modules = dict(traced.named_modules())
    output = next(node for node in traced.graph.nodes if node.op == 'output')
    found, stack, seen = set(), list(output.all_input_nodes), set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node.op == 'call_module' and is_conv(modules[node.target]):
            found.add(block.model_name(node.target))
            continue
        stack.extend(node.all_input_nodes)
    return found


def check_blocks(model: nn.Module, x: torch.Tensor, extraction) -> dict:
    """Asserts every LegoDNN block rule on ``extraction``; returns the captured block inputs and outputs."""
    counts, io = capture(model, x, extraction.blocks)
    executed = {name for name, module in model.named_modules() if is_conv(module) and counts[id(module)]}
    assert extraction.num_convs_total == len(executed)
    assert extraction.max_convs_per_block == max(2, math.floor(extraction.max_ratio * len(executed)))
    all_members = [member for spec in extraction.blocks for member in spec.members]
    assert len(all_members) == len(set(all_members))
    covered = set()
    for spec in extraction.blocks:
        assert BlockSpec.from_dict(spec.to_dict()) == spec
        assert spec.name == '+'.join(spec.members)
        for index, member in enumerate(spec.members):
            assert member, 'the whole model is never a block'
            module = model.get_submodule(member)
            if counts[id(module)] != 1:  # only a stateless inner member may also run outside the block
                assert 0 < index < len(spec.members) - 1 and stateless(module), f'{member} not called exactly once'
            for other in all_members:  # no member nested in another member
                assert other == member or not other.startswith(member + '.')
        convs = {f'{member}.{sub}' if sub else member for member in spec.members
                 for sub, module in model.get_submodule(member).named_modules()
                 if is_conv(module) and counts[id(module)]}
        assert set(spec.convs) == convs and len(spec.convs) == len(convs)
        assert 2 <= len(convs) <= extraction.max_convs_per_block, spec.name
        assert not covered & convs, f'{spec.name} shares convs with another block'
        covered |= convs
        assert spec.prunable_convs and set(spec.prunable_convs) < convs
        assert set(spec.protected_convs) == convs - set(spec.prunable_convs)

        block = block_module_of(model, spec)
        block.eval()
        local_counts = Counter()
        handles = [module.register_forward_pre_hook(lambda m, a: local_counts.update([id(m)]))
                   for module in block.modules()]
        with torch.no_grad():
            out = block(io[spec.name]['in'])
        for handle in handles:
            handle.remove()
        assert list(io[spec.name]['in'].shape) == spec.input_shape
        assert list(out.shape) == spec.output_shape
        assert torch.equal(out, io[spec.name]['out']), f'{spec.name} standalone differs from the model'
        for local, module in block.named_modules():  # every module inside runs only inside ...
            if local.startswith('layers.'):
                name = block.model_name(local)
                original = model.get_submodule(name)
                shared_member = name in spec.members and stateless(original)  # ... but a stateless member: once
                assert local_counts[id(module)] == counts[id(original)] or (
                    shared_member and local_counts[id(module)] == 1), f'{name} runs outside'
        assert fx_output_convs(block) <= set(spec.protected_convs), spec.name
    assert extraction.num_convs_covered == len(covered) == sum(len(spec.convs) for spec in extraction.blocks)
    assert extraction.num_convs_covered <= extraction.num_convs_total
    assert extraction.to_dict()['num_convs_covered'] == extraction.num_convs_covered
    return io


def by_name(extraction) -> dict:
    return {spec.name: spec for spec in extraction.blocks}


# -- fixtures ------------------------------------------------------------------------------------------------------
pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def toy():
    model = make_toy()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return model, x, trace_model(model, (x,))


@pytest.fixture(scope='module')
def resnet18():
    model = make_mmdet('resnet18')
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return model, x, trace_model(model, (x,))


@pytest.fixture(scope='module')
def darknet53():
    model = make_mmdet('darknet53')
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return model, x, trace_model(model, (x,))


# -- tests ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('max_ratio', [0.125, 0.25, 0.5, 1.0])
def test_toy_blocks_follow_the_rules(toy, max_ratio):
    model, x, graph = toy
    extraction = extract_blocks(model, (x,), max_ratio=max_ratio, graph=graph)
    assert extraction.blocks
    check_blocks(model, x, extraction)
    members = {member for spec in extraction.blocks for member in spec.members}
    assert 'fuse' not in members  # a two-tensor module
    assert all(spec.members != ['stem'] for spec in extraction.blocks)  # 1 conv
    for spec in extraction.blocks:  # the ReLU called twice at the top level: only inside a run, never at its ends
        assert 'act' not in (spec.members[0], spec.members[-1])


def test_toy_special_cases(toy):
    model, x, graph = toy
    small = extract_blocks(model, (x,), max_ratio=0.125, graph=graph)
    assert small.num_convs_total == 22 and small.max_convs_per_block == 2
    blocks = by_name(small)
    assert blocks['res_id'].prunable_convs == ['res_id.conv1']
    assert blocks['incep.branch_a'].protected_convs == ['incep.branch_a.1.0']  # concat branches
    # The conv called twice would be protected with conv_in's filters tied to it: no block.
    assert 'no prunable conv' in small.skipped['twice']
    # conv_a is added to the block input: pruning it would change the input's channels.
    assert 'no prunable conv' in small.skipped['preskip']

    # A downsampling residual block (3 convs) yields its residual branch, through the ReLU it shares with the
    # output of the add: only the call on the branch belongs to the block.
    branch = blocks['res_down.conv1+res_down.bn1+res_down.relu+res_down.conv2+res_down.bn2']
    assert branch.prunable_convs == ['res_down.conv1'] and branch.protected_convs == ['res_down.conv2']

    large = by_name(extract_blocks(model, (x,), max_ratio=0.25, graph=graph))
    assert large['stem+act+res_id'].prunable_convs == ['res_id.conv1']  # the shared top-level ReLU inside a run
    detector = _Detector(graph, max_convs=5)  # the run res_id + res_down, checked explicitly
    assert detector.check(['res_id', 'res_down']) is None
    detector._take(['res_id', 'res_down'])
    assert set(detector.blocks[0].protected_convs) == {  # res_id.conv2 is joined with the block input
        'res_id.conv2', 'res_down.conv2', 'res_down.downsample.0'}
    assert 'another block' in detector.check(['res_down', 'incep'])  # a member is never in two blocks
    assert set(large['incep'].protected_convs) == {'incep.branch_a.1.0', 'incep.branch_b.1.0'}
    assert large['grouped'].protected_convs == ['grouped.2.0']  # grouped conv at the output
    assert large['dwsep+twice'].protected_convs == ['twice.conv_in', 'twice.conv']  # module called twice inside
    assert large['preskip+head'].prunable_convs == ['preskip.conv_b']


def test_chains_across_the_module_tree_close_what_sibling_runs_leave_in_the_frame():
    torch.manual_seed(0)
    model = randomize_bn(LevelsNet()).eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    extraction = extract_blocks(model, (x,), max_ratio=0.25)
    check_blocks(model, x, extraction)
    blocks = by_name(extraction)
    # each level's bridge feeds only its prediction conv: a block of the two, the bridge prunable
    assert set(blocks) == {'bridges.0+preds.0', 'bridges.1+preds.1'}
    assert blocks['bridges.1+preds.1'].prunable_convs == ['bridges.1.0']
    assert blocks['bridges.1+preds.1'].protected_convs == ['preds.1']
    # the side bridge's output is read outside the pair too (a model output): no block; neither are stem and down,
    # whose outputs feed two levels each
    assert not {'side_bridge', 'side_pred', 'stem', 'down'} & {m for spec in extraction.blocks for m in spec.members}


def test_chains_inside_a_unit_too_large_for_a_block_and_never_interleaved():
    torch.manual_seed(0)
    model = randomize_bn(NestedLevels()).eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    extraction = extract_blocks(model, (x,), max_ratio=0.125)
    assert extraction.max_convs_per_block == 2
    check_blocks(model, x, extraction)
    assert set(by_name(extraction)) == {'levels.bridges.0+levels.preds.0', 'levels.bridges.1+levels.preds.1'}
    assert not any(name.startswith('levels.bridges.') or name.startswith('levels.preds.')
                   for name in extraction.skipped)  # the first pass's reasons for modules now in blocks are gone


def test_resnet18_default_ratio(resnet18):
    model, x, graph = resnet18
    extraction = extract_blocks(model, (x,), graph=graph)
    assert extraction.num_convs_total == 20 and extraction.max_convs_per_block == 2  # max(2, floor(0.125 x 20))
    # BasicBlocks without downsample as a whole; with one (3 convs), the residual branch through the ReLU the
    # block shares with the output of the add (mmdet's and mmpose's BasicBlock): 16 of 20 convs, not 10.
    def branch(unit):
        return '+'.join(f'{unit}.{member}' for member in ('conv1', 'bn1', 'relu', 'conv2', 'bn2'))
    names = ['layer1.0', 'layer1.1'] + [name for stage in (2, 3, 4)
                                        for name in (branch(f'layer{stage}.0'), f'layer{stage}.1')]
    assert [spec.name for spec in extraction.blocks] == names
    for spec in extraction.blocks:
        unit = spec.members[0].rsplit('.', 1)[0] if len(spec.members) > 1 else spec.name
        assert spec.prunable_convs == [f'{unit}.conv1']
        assert spec.protected_convs == [f'{unit}.conv2']
    assert extraction.num_convs_covered == 16
    check_blocks(model, x, extraction)


def test_resnet18_larger_ratio_covers_more(resnet18):
    model, x, graph = resnet18
    default = extract_blocks(model, (x,), max_ratio=0.125, graph=graph)
    larger = extract_blocks(model, (x,), max_ratio=0.2, graph=graph)
    assert larger.max_convs_per_block == 4
    assert larger.num_convs_covered > default.num_convs_covered
    check_blocks(model, x, larger)
    blocks = by_name(larger)
    for stage in (2, 3, 4):  # BasicBlocks with a downsample conv: both convs feeding the add are protected
        spec = blocks[f'layer{stage}.0']
        assert set(spec.protected_convs) == {f'layer{stage}.0.conv2', f'layer{stage}.0.downsample.0'}
        assert spec.prunable_convs == [f'layer{stage}.0.conv1']


@pytest.mark.parametrize('max_ratio', [0.5, 1.0])
def test_resnet18_any_ratio_follows_the_rules(resnet18, max_ratio):
    model, x, graph = resnet18
    check_blocks(model, x, extract_blocks(model, (x,), max_ratio=max_ratio, graph=graph))


@pytest.mark.parametrize('max_ratio', [0.125, 0.5])
def test_darknet53_follows_the_rules(darknet53, max_ratio):
    model, x, graph = darknet53
    extraction = extract_blocks(model, (x,), max_ratio=max_ratio, graph=graph)
    assert extraction.num_convs_total == 52
    assert extraction.blocks
    check_blocks(model, x, extraction)


@pytest.mark.parametrize('max_ratio', [0, -0.1, 1.5, float('nan')])
def test_invalid_max_ratio(max_ratio):
    with pytest.raises(ValueError, match='max_ratio'):
        extract_blocks(nn.Conv2d(3, 16, 3), (torch.randn(1, 3, 8, 8),), max_ratio=max_ratio)


class DataDependent(nn.Module):
    """Python control flow on a tensor value: torch.export cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3)
        self.conv2 = nn.Conv2d(16, 16, 3)

    def forward(self, x):
        x = self.conv1(x)
        return self.conv2(x) if x.mean() > 0 else -self.conv2(x)


def test_untraceable_model_raises_clear_error():
    model = DataDependent()
    model.train()
    with pytest.raises(RuntimeError, match='torch.export could not trace') as info:
        extract_blocks(model, (torch.randn(1, 3, 16, 16),))
    assert 'forward_fn' in str(info.value)
    assert model.training  # the mode is restored even on failure


def test_mode_restored_and_forward_fn():
    torch.manual_seed(0)
    model = nn.Sequential(cbr(3, 16), cbr(16, 16), nn.Sequential(cbr(16, 16), cbr(16, 16)))
    model.train()
    extraction = extract_blocks(model, (torch.randn(1, 3, 16, 16),), max_ratio=1.0,
                                forward_fn=lambda m, x: m(x) * 2)
    assert model.training
    assert [spec.name for spec in extraction.blocks] == ['0+1+2']
    assert extraction.blocks[0].protected_convs == ['2.1.0']


class BoxHead(nn.Module):
    """mmdet's shared-fc box head in small: two fcs sharing one ReLU, then a classifier and a regressor."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.shared_fcs = nn.ModuleList([nn.Linear(features, 32), nn.Linear(32, 32)])
        self.relu = nn.ReLU(inplace=True)
        self.fc_cls = nn.Linear(32, 3)
        self.fc_reg = nn.Linear(32, 4)

    def forward(self, x):
        x = x.flatten(1)
        for fc in self.shared_fcs:
            x = self.relu(fc(x))
        return self.fc_cls(x), self.fc_reg(x)


class TwoStage(nn.Module):
    """A traceable feature extractor, then regions picked by their values (data-dependent, as NMS), pooled and fed
    to a box head."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(cbr(3, 8), cbr(8, 8), cbr(8, 8))
        self.roi_head = BoxHead(8 * 2 * 2)

    def extract_feat(self, x):
        return self.backbone(x)

    def forward(self, x):
        features = self.extract_feat(x)
        scores = features.mean(dim=(1, 2, 3))
        regions = features if scores.max() > -1e6 else features[:1]  # Python control flow on values, as NMS
        return self.roi_head(F.adaptive_avg_pool2d(regions, 2))


def test_modules_beyond_the_traceable_part_are_traced_alone_and_hold_blocks():
    """A path naming its traceable part: the head it runs beyond it (called once on one tensor) is traced on the
    input it got, and its fcs form a block through the ReLU the head applies after each of them."""
    torch.manual_seed(0)
    model = randomize_bn(TwoStage()).eval()
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with pytest.raises(RuntimeError, match='torch.export could not trace'):
        trace_model(model, (x,))

    def path(m, inputs):
        return m(inputs)
    path.traced_part = lambda m, inputs: m.extract_feat(inputs)
    extraction = extract_blocks(model, (x,), max_ratio=0.3, forward_fn=path)
    assert extraction.num_convs_total == 7  # 3 convs + the head's 4 fcs
    check_blocks(model, x, extraction)  # standalone blocks reproduce the model's forward exactly
    head = by_name(extraction)['roi_head.shared_fcs.0+roi_head.relu+roi_head.shared_fcs.1']
    assert head.prunable_convs == ['roi_head.shared_fcs.0'] and head.protected_convs == ['roi_head.shared_fcs.1']
    assert head.input_shape == [3, 32] and head.output_shape == [3, 32]

    only_part = extract_blocks(model, (x,), max_ratio=0.3, forward_fn=path.traced_part)
    assert not any(spec.name.startswith('roi_head') for spec in only_part.blocks)
    assert only_part.num_convs_total == 3


class NeedsSamples(nn.Module):
    """An OpenMMLab-style model whose ``mode='tensor'`` needs data samples; ``shape_only`` says whether samples
    carrying the image shape are enough for it."""

    def __init__(self, shape_only: bool) -> None:
        super().__init__()
        self.backbone = nn.Sequential(cbr(3, 8), cbr(8, 8))
        self.roi_head = BoxHead(8 * 2 * 2)
        self.shape_only = shape_only

    def extract_feat(self, x):
        return self.backbone(x)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        shapes = [sample.metainfo['img_shape'] for sample in data_samples]  # None: TypeError, as mmdet's RPN
        if not self.shape_only:
            [sample.metainfo['gt_instances'] for sample in data_samples]  # more than a shape: KeyError
        assert all(shape == tuple(inputs.shape[-2:]) for shape in shapes)
        return self.roi_head(F.adaptive_avg_pool2d(self.extract_feat(inputs), 2))


@pytest.mark.parametrize('shape_only,expected', [(True, 'tensor_with_samples'), (False, 'extract_feat')])
def test_the_path_is_chosen_by_trying_mode_tensor_then_with_shape_samples_then_extract_feat(shape_only, expected):
    from mmlego.models import trace_tensor_path
    model = NeedsSamples(shape_only).eval()
    path, graph = trace_tensor_path(model, torch.randn(2, 3, 16, 16))
    assert path == expected
    head_traced = any(graph.module_nodes.get(id(module)) for module in model.roi_head.modules())
    assert head_traced == (expected == 'tensor_with_samples')
