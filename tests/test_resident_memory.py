"""Resident memory: a loaded bank is memory-mapped and rebuilt without torch-pruning; sparsity 0.0 is the teacher's
own modules; the switcher keeps on the compute device only what the model runs; resident bytes are measured."""
import copy
import json
import logging

import pytest
import torch
import torch_pruning as tp

from mmlego.block_bank import BankError, BlockBank
from mmlego.block_bank import bank as bank_module
from mmlego.block_bank.storage import open_mapped
from mmlego.block_switcher import BlockSwitcher
from mmlego.descendant_generation import build_block, generation, module_tensors, pruning
from mmlego.profiling import memory_bytes, process_rss_bytes, resident_device_bytes
from mmlego.profiling.memory import file_mapped_ranges, is_memory_mapped

from .test_block_bank import assert_same_bank, build_bank, example_input, make_tiny, perturb, tensor_file
from .test_descendant_generation import same_state, toy_case  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def trained():
    """A teacher and its retrained-looking bank (in memory)."""
    teacher = make_tiny()
    return teacher, perturb(build_bank(teacher))


@pytest.fixture
def loaded(trained, tmp_path):
    """A fresh live model (a copy of the teacher), its bank loaded from disk, the bank before saving, its directory."""
    teacher, bank = trained
    model = copy.deepcopy(teacher)
    directory = bank.save(tmp_path / 'bank')
    return model, BlockBank.load(directory, model), bank, directory


def tensors_of(module):
    return list(module.parameters()) + list(module.buffers())


def all_mapped(module) -> bool:
    ranges = file_mapped_ranges()
    return all(is_memory_mapped(t, ranges) for t in tensors_of(module))


def all_at(bank, sparsity):
    return {spec.name: sparsity for spec in bank.blocks}


def run(model, x):
    with torch.no_grad():
        return model(x)


