"""Fan-out blocks: a piece that no run of modules closes (DeepLabv3's ASPP: branches side by side, resized and
concatenated by the head's own code) becomes one block whose standalone module replays the head's ops.

Checked against real forwards: the standalone block reproduces the live model's block output exactly, at the traced
size and at another; its descendants are physically smaller and keep the block's shapes; switched into the live
model they run through the model's own resize and concat; a bank keeps the wiring across save and load; a damaged
wiring is refused with a clear error.
"""
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmlego.block_bank import BlockBank
from mmlego.block_extraction import BlockSpec, extract_blocks
from mmlego.block_extraction.block_module import BlockModule, block_module_of
from mmlego.block_switcher import BlockSwitcher

from .test_block_extraction import capture, cbr, randomize_bn

pytestmark = pytest.mark.usefixtures('one_torch_thread')
ASPP_MEMBERS = ['head.image_pool', 'head.branches.0', 'head.branches.1', 'head.branches.2', 'head.bottleneck',
                'head.cls']


class ASPPLikeHead(nn.Module):
    """mmseg's ASPPHead in small: takes the feature tuple, resizes the image pool, concatenates the branches."""

    def __init__(self, c: int = 16, k: int = 8, classes: int = 3, with_input: bool = False) -> None:
        super().__init__()
        self.with_input = with_input  # PSPNet's pyramid also concatenates its input
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), cbr(c, k, 1))
        self.branches = nn.ModuleList([cbr(c, k, 1), cbr(c, k, 3), cbr(c, k, 5)])
        self.bottleneck = cbr(4 * k + c * with_input, k, 3)
        self.cls = nn.Conv2d(k, classes, 1)

    def forward(self, inputs):
        x = inputs[-1]
        outs = [F.interpolate(self.image_pool(x), size=x.shape[2:], mode='bilinear', align_corners=False)]
        outs.extend(branch(x) for branch in self.branches)
        outs.extend([x] if self.with_input else [])
        return self.cls(self.bottleneck(torch.cat(outs, dim=1)))


class SegNet(nn.Module):
    """Two backbone stages (module-aligned blocks) and the fan-out head."""

    def __init__(self, with_input: bool = False) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(cbr(3, 8), cbr(8, 8))
        self.stage2 = nn.Sequential(cbr(8, 16, stride=2), cbr(16, 16))
        self.head = ASPPLikeHead(with_input=with_input)

    def forward(self, x):
        first = self.stage1(x)
        return self.head((first, self.stage2(first)))


def make_net(seed: int = 0, with_input: bool = False) -> SegNet:
    torch.manual_seed(seed)
    return randomize_bn(SegNet(with_input)).eval()


