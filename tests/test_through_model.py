"""Descendants trained through the rest of the model: the composite is the switched model, only its descendants
learn, the configurations are reproducible, the losses through the model fall, the kept epoch is the composite's,
resume is exact."""
import copy
import json

import pytest
import torch
import torch.nn.functional as F

from mmlego.block_retraining import RetrainingConfig, retrain_descendants
from mmlego.block_retraining.through_model import ThroughModel, distill_loss
from mmlego.block_switcher import BlockSwitcher

from .test_block_retraining import (LogRecords, assert_states_close, fresh, retrain, shared,  # noqa: F401
                                    states)

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def forward(model, batch):
    return model(batch)


def switched(teacher, bank, descendants, configuration):
    """The model the block switcher composes (another path to the composite than the retraining's own)."""
    model, bank = copy.deepcopy(teacher), copy.copy(bank)
    bank.descendants = descendants
    BlockSwitcher(model, bank, guard_forward=False).switch(configuration)
    return model


def composite_errors(teacher, bank, descendants, batches) -> dict:
    """Sparsity -> the all-at-s composite's relative output error against the teacher on ``batches``."""
    errors = {}
    for sparsity in (0.4, 0.8):
        model = switched(teacher, bank, descendants, {spec.name: sparsity for spec in bank.blocks})
        with torch.no_grad():
            errors[sparsity] = sum(float(distill_loss(model(x), teacher(x))) for x in batches) / len(batches)
    return errors


def pruned(descendants) -> dict:
    return {f'{name}@{s:g}': d for name, by_s in descendants.items() for s, d in by_s.items() if s > 0}


def test_a_step_is_the_switched_model_and_moves_only_its_descendants(shared):
    teacher, descendants = fresh(shared)
    _, bank, train, _ = shared
    through = ThroughModel(teacher, descendants, pruned(descendants), 'distill', configurations='uniform', lr=1e-3)
    configuration = through.configuration(0, 0)
    assert configuration == {'stem+b1': 0.4, 'b2': 0.4}
    _, outputs = through.composite.run(configuration, forward, train[0], detach=False)
    expected = switched(teacher, bank, descendants, configuration)(train[0])
    assert torch.allclose(outputs, expected, atol=1e-5)
    before_teacher, before = copy.deepcopy(teacher.state_dict()), states(descendants)
    with torch.no_grad():
        targets = teacher(train[0])
    synced = []
    loss = through.step(0, 0, forward, train[0], targets, rate=1e-3, grad_sync=synced.append)
    assert sorted(map(id, synced)) == sorted(id(descendants[name][0.4].module) for name in ('stem+b1', 'b2'))
    assert loss == pytest.approx(float(distill_loss(expected, targets)), rel=1e-4)
    after = states(descendants)
    for (name, sparsity), state in after.items():
        changed = any(not torch.equal(state[k], before[(name, sparsity)][k]) for k in state)
        assert changed == (sparsity == 0.4), (name, sparsity)  # 0.0 is the teacher's, 0.8 was not in the composite
    assert all(torch.equal(before_teacher[k], t) for k, t in teacher.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters())
    # A stopped descendant runs in the composite but neither moves nor keeps a gradient.
    frozen = states(descendants)[('b2', 0.4)]
    through.step(0, 0, forward, train[1], targets, rate=1e-3, skip=('b2@0.4',))
    assert_states_close({'b2': states(descendants)[('b2', 0.4)]}, {'b2': frozen}, atol=0)
    assert all(p.grad is None for p in descendants['b2'][0.4].module.parameters())


