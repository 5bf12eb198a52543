"""Block retraining: held-out loss falls, the original block and BN statistics stay fixed, resume is exact."""
import copy
import json
import logging
import os

import pytest
import torch

from mmlego.block_extraction.block_module import block_module_of
from mmlego.block_retraining import (FeatureCapture, RetrainingConfig, RetrainingError, feature_loss,
                                     learning_rate, retrain_descendants)

from .test_block_bank import TinyNet, build_bank, make_tiny

BATCH = (4, 3, 16, 16)


pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def shared():
    teacher = make_tiny()
    bank = build_bank(teacher)
    generator = torch.Generator().manual_seed(5)
    train = [torch.randn(*BATCH, generator=generator) for _ in range(6)]
    val = [torch.randn(*BATCH, generator=generator) for _ in range(2)]
    return teacher, bank, train, val


def fresh(shared):
    """The teacher and a fresh copy of the untrained descendants."""
    teacher, bank, _, _ = shared
    return teacher, copy.deepcopy(bank.descendants)


def held_out_losses(teacher, descendants, batches) -> dict:
    capture = FeatureCapture(teacher, [next(iter(by_s.values())).spec for by_s in descendants.values()])
    losses = {}
    for batch in batches:
        features = capture.run(lambda model, b: model(b), batch)
        for name, by_sparsity in descendants.items():
            x, y = features[name]
            for sparsity, descendant in by_sparsity.items():
                with torch.no_grad():
                    loss = float(feature_loss('mse', descendant.module.eval()(x), y))
                losses[f'{name}@{sparsity:g}'] = losses.get(f'{name}@{sparsity:g}', 0.0) + loss / len(batches)
    return losses


def bn_buffers(descendants) -> dict:
    return {(name, s, key): t.clone() for name, by_s in descendants.items() for s, d in by_s.items()
            for key, t in d.module.state_dict().items() if 'running' in key or 'num_batches' in key}


def states(descendants) -> dict:
    return {(name, s): {k: t.clone() for k, t in d.module.state_dict().items()}
            for name, by_s in descendants.items() for s, d in by_s.items()}


def assert_states_close(a: dict, b: dict, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.allclose(a[key][name].float(), b[key][name].float(), atol=atol, rtol=0), (key, name)


def retrain(teacher, descendants, train, val, state_dir=None, teacher_forward=lambda model, batch: model(batch),
            **config):
    config.setdefault('lr', 1e-3)
    return retrain_descendants(teacher, descendants, train, val, teacher_forward=teacher_forward,
                               config=RetrainingConfig(**config),
                               state_dir=None if state_dir is None else str(state_dir), show_progress=False)


def test_held_out_loss_falls_original_and_bn_statistics_stay(shared):
    teacher, descendants = fresh(shared)
    _, _, train, val = shared
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    before, buffers, original = held_out_losses(teacher, descendants, val), bn_buffers(descendants), \
        states(descendants)
    # Weight decay would move even a zero-loss copy of the teacher's block, were sparsity 0.0 trained.
    report = retrain(teacher, descendants, train, val, epochs=3, weight_decay=1e-3)
    after = held_out_losses(teacher, descendants, val)
    assert report.epochs_run == 3 and [h['epoch'] for h in report.history] == [1, 2, 3]
    keys = ['b2@0.4', 'b2@0.8', 'stem+b1@0.4', 'stem+b1@0.8']
    assert sorted(report.best_val) == sorted(report.history[0]['train']) == sorted(report.history[0]['val']) == keys
    for key, value in report.best_val.items():
        assert after[key] == pytest.approx(value, rel=1e-5)  # the kept weights are those of the best epoch
        assert after[key] < 0.8 * before[key], (key, before[key], after[key])
    now = states(descendants)
    for name in descendants:  # sparsity 0.0 is the teacher's block, bit for bit; the others did learn
        assert all(torch.equal(t, original[(name, 0.0)][k]) for k, t in now[(name, 0.0)].items())
        assert after[f'{name}@0'] == before[f'{name}@0'] == 0.0
        assert any(not torch.equal(t, original[(name, 0.8)][k]) for k, t in now[(name, 0.8)].items())
    assert all(torch.equal(t, buffers[key]) for key, t in bn_buffers(descendants).items()), 'BN stats drifted'
    assert all(not d.module.training for by_s in descendants.values() for d in by_s.values())
    assert all(torch.equal(t, teacher_state[k]) for k, t in teacher.state_dict().items()), 'teacher modified'


def test_retrain_original_on_request_keeps_bn_statistics(shared):
    teacher, descendants = fresh(shared)
    _, _, train, val = shared
    with torch.no_grad():  # an exact copy has zero loss and gradient: move it away from the teacher first
        for param in descendants['b2'][0.0].module.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=torch.Generator().manual_seed(2)))
    buffers, before = bn_buffers(descendants), held_out_losses(teacher, descendants, val)
    report = retrain(teacher, descendants, train, val, retrain_original=True, epochs=2)
    assert report.best_val['b2@0'] < 0.8 * before['b2@0'] and report.best_val['stem+b1@0'] == 0.0
    assert all(torch.equal(t, buffers[key]) for key, t in bn_buffers(descendants).items()), 'BN stats drifted'