def image(shape=(2, 3, 16, 16), seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def captured(model: nn.Module, spec: BlockSpec, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The block's input and output in a live forward."""
    io = capture(model, x, [spec])[1][spec.name]
    return io['in'], io['out']


def fan_out_spec(model: nn.Module, max_ratio: float = 0.6) -> BlockSpec:
    extraction = extract_blocks(model, (image(),), max_ratio=max_ratio)
    (spec,) = [spec for spec in extraction.blocks if spec.wiring is not None]
    return spec


def test_the_head_is_one_fan_out_block_reproducing_the_model():
    model = make_net()
    extraction = extract_blocks(model, (image(),), max_ratio=0.6)  # 10 convs: blocks of up to 6
    assert extraction.num_convs_covered == 10
    spec = fan_out_spec(model)
    assert spec.members == ASPP_MEMBERS and spec.protected_convs == ['head.cls']
    assert spec.input_shape == [2, 16, 8, 8] and spec.output_shape == [2, 3, 8, 8]
    ops = [step['op'] for step in spec.wiring['steps'] if 'op' in step]
    assert ops == ['aten.upsample_bilinear2d.vec', 'aten.cat.default']
    spec = BlockSpec.from_dict(json.loads(json.dumps(spec.to_dict())))  # as a manifest keeps it
    block = block_module_of(model, spec)
    for shape in [(2, 3, 16, 16), (1, 3, 24, 20)]:  # the traced size and another: the resize follows the input
        block_in, block_out = captured(model, spec, image(shape))
        with torch.no_grad():
            assert torch.equal(block(block_in), block_out)


def test_too_small_a_cap_leaves_the_branches_in_the_frame():
    extraction = extract_blocks(make_net(), (image(),), max_ratio=0.3)  # 3 convs per block
    assert all(spec.wiring is None for spec in extraction.blocks)
    covered = {conv for spec in extraction.blocks for conv in spec.convs}
    assert not any(conv.startswith('head.branches') for conv in covered)


def test_descendants_are_smaller_keep_shapes_and_switch_into_the_live_model(tmp_path):
    model = make_net()
    bank = BlockBank.build(model, (image(),), sparsities=[0.0, 0.5], max_ratio=0.6, show_progress=False)
    (spec,) = [spec for spec in bank.blocks if spec.wiring is not None]
    whole, pruned = bank.descendant(spec.name, 0.0).module, bank.descendant(spec.name, 0.5).module
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert count(pruned) < 0.6 * count(whole)
    assert pruned.layers[1][0].out_channels == 4 and pruned.layers[4][0].in_channels == 16  # branches, bottleneck
    block_in, block_out = captured(model, spec, image())
    with torch.no_grad():
        assert pruned.eval()(block_in).shape == block_out.shape
    loaded = BlockBank.load(bank.save(tmp_path / 'bank'), model)
    twin = loaded.descendant(spec.name, 0.5)
    assert twin.spec.wiring == spec.wiring
    with torch.no_grad():
        assert torch.equal(twin.module(block_in), pruned(block_in))
        BlockSwitcher(model, loaded, guard_forward=False).switch({spec.name: 0.5})
        _, switched_out = captured(model, spec, image())
        assert torch.equal(switched_out, pruned(block_in))  # the model's own resize and concat around it


def test_a_block_input_concatenated_with_the_branches_keeps_its_channels_not_theirs():
    """PSPNet's pyramid: the block input joins the concat, so its channels in the bottleneck's input stay whole, while
    the branch convs still shrink (a concat ties its inputs only when its output is tied)."""
    model = make_net(with_input=True)
    bank = BlockBank.build(model, (image(),), sparsities=[0.0, 0.5], max_ratio=0.6, show_progress=False)
    (spec,) = [spec for spec in bank.blocks if spec.wiring is not None]
    assert spec.protected_convs == ['head.cls']
    pruned = bank.descendant(spec.name, 0.5).module.eval()
    assert pruned.layers[1][0].out_channels == 4 and pruned.layers[4][0].in_channels == 4 * 4 + 16
    block_in, block_out = captured(model, spec, image())
    with torch.no_grad():
        assert pruned(block_in).shape == block_out.shape


@pytest.mark.parametrize('damage, message', [
    (lambda w: w['steps'][1].update(op='aten.no_such_op.default'), 'this torch does not have'),
    (lambda w: w['steps'][0].update(member=9), 'calls member 9'),
    (lambda w: w['steps'][1]['args'].__setitem__(0, {'ref': 'nowhere'}), 'computed nowhere before'),
    (lambda w: w.update(output='nowhere'), 'name its output'),
])
def test_damaged_wiring_is_refused(damage, message):
    model = make_net()
    spec = fan_out_spec(model)
    wiring = json.loads(json.dumps(spec.wiring))
    damage(wiring)
    with pytest.raises(ValueError, match=message):
        BlockModule(spec.members, [model.get_submodule(m) for m in spec.members], wiring)


@pytest.mark.parametrize('settings', [dict(), dict(inputs='composite'), dict(through_model='distill')])
def test_fan_out_descendants_retrain_from_the_teachers_pass(settings):
    """One teacher pass per batch feeds the fan-out block's descendants as any block's (its input is the first
    member's, its output the last member's); trained on their block's input, through the composite or through the
    rest of the model, the pruned one reproduces its block better than as pruned."""
    from .test_block_retraining import held_out_losses, retrain
    model = make_net()
    bank = BlockBank.build(model, (image(),), sparsities=[0.0, 0.5], max_ratio=0.6, show_progress=False)
    (spec,) = [spec for spec in bank.blocks if spec.wiring is not None]
    train = [image(seed=seed) for seed in range(10, 16)]
    val = [image(seed=seed) for seed in range(20, 22)]
    key = f'{spec.name}@0.5'
    before = held_out_losses(model, bank.descendants, val)[key]
    retrain(model, bank.descendants, train, val, epochs=3, lr=3e-3, **settings)
    assert held_out_losses(model, bank.descendants, val)[key] < before