def test_random_configurations_are_reproducible_and_visit_every_choice(shared):
    teacher, descendants = fresh(shared)
    one = ThroughModel(teacher, descendants, pruned(descendants), 'distill')
    two = ThroughModel(teacher, descendants, pruned(descendants), 'distill')
    configurations = [one.configuration(epoch, index) for epoch in range(3) for index in range(12)]
    assert configurations == [two.configuration(epoch, index) for epoch in range(3) for index in range(12)]
    assert all(one.configuration(1, index) == {'stem+b1': 0.8, 'b2': 0.8} for index in (0, 3, 6, 9))
    for name in ('stem+b1', 'b2'):
        assert {c[name] for c in configurations} == {0.0, 0.4, 0.8}
    assert one.configuration(0, 1) != one.configuration(1, 1) or one.configuration(0, 2) != one.configuration(1, 2)


def test_distilling_through_the_model_beats_legodnns_retraining_on_the_composites(shared):
    """Equal epochs: the all-at-s composites' output error falls below LegoDNN's retraining (blocks alone), and
    the epoch kept is the one of the lowest held-out error of the all-at-its-sparsity composite."""
    teacher, legodnn = fresh(shared)
    _, bank, train, val = shared
    untrained = composite_errors(teacher, bank, legodnn, val)
    retrain(teacher, legodnn, train, val, epochs=4)
    _, through = fresh(shared)
    report = retrain(teacher, through, train, val, epochs=4, through_model='distill')
    alone, together = composite_errors(teacher, bank, legodnn, val), composite_errors(teacher, bank, through, val)
    for sparsity in (0.4, 0.8):
        assert together[sparsity] < alone[sparsity] < untrained[sparsity], (sparsity, together, alone, untrained)
    for key, loss in report.best_val.items():
        assert loss == pytest.approx(together[float(key.split('@')[1])], rel=1e-4), key
        assert loss == min([report.initial_val[key]] + [h['val'][key] for h in report.history])
    assert all(h['through_train'] > 0 for h in report.history)
    assert report.history[-1]['through_train'] < report.history[0]['through_train']


def test_the_task_loss_through_the_model_trains_towards_the_labels(shared):
    """Labels of another function than the teacher's (its last block perturbed): the composites learn them, and
    the epoch kept is chosen by the task loss on held-out labels (by distillation where the batches have none)."""
    teacher, descendants = fresh(shared)
    _, bank, train, val = shared
    labeller = copy.deepcopy(teacher)
    with torch.no_grad():
        for parameter in labeller.b2.parameters():
            parameter.add_(0.02 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(3)))
        labelled = [(x, labeller(x)) for x in train]
        held_out = [(x, labeller(x)) for x in val]

    def task_loss(model, batch):
        return F.mse_loss(model(batch[0]), batch[1])

    def label_error(model, batches):
        with torch.no_grad():
            return sum(float(task_loss(model, batch)) for batch in batches) / len(batches)

    configuration = {spec.name: 0.8 for spec in bank.blocks}
    before = label_error(switched(teacher, bank, descendants, configuration), held_out)
    config = RetrainingConfig(lr=1e-3, epochs=3, through_model='task')
    with pytest.raises(ValueError, match='needs a task_loss'):
        retrain_descendants(teacher, descendants, labelled, None, teacher_forward=lambda m, b: m(b[0]),
                            config=config, show_progress=False)
    report = retrain_descendants(teacher, descendants, labelled, held_out, teacher_forward=lambda m, b: m(b[0]),
                                 config=config, show_progress=False, task_loss=task_loss)
    after = label_error(switched(teacher, bank, descendants, configuration), held_out)
    assert after < 0.6 * before, (before, after)
    assert report.best_val['b2@0.8'] == pytest.approx(after, rel=1e-4)
    assert report.history[-1]['through_train'] < report.history[0]['through_train']
    # Held-out batches without labels: a warning, and the distillation loss picks the epoch.
    _, unlabelled = fresh(shared)
    with LogRecords() as messages:
        report = retrain_descendants(teacher, unlabelled, labelled, [(x, None) for x in val],
                                     teacher_forward=lambda m, b: m(b[0]), config=config, show_progress=False,
                                     task_loss=task_loss)
    assert any('carry no training targets' in message for message in messages)
    model = switched(teacher, bank, unlabelled, configuration)
    with torch.no_grad():
        distilled = sum(float(distill_loss(model(x), teacher(x))) for x in val) / len(val)
    assert report.best_val['b2@0.8'] == pytest.approx(distilled, rel=1e-4)