class LogRecords:
    """Messages logged through mmengine's current logger inside the context."""

    def __enter__(self):
        from mmengine.logging import MMLogger
        self.logger = MMLogger.get_current_instance()
        self.messages = []
        self.handler = logging.Handler()
        self.handler.emit = lambda record: self.messages.append(record.getMessage())
        self.logger.addHandler(self.handler)
        return self.messages

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)


def left_whole(descendants, name: str, sparsity: float) -> None:
    """Make ``name@sparsity`` what torch-pruning leaves when it cannot prune: the teacher's block, with a reason."""
    descendant = descendants[name][sparsity]
    descendant.module = copy.deepcopy(descendants[name][0.0].module)
    descendant.plan = copy.deepcopy(descendant.plan)
    descendant.plan.channels, descendant.plan.unpruned_reason = {}, 'no channel could be removed (test)'


def test_blocks_pruning_left_whole_are_not_retrained(shared):
    teacher, descendants = fresh(shared)
    _, _, train, val = shared
    left_whole(descendants, 'b2', 0.8)
    original = states(descendants)
    with LogRecords() as messages:  # weight decay would move the whole block, were it trained
        report = retrain(teacher, descendants, train, val, epochs=2, weight_decay=1e-3)
    assert report.skipped == ['b2@0.8']
    assert sorted(report.best_val) == sorted(report.history[0]['train']) == ['b2@0.4', 'stem+b1@0.4', 'stem+b1@0.8']
    now = states(descendants)
    assert all(torch.equal(t, original[('b2', 0.0)][k]) for k, t in now[('b2', 0.8)].items())  # the teacher's
    assert any(not torch.equal(t, original[('b2', 0.4)][k]) for k, t in now[('b2', 0.4)].items())
    assert not descendants['b2'][0.8].module.training
    notes = [m for m in messages if 'pruning left whole' in m]
    assert len(notes) == 1 and 'b2@0.8' in notes[0], messages


def test_nothing_to_retrain_runs_no_forward(shared):
    teacher, descendants = fresh(shared)
    for name in descendants:
        for sparsity in (0.4, 0.8):
            left_whole(descendants, name, sparsity)

    def no_forward(model, batch):
        raise AssertionError('nothing to retrain: the teacher must not run')

    report = retrain(teacher, descendants, shared[2], shared[3], teacher_forward=no_forward)
    assert report.epochs_run == 0 and not report.best_val and len(report.skipped) == 4


