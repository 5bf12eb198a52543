"""Block switcher: only changed blocks are swapped, from memory; all-0.0 is the teacher; forwards never see a mix."""
import builtins
import copy
import os
import shutil
import threading
import time

import pytest
import torch

from mmlego.block_bank import BlockBank
from mmlego.block_switcher import BlockSwitcher

from .test_block_bank import build_bank, example_input, make_tiny, perturb

PAUSE = 0.005  # seconds slept between the two blocks of a forward in the concurrency tests


pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def shared():
    teacher = make_tiny()
    return teacher, perturb(build_bank(teacher))


@pytest.fixture
def setup(shared):
    """A fresh live model (a copy of the teacher), its bank, an input and the teacher's output."""
    teacher, bank = shared
    model, bank = copy.deepcopy(teacher), copy.deepcopy(bank)
    x = example_input(seed=3)
    with torch.no_grad():
        reference = teacher(x)
    return model, bank, x, reference


def all_at(bank: BlockBank, sparsity: float) -> dict:
    return {spec.name: sparsity for spec in bank.blocks}


def members(model) -> dict:
    return {name: model.get_submodule(name) for name in ('stem', 'b1', 'b2', 'head')}


def num_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def run(model, x):
    with torch.no_grad():
        return model(x)


def test_only_changed_blocks_are_swapped(setup):
    model, bank, x, _ = setup
    switcher = BlockSwitcher(model, bank)
    before = members(model)
    assert switcher.selection == {'stem+b1': 0.0, 'b2': 0.0}
    assert switcher.switch({'b2': 0.4}) == ['b2']
    after = members(model)
    assert after['b2'] is bank.descendant('b2', 0.4).module.layers[0]
    assert all(after[name] is before[name] for name in ('stem', 'b1', 'head'))
    assert switcher.switch({'b2': 0.4, 'stem+b1': 0.0}) == []  # nothing changes: no module is touched
    assert members(model) == after
    assert switcher.switch({'stem+b1': 0.8}) == ['stem+b1']
    now = members(model)
    assert now['b2'] is after['b2'] and now['head'] is before['head']
    assert now['stem'] is bank.descendant('stem+b1', 0.8).module.layers[0]
    assert now['b1'] is bank.descendant('stem+b1', 0.8).module.layers[1]
    assert switcher.selection == {'stem+b1': 0.8, 'b2': 0.4}
    assert sorted(switcher.switch(all_at(bank, 0.0))) == ['b2', 'stem+b1']


def test_max_sparsity_shrinks_and_zero_restores_the_teacher(setup):
    model, bank, x, reference = setup
    switcher = BlockSwitcher(model, bank)
    params = num_params(model)
    assert torch.equal(run(model, x), reference)
    switcher.switch(all_at(bank, 0.8))
    assert num_params(model) < params
    smallest = run(model, x)
    assert smallest.shape == reference.shape and not torch.equal(smallest, reference)
    assert switcher.switch(all_at(bank, 0.0)) and torch.equal(run(model, x), reference)
    assert num_params(model) == params
    switcher.switch({'b2': 0.4})  # an intermediate composite, then back
    assert not torch.equal(run(model, x), reference)
    assert switcher.reset() == ['b2']
    assert torch.equal(run(model, x), reference) and switcher.selection == all_at(bank, 0.0)


def test_invalid_selections_change_nothing(setup):
    model, bank, x, reference = setup
    switcher = BlockSwitcher(model, bank)
    before = members(model)
    with pytest.raises(KeyError, match=r"unknown blocks \['layer9'\].*stem\+b1"):
        switcher.switch({'b2': 0.4, 'layer9': 0.4})
    with pytest.raises(ValueError, match=r'b2 has no descendant at sparsity 0.5.*0.4'):
        switcher.switch({'stem+b1': 0.8, 'b2': 0.5})
    assert members(model) == before and switcher.selection == all_at(bank, 0.0)
    assert torch.equal(run(model, x), reference)


def test_switching_reads_nothing_from_disk(setup, tmp_path, monkeypatch):
    """The bank file is mapped at load: a switch reads nothing of the bank directory (it may be gone). The only file
    a switch touches is the switcher's own spill of the teacher's switched-out blocks (CPU), written once."""
    model, bank, x, reference = setup
    loaded = BlockBank.load(bank.save(tmp_path / 'bank'), model)
    switcher = BlockSwitcher(model, loaded)
    shutil.rmtree(tmp_path / 'bank')

    def no_disk(*args, **kwargs):
        raise AssertionError('a switch must not read files')

    import safetensors
    import safetensors.torch
    real_safe_open, real_save_file, spills = safetensors.safe_open, safetensors.torch.save_file, []

    def spill_only(path, *args, **kwargs):
        assert str(path).startswith(str(switcher.offload.spill_dir)), f'a switch opened {path}'
        return real_safe_open(path, *args, **kwargs)

    def counted_save(tensors, path, *args, **kwargs):
        spills.append(path)
        return real_save_file(tensors, path, *args, **kwargs)

    for target, name in [(builtins, 'open'), (safetensors.torch, 'load_file'), (torch, 'load')]:
        monkeypatch.setattr(target, name, no_disk)
    monkeypatch.setattr(safetensors, 'safe_open', spill_only)
    monkeypatch.setattr(safetensors.torch, 'save_file', counted_save)
    for _ in range(3):
        switcher.switch(all_at(loaded, 0.8))
        assert not torch.equal(run(model, x), reference)
        switcher.switch({'stem+b1': 0.4, 'b2': 0.0})
        switcher.reset()
        assert torch.equal(run(model, x), reference)
    assert len(spills) == 2  # each teacher block spilled once, at its first switch-out
    switcher.detach()
    assert switcher.offload.spill_dir is None and not any(os.path.exists(path) for path in spills)


