"""Switching under concurrent load: forwards never see a mix, no lock leaks (KeyboardInterrupt included), memory stays
flat, and a switcher built on an already-switched model knows what it runs."""
import copy
import itertools
import random
import threading
import time

import pytest
import torch

from mmlego.block_bank import BlockBank
from mmlego.block_switcher import BlockSwitcher
from mmlego.profiling import resident_device_bytes

from .test_block_bank import build_bank, example_input, make_tiny
from .test_resident_memory import trained  # noqa: F401 (a fixture)

SWITCHES_PER_THREAD = 1500  # two switching threads: 3000 switches in all
TIME_LIMIT = 120.0  # seconds: the stress test stops (and fails) if it takes longer than this

pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture
def loaded(trained, tmp_path):
    """A fresh live model, its bank loaded from disk (file-backed: descendants are materialized on switch-in)."""
    teacher, bank = trained
    model = copy.deepcopy(teacher)
    return model, BlockBank.load(bank.save(tmp_path / 'bank'), model)


def run(model, x):
    with torch.no_grad():
        return model(x)


def every_selection(bank) -> list[dict]:
    names = [spec.name for spec in bank.blocks]
    return [dict(zip(names, combo)) for combo in itertools.product(bank.sparsities, repeat=len(names))]


def test_stress_two_switching_threads_and_one_serving_thread(loaded):
    model, bank = loaded
    x = example_input(seed=3)
    switcher = BlockSwitcher(model, bank)
    selections = every_selection(bank)
    outputs = []
    for selection in selections:  # the output of every complete selection
        switcher.switch(selection)
        outputs.append(run(model, x))
    switcher.reset()
    baseline = resident_device_bytes(model, switcher.held_modules())
    stop, errors = threading.Event(), []
    counts = {'switches': 0, 'forwards': 0, 'mixed': 0}
    deadline = time.monotonic() + TIME_LIMIT

    def switch_randomly(seed):
        rng = random.Random(seed)
        try:
            for _ in range(SWITCHES_PER_THREAD):
                if time.monotonic() > deadline:
                    return
                switcher.switch(rng.choice(selections))
                counts['switches'] += 1  # the GIL makes += on a dict item safe enough for a count
                time.sleep(rng.uniform(0, 0.001))  # a budget changes between switches; forwards run meanwhile
        except BaseException as error:  # noqa: B902 - reported by the test
            errors.append(error)

    def serve():
        try:
            while not stop.is_set():
                out = run(model, x)
                counts['forwards'] += 1
                if not any(torch.equal(out, expected) for expected in outputs):
                    counts['mixed'] += 1
        except BaseException as error:  # noqa: B902
            errors.append(error)

    server = threading.Thread(target=serve, daemon=True)
    switchers = [threading.Thread(target=switch_randomly, args=(seed,), daemon=True) for seed in (1, 2)]
    server.start()
    for thread in switchers:
        thread.start()
    for thread in switchers:
        thread.join(TIME_LIMIT + 10)
    stop.set()
    server.join(10)
    print(f'\nstress: {counts["switches"]} switches, {counts["forwards"]} forwards, {counts["mixed"]} mixed')
    assert not any(thread.is_alive() for thread in switchers + [server]), 'deadlock'
    assert not errors, errors
    assert counts['switches'] == 2 * SWITCHES_PER_THREAD, f'not done within {TIME_LIMIT} s: {counts}'
    assert counts['mixed'] == 0 and counts['forwards'] >= 100, counts
    switcher.reset()
    assert resident_device_bytes(model, switcher.held_modules()) == baseline  # nothing left materialized
    assert not any(d.materialized for by in bank.descendants.values() for s, d in by.items() if s > 0)