def test_resume_through_the_model_is_exact(shared, tmp_path):
    teacher, straight = fresh(shared)
    _, _, train, val = shared
    full = retrain(teacher, straight, train, val, epochs=2, through_model='distill')
    _, first = fresh(shared)
    retrain(teacher, first, train, val, state_dir=tmp_path, epochs=1, through_model='distill')
    config = json.loads((tmp_path / 'state.json').read_text())['config']
    assert config['through_model'] == 'distill' and config['through_configurations'] == 'random'
    _, resumed = fresh(shared)
    report = retrain(teacher, resumed, train, val, state_dir=tmp_path, epochs=2, through_model='distill')
    assert report.epochs_run == 1
    assert report.history[1]['through_train'] == pytest.approx(full.history[1]['through_train'], rel=1e-5)
    assert_states_close(states(resumed), states(straight))
    with pytest.raises(ValueError, match='another run'):  # a LegoDNN run does not resume a state trained through
        retrain(teacher, fresh(shared)[1], train, val, state_dir=tmp_path, epochs=3)


def test_unknown_through_settings_say_what_exists():
    with pytest.raises(ValueError, match=r"None \(LegoDNN.*'distill', 'task'"):
        RetrainingConfig(through_model='kd')
    with pytest.raises(ValueError, match="'uniform', 'random'"):
        RetrainingConfig(through_model='distill', through_configurations='all')


def test_settings_recorded_before_the_newer_keys_existed_still_match():
    """Pipelines and retraining states recorded before ``inputs`` / ``through_model`` existed resume with the
    defaults; a run trained through the model records how."""
    legodnn = RetrainingConfig(epochs=6, lr=1e-3).recorded()
    assert not {'inputs', 'through_model', 'through_configurations', 'through_lr_ratio'} & set(legodnn)
    assert legodnn == {k: v for k, v in RetrainingConfig(epochs=6, lr=1e-3).__dict__.items()
                       if k not in ('inputs', 'through_model', 'through_configurations', 'through_lr_ratio')}
    through = RetrainingConfig(through_model='task', inputs='mixed').recorded()
    assert (through['through_model'], through['through_configurations'], through['inputs']) == \
        ('task', 'random', 'mixed')
    with pytest.raises(ValueError, match='through_lr_ratio must be a number > 0'):
        RetrainingConfig(through_model='distill', through_lr_ratio=0)


def test_composite_inputs_and_training_through_share_one_teacher_copy(shared, monkeypatch):
    from mmlego.block_retraining import inputs
    teacher, descendants = fresh(shared)
    _, bank, train, val = shared
    copies = []
    original = inputs.CompositeInputs.__init__
    monkeypatch.setattr(inputs.CompositeInputs, '__init__', lambda self, *a: copies.append(self) or original(self, *a))
    report = retrain(teacher, descendants, train, val, epochs=1, inputs='mixed', through_model='distill')
    assert len(copies) == 1 and report.history[0]['through_train'] > 0
    errors = composite_errors(teacher, bank, descendants, val)
    for key, loss in report.best_val.items():
        assert loss == pytest.approx(errors[float(key.split('@')[1])], rel=1e-4), key


def test_outputs_whose_count_depends_on_the_data_cannot_be_distilled_and_say_what_to_use():
    """A two-stage detector's path returns one row per proposal, and a composite proposes other boxes than the
    teacher: the error names the cause and the loss that works (the task's)."""
    from mmlego.block_retraining import RetrainingError
    with pytest.raises(RetrainingError, match='through_model="task"'):
        distill_loss((torch.zeros(97, 4),), (torch.zeros(100, 4),))
    assert float(distill_loss((torch.ones(3, 4),), (torch.ones(3, 4),))) == 0.0