def _toggle(switcher, bank, stop, counts):
    while not stop.is_set():
        for sparsity in (0.8, 0.0):
            switcher.switch(all_at(bank, sparsity))
            counts['switches'] += 1
            time.sleep(PAUSE / 3)


def _forwards_during_switching(model, bank, x, guard_forward, forwards):
    """Outputs of ``forwards`` forwards while another thread keeps switching between all-0.0 and all-0.8."""
    switcher = BlockSwitcher(model, bank, guard_forward=guard_forward)
    switcher.switch(all_at(bank, 0.8))
    small = run(model, x)
    switcher.reset()
    full = run(model, x)
    model.pause = PAUSE
    stop, counts = threading.Event(), {'switches': 0}
    thread = threading.Thread(target=_toggle, args=(switcher, bank, stop, counts), daemon=True)
    thread.start()
    seen = {'full': 0, 'small': 0, 'mixed': 0}
    try:
        for _ in range(forwards):
            out = run(model, x)
            seen['full' if torch.equal(out, full) else 'small' if torch.equal(out, small) else 'mixed'] += 1
    finally:
        stop.set()
        thread.join(5)
        model.pause = 0.0
    assert not thread.is_alive()
    return seen, counts['switches']


def test_concurrent_switch_and_forward_never_mix(setup):
    model, bank, x, _ = setup
    seen, switches = _forwards_during_switching(model, bank, x, guard_forward=True, forwards=40)
    assert seen['mixed'] == 0, seen
    assert seen['full'] and seen['small'] and switches >= 10, (seen, switches)  # switching really happened


def test_without_the_guard_forwards_do_mix(setup):
    """Control for the test above: the same load without the lock does produce mixed outputs."""
    model, bank, x, _ = setup
    seen, _ = _forwards_during_switching(model, bank, x, guard_forward=False, forwards=40)
    assert seen['mixed'] > 0, seen


def test_switch_is_not_starved_by_overlapping_forwards(setup):
    """Forwards started while a switch waits must wait for it (writer preference), or two threads that keep
    forwarding could hold the read lock forever."""
    model, bank, x, _ = setup
    switcher = BlockSwitcher(model, bank)
    model.pause = PAUSE
    stop = threading.Event()

    def forward_forever():
        while not stop.is_set():
            run(model, x)

    readers = [threading.Thread(target=forward_forever, daemon=True) for _ in range(2)]
    for reader in readers:
        reader.start()
        time.sleep(PAUSE / 2)  # staggered: some forward is always running
    try:
        waits = []
        for sparsity in (0.8, 0.0, 0.4, 0.0):
            start = time.perf_counter()
            done = threading.Thread(target=switcher.switch, args=(all_at(bank, sparsity),), daemon=True)
            done.start()
            done.join(2.0)
            assert not done.is_alive(), 'switch starved by overlapping forwards'
            waits.append(time.perf_counter() - start)
    finally:
        stop.set()
        for reader in readers:
            reader.join(5)
        model.pause = 0.0
    assert switcher.selection == all_at(bank, 0.0)
    assert max(waits) < 0.5, waits


def test_switch_inside_forward_raises_instead_of_deadlocking(setup):
    model, bank, x, reference = setup
    switcher = BlockSwitcher(model, bank)
    handle = model.b1.register_forward_hook(lambda module, args, output: switcher.switch({'b2': 0.8}))
    errors = []

    def forward():
        try:
            run(model, x)
        except RuntimeError as error:
            errors.append(error)

    thread = threading.Thread(target=forward, daemon=True)
    thread.start()
    thread.join(5)
    assert not thread.is_alive(), 'deadlock: a switch from inside a forward waited for that forward'
    handle.remove()
    assert len(errors) == 1 and 'inside a forward' in str(errors[0])
    assert switcher.selection == all_at(bank, 0.0) and torch.equal(run(model, x), reference)
    # The failed forward released its read lock: switching from another thread works right away.
    thread = threading.Thread(target=switcher.switch, args=(all_at(bank, 0.8),), daemon=True)
    thread.start()
    thread.join(5)
    assert not thread.is_alive() and switcher.selection == all_at(bank, 0.8)
    with switcher.frozen():  # likewise inside frozen(): raise, don't wait for ourselves
        with pytest.raises(RuntimeError, match='inside a forward'):
            switcher.reset()