def refuse_pruning(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError('loading a bank must not run torch-pruning')

    for target, name in [(tp.pruner, 'BasePruner'), (tp, 'DependencyGraph'), (pruning, 'apply_plan'),
                         (pruning, 'prune_block'), (pruning, '_pruning_function'), (generation, 'apply_plan'),
                         (generation, 'rebuild_descendant'), (generation, 'prune_block')]:
        monkeypatch.setattr(target, name, refuse)


# -- loading ------------------------------------------------------------------------------------------------------
def test_load_runs_no_torch_pruning(trained, tmp_path, monkeypatch):
    teacher, bank = trained
    directory = bank.save(tmp_path / 'bank')
    refuse_pruning(monkeypatch)
    model = copy.deepcopy(teacher)
    loaded = BlockBank.load(directory, model)
    assert_same_bank(loaded, bank)  # same plans, tensors and outputs as the bank before saving
    x = example_input(seed=5)
    switcher = BlockSwitcher(model, loaded)
    for selection in ({'stem+b1': 0.4, 'b2': 0.8}, all_at(bank, 0.8)):
        reference = BlockSwitcher(copy.deepcopy(teacher), copy.deepcopy(bank))
        reference.switch(selection)
        switcher.switch(selection)
        assert torch.equal(run(model, x), run(reference.model, x))
    switcher.reset()
    assert torch.equal(run(model, x), run(teacher, x))


def test_structure_rebuilds_grouped_depthwise_and_concat_blocks(toy_case, monkeypatch):  # noqa: F811
    """Every descendant of the toy model (concat branches, depthwise and grouped convs) from its recorded structure
    and tensors alone."""
    refuse_pruning(monkeypatch)
    model, checked = toy_case['model'], 0
    for spec in toy_case['blocks']:
        x = toy_case['io'][spec.name]['in']
        for sparsity, descendant in toy_case['descendants'][spec.name].items():
            plan = pruning.PruningPlan.from_dict(json.loads(json.dumps(descendant.plan.to_dict())))
            tensors = {key: t.clone() for key, t in module_tensors(descendant.module).items()}
            rebuilt = build_block(model, spec, plan.structure, tensors)
            assert same_state(rebuilt, descendant.module) and not rebuilt.training, (spec.name, sparsity)
            with torch.no_grad():
                assert torch.equal(rebuilt(x), descendant.module.eval()(x)), (spec.name, sparsity)
            checked += bool(plan.structure)
    assert checked >= 8
    spec = next(spec for spec in toy_case['blocks'] if spec.name == 'dwsep+twice')
    structure = toy_case['descendants']['dwsep+twice'][0.4].plan.structure
    assert {'in_channels', 'out_channels', 'groups'} <= set(structure['dwsep.1.0'])
    tensors = dict(module_tensors(toy_case['descendants']['dwsep+twice'][0.4].module))
    with pytest.raises(ValueError, match='do not match'):
        build_block(model, spec, structure, {k: v for k, v in tensors.items() if 'bias' not in k})
    with pytest.raises(ValueError, match='does not fit|outputs'):
        build_block(model, spec, {}, tensors)  # the teacher's structure with pruned tensors


def test_old_format_is_refused(trained, tmp_path):
    teacher, bank = trained
    directory = bank.save(tmp_path / 'bank')
    manifest = json.loads((directory / 'manifest.json').read_text())
    manifest['format_version'] = 1
    (directory / 'manifest.json').write_text(json.dumps(manifest))
    with pytest.raises(BankError, match='format 1.*rebuild the bank'):
        BlockBank.load(directory, teacher)


def test_sparsity_zero_is_the_teachers_own_modules(loaded):
    model, bank, _, directory = loaded
    for spec in bank.blocks:
        own = bank.descendant(spec.name, 0.0)
        assert own.teacher_owned and not own.file_backed
        assert all(layer is model.get_submodule(member) for member, layer in zip(spec.members, own.module.layers))
    keys = list(open_mapped(tensor_file(directory)).keys())
    assert keys and not [key for key in keys if key.split('|')[1] == '0']


# -- memory-mapped descendants ------------------------------------------------------------------------------------
def test_descendants_stay_mapped_until_used(loaded):
    model, bank, original, _ = loaded
    x = example_input(seed=7, shape=bank.blocks[1].input_shape)
    descendant = bank.descendant('b2', 0.4)
    assert descendant.file_backed and not descendant.materialized
    assert all_mapped(descendant.get_module(materialize=False))
    module = descendant.module  # on demand; on the CPU zero-copy: the module runs on the file's pages
    assert descendant.materialized and all_mapped(module)
    with torch.no_grad():
        expected = original.descendant('b2', 0.4).module.eval()(x)
        assert torch.equal(module(x), expected)
    assert descendant.release() and not descendant.release()
    assert not descendant.materialized and all_mapped(module)
    with torch.no_grad():
        assert torch.equal(module(x), expected)  # a released module still runs (from the mapping, on the CPU)
        descendant.module.layers[0].conv1.weight.mul_(2)  # changed while materialized...
    descendant.release()
    with torch.no_grad():
        assert not torch.equal(descendant.module(x), expected)  # ...is kept, not silently dropped
    assert bank.to('cpu') is bank and descendant.materialized and bank.release() == 1


# -- the switcher --------------------------------------------------------------------------------------------------
def test_smallest_configuration_holds_only_what_runs(loaded, tmp_path, monkeypatch):
    spill_root = tmp_path / 'spill'
    spill_root.mkdir()
    monkeypatch.setenv('MMLEGO_SPILL_DIR', str(spill_root))
    model, bank, _, _ = loaded
    x = example_input(seed=3)
    reference = run(model, x)
    teacher_bytes = resident_device_bytes(model)
    switcher = BlockSwitcher(model, bank)
    switcher.switch(all_at(bank, 0.8))
    assert switcher.held_modules() == []
    for spec in bank.blocks:
        for sparsity, descendant in bank.descendants[spec.name].items():
            module = descendant.get_module(materialize=False)
            if sparsity == 0.8:  # in the model, materialized (CPU: on the mapped pages, counted as resident)
                assert descendant.materialized and all_mapped(module)
                assert all(layer is model.get_submodule(m) for m, layer in zip(spec.members, module.layers))
            elif sparsity > 0:  # unused: nothing materialized
                assert not descendant.materialized and all_mapped(module)
            else:  # the teacher's switched-out block: spilled to the switcher's file and mapped, not in RAM
                assert all_mapped(module)
    assert switcher.offload.spill_dir.parent == spill_root
    weight_bytes = memory_bytes(model)  # frame + chosen descendants
    resident = resident_device_bytes(model, switcher.held_modules())
    assert abs(resident - weight_bytes) <= 0.1 * weight_bytes and resident < 0.5 * teacher_bytes
    everything = [d.get_module(materialize=False) for by_s in bank.descendants.values() for d in by_s.values()]
    assert resident_device_bytes(model, everything) == resident  # no other tensor of the bank is materialized
    assert 0 < process_rss_bytes(anonymous_only=True) <= process_rss_bytes()

    assert sorted(switcher.reset()) == ['b2', 'stem+b1'] and torch.equal(run(model, x), reference)
    assert resident_device_bytes(model, switcher.held_modules()) == teacher_bytes
    for spec in bank.blocks:
        assert all_mapped(bank.descendant(spec.name, 0.8).get_module(materialize=False))
        # switched back in zero-copy: the teacher's block runs on its spill's private mapping (counted as resident)
        assert all_mapped(bank.descendant(spec.name, 0.0).module)
    spilled = sorted(switcher.offload.spill_dir.iterdir())
    assert len(spilled) == 2  # one file per teacher block
    switcher.switch({'b2': 0.4})  # switched out again, unchanged: not written again
    switcher.switch({'b2': 0.8})
    assert sorted(switcher.offload.spill_dir.iterdir()) == spilled
    switcher.detach()
    assert not list(spill_root.iterdir())  # the spill directory is gone
    switcher.reset()
    assert torch.equal(run(model, x), reference)


def test_descendant_materialized_elsewhere_is_held_not_released(loaded):
    model, bank, _, _ = loaded
    switcher = BlockSwitcher(model, bank)
    profiled = bank.descendant('b2', 0.4).module  # someone (profiling) materialized it
    assert switcher.held_modules() == [profiled]
    switcher.switch({'b2': 0.4})
    assert switcher.held_modules() == []
    switcher.switch({'b2': 0.8})
    assert switcher.held_modules() == [profiled] and bank.descendant('b2', 0.4).materialized
    switcher.reset()
    assert not bank.descendant('b2', 0.8).materialized


def test_built_bank_stays_in_memory(trained):
    teacher, bank = trained
    model, bank = copy.deepcopy(teacher), copy.deepcopy(bank)
    switcher = BlockSwitcher(model, bank)
    assert not bank.file_backed and switcher.offload is None
    switcher.switch(all_at(bank, 0.8))
    held = switcher.held_modules()
    assert len(held) == len(bank.blocks) * (len(bank.sparsities) - 1) + len(bank.blocks)  # + the teacher's
    resident = resident_device_bytes(model, held)
    assert resident == memory_bytes(model) + sum(memory_bytes(module) for module in held)
    x = example_input(seed=3)
    switcher.reset()
    assert torch.equal(run(model, x), run(teacher, x))


def test_resident_bytes_count_storages_once_and_skip_mappings(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
    net[1].weight = net[0].weight
    assert resident_device_bytes(net) == memory_bytes(net) == (64 + 8 + 8) * 4
    assert resident_device_bytes(net, [net, net[0]]) == resident_device_bytes(net)
    from safetensors.torch import save_file
    save_file({'w': torch.randn(16, 16)}, str(tmp_path / 'w.safetensors'))
    mapped = torch.nn.Linear(16, 16, bias=False)
    mapped.weight = torch.nn.Parameter(open_mapped(tmp_path / 'w.safetensors')['w'])
    assert is_memory_mapped(mapped.weight) and resident_device_bytes(mapped) == 16 * 16 * 4  # the model runs them
    assert resident_device_bytes(net, [mapped]) == resident_device_bytes(net)  # held off the model: the file's


def test_saving_a_changed_original_warns(trained, tmp_path, monkeypatch):
    _, bank = trained
    changed = copy.deepcopy(bank)
    with torch.no_grad():
        changed.descendant('b2', 0.0).module.layers[0].conv1.weight.add_(1)
    logged = []
    monkeypatch.setattr(bank_module, 'print_log', lambda msg, **kwargs: logged.append((msg, kwargs)))
    changed.save(tmp_path / 'bank')
    assert len(logged) == 1 and 'sparsity-0.0 descendant of block b2 differs' in logged[0][0]
    assert logged[0][1]['level'] == logging.WARNING
    bank.save(tmp_path / 'other')
    assert len(logged) == 1



def _mapped_rss_bytes(address: int) -> int:
    """Resident bytes of the memory mapping of this process that holds ``address`` (/proc/self/smaps)."""
    found = False
    for line in open('/proc/self/smaps'):
        head = line.split()
        if '-' in head[0] and len(head) >= 5 and all(c in '0123456789abcdef-' for c in head[0]):
            start, end = (int(x, 16) for x in head[0].split('-'))
            found = start <= address < end
        elif found and head[0] == 'Rss:':
            return int(head[1]) * 1024
    raise AssertionError(f'no mapping holds {address:#x}')


@pytest.mark.parametrize('syscall', [True, False], ids=['madvise', 'per-page read'])
def test_switching_in_pays_the_page_faults_not_the_next_forward(tmp_path, monkeypatch, syscall):
    """touch_all_pages maps a descendant's file pages into the process (one madvise per contiguous run, or a read
    per page), so the first forward after a switch does not fault them in: a fresh mapping holds (almost) none."""
    import mmap

    from mmlego.block_bank import storage
    if not syscall:
        monkeypatch.setattr(storage, '_madvise', False)
    size = 8 * 64 * 64 * 9 * 4  # 8 tensors of 144 KiB, as a bank file holds a descendant's tensors
    path = tmp_path / 'tensors.bin'
    path.write_bytes(torch.randn(size // 4).numpy().tobytes())
    with open(path, 'r+b') as file:  # a private file mapping, like the bank's, that nothing has read yet
        mapping = mmap.mmap(file.fileno(), 0, flags=mmap.MAP_PRIVATE)
    whole = torch.frombuffer(mapping, dtype=torch.float32)
    views = list(whole.view(8, -1))
    before = _mapped_rss_bytes(whole.data_ptr())
    storage.touch_all_pages(views)
    after = _mapped_rss_bytes(whole.data_ptr())
    assert before < size / 2 and after >= size, (before, after, size)
    assert (storage._madvise is not False) == syscall  # the path under test was the one taken