def test_keyboard_interrupt_inside_a_forward_leaves_the_lock_free(loaded):
    model, bank = loaded
    x = example_input(seed=3)
    switcher = BlockSwitcher(model, bank)
    reference = run(model, x)

    def interrupt(module, args):
        raise KeyboardInterrupt

    handle = model.b1.register_forward_pre_hook(interrupt)
    caught = []

    def forward():
        try:
            run(model, x)
        except KeyboardInterrupt:
            caught.append(True)

    thread = threading.Thread(target=forward, daemon=True)
    thread.start()
    thread.join(5)
    handle.remove()
    assert caught == [True]
    done = threading.Thread(target=switcher.switch, args=({'b2': 0.8},), daemon=True)
    done.start()
    done.join(5)
    assert not done.is_alive(), 'the interrupted forward kept its read lock: the switch blocks forever'
    assert switcher.selection['b2'] == 0.8
    switcher.reset()
    assert torch.equal(run(model, x), reference)


def test_new_switcher_takes_over_the_previous_one(loaded):
    model, bank = loaded
    x = example_input(seed=3)
    reference = run(model, x)
    first = BlockSwitcher(model, bank)
    first.switch({'b2': 0.4, 'stem+b1': 0.8})
    expected = run(model, x)
    second = BlockSwitcher(model, bank)
    assert second.selection == {'stem+b1': 0.8, 'b2': 0.4}
    assert torch.equal(run(model, x), expected)
    with pytest.raises(RuntimeError, match='taken over'):
        first.switch({'b2': 0.0})
    assert second.switch({'b2': 0.8}) == ['b2'] and not bank.descendant('b2', 0.4).materialized
    second.reset()
    assert torch.equal(run(model, x), reference)
    assert not any(d.materialized for by in bank.descendants.values() for s, d in by.items() if s > 0)


def test_switcher_of_another_teachers_bank_is_refused(loaded, trained):
    model, bank = loaded
    owner = BlockSwitcher(model, bank)
    owner.switch({'b2': 0.4})
    other = build_bank(make_tiny(seed=5))
    with pytest.raises(ValueError, match="another teacher's bank"):
        BlockSwitcher(model, other)


def test_switched_model_without_a_switcher_is_recognised(trained):
    teacher, bank = trained
    model, bank = copy.deepcopy(teacher), copy.deepcopy(bank)
    x = example_input(seed=3)
    first = BlockSwitcher(model, bank)
    first.switch({'b2': 0.8})
    expected = run(model, x)
    first.detach()  # the model keeps running b2 at 0.8 and has no owner now
    second = BlockSwitcher(model, bank)
    assert second.selection == {'stem+b1': 0.0, 'b2': 0.8}
    assert torch.equal(run(model, x), expected)
    second.reset()  # a built bank holds a copy of the teacher's block: back to the teacher exactly
    assert torch.equal(run(model, x), run(teacher, x))


def test_switched_model_with_a_loaded_bank_is_recognised_and_returns_to_the_teacher(loaded):
    model, bank = loaded
    x = example_input(seed=3)
    reference = run(model, x)
    first = BlockSwitcher(model, bank)
    first.switch({'b2': 0.8, 'stem+b1': 0.4})
    expected = run(model, x)
    first.detach()  # the teacher's switched-out blocks stay where the first switcher put them
    del first
    second = BlockSwitcher(model, bank)
    assert second.selection == {'stem+b1': 0.4, 'b2': 0.8}
    assert torch.equal(run(model, x), expected)
    second.reset()  # the loaded bank's sparsity 0.0 is the teacher's own block
    assert torch.equal(run(model, x), reference)


def test_deep_copy_of_a_guarded_model_runs_without_the_lock(loaded):
    model, bank = loaded
    x = example_input(seed=3)
    switcher = BlockSwitcher(model, bank)
    switcher.switch({'b2': 0.4})
    copied = copy.deepcopy(model)
    with switcher.frozen():  # the original's read lock is held here; the copy does not take it
        assert torch.equal(run(copied, x), run(model, x))
    assert getattr(copied.forward, '__self__', None) is copied  # the copy's own plain forward