def test_untrained_weights_are_kept_when_training_only_worsens_the_held_out_loss(shared, tmp_path):
    teacher, descendants = fresh(shared)
    _, _, train, val = shared
    before, untrained = held_out_losses(teacher, descendants, val), states(descendants)
    with LogRecords() as messages:
        report = retrain(teacher, descendants, train, val, epochs=2, lr=0.2)  # far too large: every epoch is worse
    keys = sorted(report.best_val)
    assert report.initial_val == pytest.approx({key: before[key] for key in keys}, rel=1e-6)
    for key in keys:
        assert all(record['val'][key] > report.initial_val[key] for record in report.history), key
        assert report.best_epoch[key] == 0 and report.best_val[key] == report.initial_val[key]
    assert_states_close(states(descendants), untrained, atol=0)  # bit for bit the pruned, untrained weights
    assert any('keep their untrained pruned weights' in m for m in messages)
    # Resumed after epoch 1 (a new process, state from disk), the run keeps the same epoch-0 weights.
    _, first = fresh(shared)
    retrain(teacher, first, train, val, state_dir=tmp_path, epochs=1, lr=0.2)
    assert json.loads((tmp_path / 'state.json').read_text())['best_epoch'] == dict.fromkeys(keys, 0)
    _, resumed = fresh(shared)
    again = retrain(teacher, resumed, train, val, state_dir=tmp_path, epochs=2, lr=0.2)
    assert again.epochs_run == 1 and again.best_epoch == report.best_epoch
    assert again.initial_val == pytest.approx(report.initial_val, rel=1e-6)
    assert_states_close(states(resumed), untrained, atol=0)


def test_an_epoch_must_beat_the_untrained_weights_to_replace_them(shared):
    teacher, descendants = fresh(shared)
    _, _, train, val = shared
    report = retrain(teacher, descendants, train, val, epochs=3)  # lr 1e-3: training helps
    for key, epoch in report.best_epoch.items():
        losses = [report.initial_val[key]] + [record['val'][key] for record in report.history]
        assert epoch == min(range(len(losses)), key=losses.__getitem__), (key, losses)
        assert report.best_val[key] == pytest.approx(losses[epoch], rel=1e-6)
    assert any(epoch > 0 for epoch in report.best_epoch.values())


def test_resume_runs_only_the_missing_epochs(shared, tmp_path):
    teacher, straight = fresh(shared)
    _, _, train, val = shared
    full = retrain(teacher, straight, train, val, epochs=2)
    _, first = fresh(shared)
    assert retrain(teacher, first, train, val, state_dir=tmp_path, epochs=1).epochs_run == 1
    state = json.loads((tmp_path / 'state.json').read_text())
    assert state['epoch'] == 1 and sorted(os.listdir(tmp_path)) == \
        ['epoch_1.safetensors', 'epoch_1_optim.pth', 'state.json']
    _, resumed = fresh(shared)  # a new process: untrained descendants, state from disk
    report = retrain(teacher, resumed, train, val, state_dir=tmp_path, epochs=2)
    assert report.epochs_run == 1 and [h['epoch'] for h in report.history] == [1, 2]
    for mine, theirs in zip(report.history, full.history):
        for split in ('train', 'val'):
            assert mine[split] == pytest.approx(theirs[split], rel=1e-5, abs=1e-9)
    assert report.best_val == pytest.approx(full.best_val, rel=1e-5)
    assert_states_close(states(resumed), states(straight))
    assert sorted(os.listdir(tmp_path)) == ['epoch_2.safetensors', 'epoch_2_optim.pth', 'state.json']
    _, again = fresh(shared)  # everything done: nothing runs, the best weights are restored
    assert retrain(teacher, again, train, val, state_dir=tmp_path, epochs=2).epochs_run == 0
    assert_states_close(states(again), states(straight))


def test_a_constant_rate_state_is_written_as_before_the_schedule_existed(shared, tmp_path):
    """A constant-rate run records no schedule keys, so states written before ``lr_schedule`` existed resume."""
    teacher, descendants = fresh(shared)
    _, _, train, val = shared
    retrain(teacher, descendants, train, val, state_dir=tmp_path, epochs=1)
    config = json.loads((tmp_path / 'state.json').read_text())['config']
    assert not {'epochs', 'lr_schedule', 'min_lr_ratio'} & set(config) and config['lr'] == 1e-3
    assert retrain(teacher, fresh(shared)[1], train, val, state_dir=tmp_path, epochs=2).epochs_run == 1


