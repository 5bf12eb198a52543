"""Blocks of linear layers and blocks the model runs several times per forward (e.g. TRN's relation MLPs).

A head that applies one MLP to several slices of its input (mmaction's TRN applies each scale's MLP to several
sampled relations) holds a large share of some models' bytes. Such an MLP is a block: its descendant serves every
call, retrains on all the calls' inputs at once, and is timed and costed over all its calls.
"""
import pytest
import torch
from torch import nn

from mmlego.block_bank import BlockBank
from mmlego.block_extraction import extract_blocks
from mmlego.block_retraining import FeatureCapture, RetrainingConfig, retrain_descendants
from mmlego.block_switcher import BlockSwitcher
from mmlego.latency_estimation import BlockTimer
from mmlego.profiling import profile_costs

pytestmark = pytest.mark.usefixtures('one_torch_thread')

SLICES = 3


def mlp(features: int, hidden: int = 64, classes: int = 5) -> nn.Sequential:
    return nn.Sequential(nn.ReLU(), nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, classes))


class RelationNet(nn.Module):
    """A conv trunk, then one MLP applied to every slice of the features (called ``SLICES`` times) and one applied
    once to all of them, summed: the shape of TRN's multi-scale relation head."""

    def __init__(self, ragged: bool = False) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                                   nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.ragged = ragged
        self.per_slice = mlp(8)
        self.whole = mlp(32)

    def forward(self, x):
        features = self.trunk(x)  # (N, 32): four slices of 8
        out = self.whole(features)
        for index in range(SLICES):
            piece = features[:, 8 * index:8 * index + 8]
            if self.ragged and index:  # the calls' shapes differ: this one sees the slice twice over
                out = out + self.per_slice(torch.cat([piece, piece])).view(2, *out.shape).mean(0)
            else:
                out = out + self.per_slice(piece)
        return out


def make_model(**kwargs) -> RelationNet:
    torch.manual_seed(0)
    return RelationNet(**kwargs).eval()