def test_frozen_holds_back_other_threads(setup):
    model, bank, x, reference = setup
    switcher = BlockSwitcher(model, bank)
    thread = threading.Thread(target=switcher.switch, args=(all_at(bank, 0.8),), daemon=True)
    with switcher.frozen():
        thread.start()
        thread.join(0.2)
        assert thread.is_alive() and switcher.selection == all_at(bank, 0.0)
        assert torch.equal(run(model, x), reference)  # a forward inside frozen() does not deadlock either
    thread.join(5)
    assert not thread.is_alive() and switcher.selection == all_at(bank, 0.8)
    switcher.detach()
    switcher.reset()
    assert torch.equal(run(model, x), reference)


def test_detach_during_a_forward_does_not_leak_its_lock(setup):
    model, bank, x, reference = setup
    switcher = BlockSwitcher(model, bank)
    started, finished = threading.Event(), threading.Event()
    model.b1.register_forward_pre_hook(lambda module, args: started.set())
    model.head.register_forward_hook(lambda module, args, output: finished.set())
    model.pause = 0.1
    forward = threading.Thread(target=run, args=(model, x), daemon=True)
    forward.start()
    assert started.wait(5)  # the forward holds its read lock now
    switcher.detach()
    assert finished.is_set(), 'detach must wait for running forwards'
    forward.join(5)
    model.pause = 0.0
    thread = threading.Thread(target=switcher.switch, args=(all_at(bank, 0.8),), daemon=True)
    thread.start()
    thread.join(2)
    assert not thread.is_alive(), 'a read lock taken before detach was never released'
    assert not model._forward_pre_hooks and not model._forward_hooks and 'forward' not in model.__dict__


def test_blocks_through_a_shared_stateless_module_switch_and_load_exactly(tmp_path):
    """mmdet's BasicBlock applies one ReLU inside its residual branch and after the add: the branch of a downsampling
    block is a block whose member ReLU also runs outside it. Switched in, the live model runs each descendant
    exactly as it runs standalone; switched back, it is the teacher again; a saved and loaded bank does the same."""
    from .test_block_extraction import make_mmdet
    teacher = make_mmdet('resnet18')
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    bank = perturb(BlockBank.build(teacher, (x,), sparsities=[0.0, 0.5], show_progress=False))
    shared = [spec for spec in bank.blocks if any(member.endswith('.relu') for member in spec.members)]
    assert len(shared) == 3  # layer2.0, layer3.0, layer4.0
    model = copy.deepcopy(teacher)
    reference = torch.cat([out.flatten() for out in run(model, x)])  # mmdet's ResNet returns a tuple
    relus = {m: model.get_submodule(m) for spec in shared for m in spec.members if m.endswith('.relu')}
    switcher = BlockSwitcher(model, bank, guard_forward=False)
    switcher.switch(all_at(bank, 0.5))
    seen = {}
    handles = []
    for spec in shared:
        first, last = model.get_submodule(spec.members[0]), model.get_submodule(spec.members[-1])
        handles.append(first.register_forward_pre_hook(
            lambda m, args, key=spec.name: seen.setdefault(key, {}).__setitem__('in', args[0].clone())))
        handles.append(last.register_forward_hook(
            lambda m, args, out, key=spec.name: seen.setdefault(key, {}).__setitem__('out', out.clone())))
    pruned = torch.cat([out.flatten() for out in run(model, x)])
    for handle in handles:
        handle.remove()
    assert not torch.equal(pruned, reference)
    for spec in shared:
        descendant = bank.descendant(spec.name, 0.5).module.eval()
        assert torch.equal(run(descendant, seen[spec.name]['in']), seen[spec.name]['out']), spec.name
    assert all(model.get_submodule(m) is not relu for m, relu in relus.items())  # the descendants' copies
    switcher.switch(all_at(bank, 0.0))
    assert torch.equal(torch.cat([out.flatten() for out in run(model, x)]), reference)
    assert all(model.get_submodule(m) is relu for m, relu in relus.items())  # the teacher's own, for the add too
    switcher.detach()

    bank.save(tmp_path / 'bank')
    served = copy.deepcopy(teacher)
    loaded = BlockBank.load(tmp_path / 'bank', served)
    switcher = BlockSwitcher(served, loaded, guard_forward=False)
    switcher.switch(all_at(loaded, 0.5))
    for spec in shared:  # stored weights and structure, no torch-pruning: the same descendants ...
        original, restored = bank.descendant(spec.name, 0.5).module, loaded.descendant(spec.name, 0.5).module
        assert [type(m) for m in original.modules()] == [type(m) for m in restored.modules()]
        assert all(torch.equal(a, b) for a, b in zip(original.state_dict().values(), restored.state_dict().values()))
    # ... running on memory-mapped weights (float rounding of other kernels, not other values)
    torch.testing.assert_close(torch.cat([out.flatten() for out in run(served, x)]), pruned, rtol=1e-5, atol=1e-5)
    switcher.reset()
    torch.testing.assert_close(torch.cat([out.flatten() for out in run(served, x)]), reference, rtol=1e-5, atol=1e-5)
    switcher.detach()