def test_other_settings_in_the_same_state_dir_are_refused(shared, tmp_path):
    teacher, descendants = fresh(shared)
    _, _, train, val = shared
    retrain(teacher, descendants, train, val, state_dir=tmp_path, max_batches_per_epoch=1)
    with pytest.raises(ValueError, match='another run'):
        retrain(teacher, fresh(shared)[1], train, val, state_dir=tmp_path, max_batches_per_epoch=1, lr=5e-4)
    subset = {'b2': fresh(shared)[1]['b2']}
    with pytest.raises(ValueError, match='another run'):
        retrain(teacher, subset, train, val, state_dir=tmp_path, max_batches_per_epoch=1)


def test_failing_descendant_names_itself_and_keeps_last_epoch(shared, tmp_path):
    teacher, descendants = fresh(shared)
    _, _, train, val = shared
    calls = {'n': 0}
    per_epoch = len(train) + len(val)

    def explode(module, args):
        calls['n'] += 1
        if calls['n'] > len(val) + per_epoch + 1:  # after the epoch-0 held-out loss: second batch of epoch 2
            raise RuntimeError('boom')

    descendants['b2'][0.4].module.register_forward_pre_hook(explode)
    with pytest.raises(RetrainingError, match=r'b2@0\.4 failed at epoch 2, batch 1: RuntimeError: boom'):
        retrain(teacher, descendants, train, val, state_dir=tmp_path, epochs=3)
    assert json.loads((tmp_path / 'state.json').read_text())['epoch'] == 1
    _, resumed = fresh(shared)  # the fixed run resumes after epoch 1 and matches an uninterrupted one
    assert retrain(teacher, resumed, train, val, state_dir=tmp_path, epochs=3).epochs_run == 2
    _, straight = fresh(shared)
    retrain(teacher, straight, train, val, epochs=3)
    assert_states_close(states(resumed), states(straight))


def test_nan_inputs_and_empty_loaders_raise(shared):
    teacher, descendants = fresh(shared)
    _, _, train, val = shared
    nan_batch = torch.full(BATCH, float('nan'))
    with pytest.raises(RetrainingError, match=r"every descendant's loss is not finite \(first: stem\+b1@0\.4, loss nan "
                                              r"at epoch 1, batch 0\).*check the data pipeline"):
        retrain(teacher, descendants, [nan_batch], val)
    with pytest.raises(RetrainingError, match='training dataloader yielded no batch'):
        retrain(teacher, descendants, [], val)
    with pytest.raises(RetrainingError, match='held-out dataloader yielded no batch'):
        retrain(teacher, descendants, train[:1], [])
    with pytest.raises(RetrainingError, match='did not run blocks'):
        retrain(teacher, descendants, train[:1], val, teacher_forward=lambda model, batch: model.head)


class InplaceAfterBlock(TinyNet):
    """TinyNet whose frame scales ``b2``'s output in place (like an in-place activation after a block)."""

    def forward(self, x):
        x = self.b2(self.b1(self.stem(x)))
        return self.head(x.mul_(0.5))


def test_captured_features_survive_inplace_ops_of_the_teacher(shared):
    teacher, bank, train, _ = shared
    inplace = InplaceAfterBlock().eval()
    inplace.load_state_dict(teacher.state_dict())
    capture = FeatureCapture(inplace, bank.blocks)
    features = capture.run(lambda model, batch: model(batch), train[0])
    for spec in bank.blocks:
        x, y = features[spec.name]
        with torch.no_grad():
            assert torch.equal(block_module_of(inplace, spec).eval()(x), y), spec.name


def test_invalid_config():
    with pytest.raises(ValueError, match='unknown retraining loss'):
        RetrainingConfig(loss='l2')
    with pytest.raises(ValueError, match='epochs'):
        RetrainingConfig(epochs=0)