def example(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def test_an_mlp_called_several_times_is_one_block_of_its_linear_layers():
    extraction = extract_blocks(make_model(), (example(),), max_ratio=0.5)
    blocks = {spec.name: spec for spec in extraction.blocks}
    assert extraction.num_convs_total == 6  # two convs and four linear layers
    assert set(blocks) == {'trunk', 'whole', 'per_slice'}
    per_slice = blocks['per_slice']
    assert per_slice.calls == SLICES and blocks['whole'].calls == 1
    assert per_slice.convs == ['per_slice.1', 'per_slice.3']
    assert per_slice.prunable_convs == ['per_slice.1']  # the last linear layer makes the output: kept whole
    assert per_slice.input_shape == [2, 8] and per_slice.output_shape == [2, 5]


def test_a_module_called_with_different_shapes_is_not_a_block():
    extraction = extract_blocks(make_model(ragged=True), (example(),), max_ratio=0.5)
    assert 'per_slice' not in {spec.name for spec in extraction.blocks}
    assert 'not each with one tensor of the same shape' in extraction.skipped['per_slice']


@pytest.fixture(scope='module')
def bank():
    model = make_model()
    return model, BlockBank.build(model, (example(),), sparsities=[0.0, 0.5], max_ratio=0.5, show_progress=False)


def test_a_repeated_block_prunes_its_hidden_layer_and_serves_every_call(bank):
    model, bank = bank
    x = example()
    with torch.no_grad():
        reference = model(x)
    descendant = bank.descendant('per_slice', 0.5).module
    assert descendant.layers[0][1].out_features == 32 and descendant.layers[0][3].in_features == 32
    switcher = BlockSwitcher(model, bank, guard_forward=False)
    try:
        switcher.switch({'per_slice': 0.5})
        assert model.per_slice[1].out_features == 32
        with torch.no_grad():
            pruned = model(x)
        assert pruned.shape == reference.shape and not torch.allclose(pruned, reference)
        switcher.switch({'per_slice': 0.0})
        with torch.no_grad():
            assert torch.equal(model(x), reference)
    finally:
        switcher.reset()


def test_a_repeated_block_costs_its_calls(bank):
    model, bank = bank
    profile_costs(bank, show_progress=False)
    from torch.utils.flop_counter import FlopCounterMode
    # measured apart: the FLOP counter over one real forward of the model, attributed to the module that ran them
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(example())
    measured = {name.split('.', 1)[1]: sum(ops.values()) for name, ops in counter.get_flop_counts().items()
                if name.count('.') == 1}
    assert measured['per_slice'] > 0
    assert bank.profiles.get('per_slice', 0.0).flops == measured['per_slice']  # all three calls, one profiled
    assert bank.profiles.get('whole', 0.0).flops == measured['whole']


def test_capture_concatenates_the_calls_and_the_timer_sums_them(bank):
    model, bank = bank
    x = example()
    capture = FeatureCapture(model, bank.blocks)
    features = capture.run(lambda m, b: m(b), x)
    inputs, outputs = features['per_slice']
    assert inputs.shape == (SLICES * 2, 8) and outputs.shape == (SLICES * 2, 5)
    trunk = model.trunk(x)
    for index in range(SLICES):  # call i's rows are the MLP's input and output of that call
        piece = trunk[:, 8 * index:8 * index + 8]
        assert torch.allclose(inputs[2 * index:2 * index + 2], piece)
        assert torch.allclose(outputs[2 * index:2 * index + 2], model.per_slice(piece))

    timer = BlockTimer(model, bank.blocks).attach()
    seen = []
    timer.listeners.append(seen.append)
    try:
        with torch.no_grad():
            for _ in range(3):
                model(x)
    finally:
        timer.detach()
    assert len(seen) == 3  # one timing per forward, emitted after the last call of the last block
    assert set(seen[-1].ms) == {'trunk', 'whole', 'per_slice'}
    assert seen[-1].input_numel['per_slice'] == 2 * 8  # the first call's input


class SlicesFirst(nn.Module):
    """The repeated MLP is the first block: it runs on each slice of the input, then one MLP on their sum."""

    def __init__(self) -> None:
        super().__init__()
        self.per_slice = mlp(8, classes=8)
        self.after = mlp(8)

    def forward(self, x):
        return self.after(sum(self.per_slice(x[:, 8 * index:8 * index + 8]) for index in range(SLICES)))


def test_a_forward_interrupted_in_a_repeated_first_block_leaves_nothing_in_the_next_timing():
    torch.manual_seed(0)
    model = SlicesFirst().eval()
    x = torch.randn(2, 8 * SLICES)
    blocks = extract_blocks(model, (x,), max_ratio=0.5).blocks
    assert [(spec.name, spec.calls) for spec in blocks] == [('per_slice', SLICES), ('after', 1)]
    timer = BlockTimer(model, blocks).attach()
    seen = []
    timer.listeners.append(seen.append)
    calls = []

    def fail_after_the_first_call(module, args, output):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError('interrupted')

    hook = model.per_slice.register_forward_hook(fail_after_the_first_call)
    try:
        with torch.no_grad():
            with pytest.raises(RuntimeError, match='interrupted'):
                model(x)  # one of the first block's three calls done, then an exception
            hook.remove()
            model(x)  # without a known start, its first calls continue the interrupted forward's: dropped
            assert seen == []
            model(x)
            assert len(seen) == 1  # and the timer found its footing again (it used to drop every forward after)

            hook = model.per_slice.register_forward_hook(fail_after_the_first_call)
            calls.clear()
            with pytest.raises(RuntimeError, match='interrupted'):
                timer.begin_forward()
                model(x)
            hook.remove()
            timer.begin_forward()  # what LegoDNN.forward and the latency profiler do before each forward
            model(x)
            assert len(seen) == 2 and set(seen[-1].ms) == {'per_slice', 'after'}
    finally:
        hook.remove()
        timer.detach()


def test_descendants_of_a_repeated_block_learn_from_all_its_calls(bank):
    import copy
    model, bank = bank
    descendants = {name: {s: d for s, d in by_s.items() if s > 0} for name, by_s in
                   copy.deepcopy(bank.descendants).items()}
    generator = torch.Generator().manual_seed(3)
    train = [torch.randn(4, 3, 8, 8, generator=generator) for _ in range(4)]
    val = [torch.randn(4, 3, 8, 8, generator=generator) for _ in range(2)]
    report = retrain_descendants(model, descendants, train, val, teacher_forward=lambda m, b: m(b),
                                 config=RetrainingConfig(epochs=6, lr=1e-2), show_progress=False)
    key = 'per_slice@0.5'
    assert report.best_val[key] < 0.5 * report.initial_val[key], (report.initial_val[key], report.best_val[key])
    # what it learnt holds on the model: the switched-in descendant is closer to the teacher than the pruned one
    x = example(8)
    switcher = BlockSwitcher(model, bank, guard_forward=False)
    try:
        with torch.no_grad():
            reference = model(x)
            switcher.switch({'per_slice': 0.5})
            untrained = float((model(x) - reference).pow(2).mean())
            model.per_slice = descendants['per_slice'][0.5].module.layers[0].eval()
            trained = float((model(x) - reference).pow(2).mean())
    finally:
        switcher.reset()
    assert trained < untrained, (trained, untrained)


def test_trn_relation_mlps_are_blocks_on_the_path_to_the_class_scores():
    """mmaction's TRN applies the MLP of each scale to several sampled relations; its recognizer's ``mode='tensor'``
    stops at the backbone unless ``stage='head'``, which the tensor path asks for."""
    from pathlib import Path

    from mmengine.config import Config

    from mmlego.models import build_model
    from mmlego.models.tensor_path import trace_tensor_path
    config = Path(__file__).resolve().parents[1] / 'configs' / 'action' / 'trn' / 'trn_r18_synthaction.py'
    torch.manual_seed(0)
    model = build_model(Config.fromfile(str(config)))
    clips = torch.randn(1, 8, 3, 64, 64)
    path, graph = trace_tensor_path(model, clips)
    extraction = extract_blocks(model, (clips,), graph=graph)
    mlps = {spec.name.rsplit('.', 1)[-1]: spec for spec in extraction.blocks if 'fc_fusion_scales' in spec.name}
    assert path == 'tensor' and len(mlps) == 7  # one MLP per scale, 8 frames down to 2
    assert mlps['0'].calls == 1 and all(mlps[str(k)].calls == 3 for k in range(1, 7))  # 3 sampled relations
    assert all(spec.output_shape == [1, 6] for spec in mlps.values())  # class scores: the MLPs end the path