def test_descendant_optimizers_are_fused_on_cpu_and_step_as_the_unfused_adam():
    from mmlego.block_retraining.inputs import descendant_optimizer
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 2, 1))
    twin = copy.deepcopy(module)
    fused = descendant_optimizer(module, lr=1e-2, weight_decay=1e-4)
    plain = torch.optim.Adam(twin.parameters(), lr=1e-2, weight_decay=1e-4)
    assert fused.defaults['fused'] is True and len(fused.param_groups[0]['params']) == len(list(module.parameters()))
    x = torch.randn(2, 3, 8, 8)
    for _ in range(5):
        for model, optimizer in ((module, fused), (twin, plain)):
            optimizer.zero_grad(set_to_none=True)
            model(x).square().mean().backward()
            optimizer.step()
    for a, b in zip(module.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # steps of ~1e-2; float order differs
    plain.load_state_dict(fused.state_dict())  # states saved by either load into the other
    fused.load_state_dict(plain.state_dict())


def test_cosine_schedule_decays_from_lr_to_its_floor_one_step_at_a_time():
    config = RetrainingConfig(epochs=3, lr=1e-3, lr_schedule='cosine', min_lr_ratio=0.1)
    rates = [learning_rate(config, epoch, index, 4) for epoch in range(3) for index in range(4)]
    assert rates[0] == pytest.approx(1e-3) and rates[-1] == pytest.approx(1e-4)
    assert all(a > b for a, b in zip(rates, rates[1:]))  # strictly down, one step per batch
    assert rates[5] > 5.5e-4 > rates[6]  # the midpoint of 12 steps (0..11) sits between steps 5 and 6
    assert learning_rate(RetrainingConfig(lr=2e-3), 1, 3, 4) == 2e-3  # constant: LegoDNN's
    unknown = [learning_rate(config, epoch, 0, None) for epoch in range(3)]  # no len(): once per epoch
    assert unknown == pytest.approx([1e-3, 5.5e-4, 1e-4])
    with pytest.raises(ValueError, match='lr_schedule'):
        RetrainingConfig(lr_schedule='step')
    with pytest.raises(ValueError, match='min_lr_ratio'):
        RetrainingConfig(lr_schedule='cosine', min_lr_ratio=2)


def test_cosine_schedule_is_what_the_optimizers_step_with_and_resumes_on_the_same_curve(shared, tmp_path):
    teacher, straight = fresh(shared)
    _, _, train, val = shared
    seen = []
    original = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        seen.append(self.param_groups[0]['lr'])
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.optim.Adam, 'step', recording_step)
        full = retrain(teacher, straight, train, val, epochs=2, lr_schedule='cosine')
    config = RetrainingConfig(epochs=2, lr=1e-3, lr_schedule='cosine')
    per_step = [learning_rate(config, e, i, len(train)) for e in range(2) for i in range(len(train))]
    trainees = len(seen) // len(per_step)
    assert trainees > 1 and seen == pytest.approx([rate for rate in per_step for _ in range(trainees)])
    calls = []

    def interrupted(model, batch):  # the machine stops in the second epoch's first batch
        calls.append(1)
        if len(calls) > 2 * len(val) + len(train):
            raise KeyboardInterrupt
        return model(batch)

    with pytest.raises(KeyboardInterrupt):
        retrain(teacher, fresh(shared)[1], train, val, state_dir=tmp_path, teacher_forward=interrupted, epochs=2,
                lr_schedule='cosine')
    assert json.loads((tmp_path / 'state.json').read_text())['epoch'] == 1
    with pytest.raises(ValueError, match='another run'):  # a cosine run of another length is another curve
        retrain(teacher, fresh(shared)[1], train, val, state_dir=tmp_path, epochs=3, lr_schedule='cosine')
    _, resumed = fresh(shared)
    report = retrain(teacher, resumed, train, val, state_dir=tmp_path, epochs=2, lr_schedule='cosine')
    assert report.epochs_run == 1 and report.best_val == pytest.approx(full.best_val, rel=1e-5)
    assert_states_close(states(resumed), states(straight))


# -- inputs from the composites -------------------------------------------------------------------------------

def composite_losses(teacher, bank, descendants, batches) -> dict:
    """Held-out loss of every pruned descendant on its input in the all-at-its-sparsity composite, measured on the
    models the block switcher composes (another path than the retraining's own)."""
    from mmlego.block_switcher import BlockSwitcher
    bank = copy.copy(bank)
    bank.descendants = descendants
    capture = FeatureCapture(teacher, bank.blocks)
    losses = {}
    for sparsity in sorted({s for by_s in descendants.values() for s in by_s if s > 0}):
        model = copy.deepcopy(teacher)
        BlockSwitcher(model, bank, guard_forward=False).switch({spec.name: sparsity for spec in bank.blocks})
        for batch in batches:
            targets = capture.run(lambda m, b: m(b), batch)
            outputs = FeatureCapture(model, bank.blocks).run(lambda m, b: m(b), batch)
            for name, (_, output) in outputs.items():
                key = f'{name}@{sparsity:g}'
                loss = float(feature_loss('mse', output, targets[name][1]))
                losses[key] = losses.get(key, 0.0) + loss / len(batches)
    return losses


def test_composite_inputs_are_the_switched_models_and_train_each_descendant_alone(shared):
    from mmlego.block_retraining.inputs import CompositeInputs
    from mmlego.block_switcher import BlockSwitcher
    teacher, descendants = fresh(shared)
    _, bank, train, _ = shared
    before = {k: t.clone() for k, t in teacher.state_dict().items()}
    outputs = CompositeInputs(teacher, descendants).outputs(0.8, lambda model, batch: model(batch), train[0])
    # The same outputs as the model the block switcher composes at all-0.8 (another path to the same composite).
    switched, bank_copy = copy.deepcopy(teacher), copy.copy(bank)
    bank_copy.descendants = descendants
    BlockSwitcher(switched, bank_copy, guard_forward=False).switch({spec.name: 0.8 for spec in bank.blocks})
    expected = FeatureCapture(switched, bank.blocks).run(lambda model, batch: model(batch), train[0])
    assert outputs.keys() == expected.keys() == {'stem+b1', 'b2'}
    for name, output in outputs.items():
        assert torch.allclose(output, expected[name][1], atol=1e-5), name
    # A loss on the last block's output reaches its own descendant only: inputs are detached at every block.
    outputs['b2'].pow(2).mean().backward()
    assert all(p.grad is None for p in descendants['stem+b1'][0.8].module.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in descendants['b2'][0.8].module.parameters())
    assert all(torch.equal(before[k], t) for k, t in teacher.state_dict().items())  # the teacher is not touched
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.parametrize('inputs', ['composite', 'mixed'])
def test_retraining_on_composite_inputs_lowers_the_composites_loss(shared, inputs):
    """Trained where they run, every pruned descendant reproduces its block better inside the all-at-s composite
    than as pruned; the held-out loss the retraining keeps by is that one (a mean with the teacher's for mixed)."""
    teacher, descendants = fresh(shared)
    _, bank, train, val = shared
    untrained = composite_losses(teacher, bank, descendants, val)
    report = retrain(teacher, descendants, train, val, epochs=3, inputs=inputs)
    trained = composite_losses(teacher, bank, descendants, val)
    assert untrained.keys() == trained.keys() and len(trained) == 4
    for key in trained:
        assert trained[key] < untrained[key], (key, trained[key], untrained[key])
    kept = held_out_losses(teacher, descendants, val)
    for key, loss in report.best_val.items():
        expected = trained[key] if inputs == 'composite' else (trained[key] + kept[key]) / 2
        assert loss == pytest.approx(expected, rel=1e-4), key


def test_unknown_retraining_inputs_say_what_exists():
    with pytest.raises(ValueError, match="'teacher', 'composite', 'mixed'"):
        RetrainingConfig(inputs='students')


def test_composite_inputs_after_a_data_dependent_step_say_what_to_use(shared):
    """A path that selects rows by the data (a two-stage detector's proposals): a composite's later blocks see other
    rows than the teacher's, so composite inputs stop with one error naming the cause and the inputs that work."""
    teacher, descendants = fresh(shared)
    _, _, train, val = shared

    def selecting(model, batch):  # keeps as many rows as the first block's output says: data-dependent
        features = model.b1(model.stem(batch))
        rows = int((features > 0).sum()) % features.shape[0] + 1
        return model.head(model.b2(features[:rows]))

    with pytest.raises(RetrainingError, match=r"block b2's output has shape .* in a composite and .* in the teacher.*"
                                              r'train_cfg.retrain.inputs="teacher"'):
        retrain(teacher, descendants, train, val, epochs=1, inputs='composite', teacher_forward=selecting)
