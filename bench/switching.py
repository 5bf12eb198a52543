"""B2 Switching: mmlego's in-memory block switch against loading the same composite from disk, on one model.

The model is mmdet's ResNet-18 (random weights: switching cost does not depend on them) on a 224x224 input; its
bank is built, saved and loaded back file-backed (descendants memory-mapped, materialized when switched in and
released when switched out, so every switch includes its page-in). Compared on the same random selections:

* ``ours``: ``BlockSwitcher.switch`` (changed blocks only);
* ``state_dict``: ``torch.load(weights_only=True)`` of the composite's saved state_dict plus ``load_state_dict``
  into an already built composite;
* ``legodnn``: LegoDNN's way, every changed block's saved weights read from its own file and loaded.

Also the first forward after a switch against steady forwards of the same composite, and the bytes of the bank
against storing every distinct model a 100-budget memory sweep picks (drops: a FLOP-share proxy, as this bank is
not accuracy-profiled; the comparison is about how many distinct models the budgets yield).
"""
from __future__ import annotations

import copy
import os
import os.path as osp
import random
import tempfile
import time
from typing import Dict, List

import numpy as np
import torch

from mmlego.block_bank import BlockBank
from mmlego.block_switcher import BlockSwitcher
from mmlego.profiling import profile_costs
from mmlego.scaling_optimizer import BlockOption, ModelProblem, budget_range, solve


def _ms(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def _model_and_bank(directory: str):
    from mmdet.models.backbones import ResNet
    torch.manual_seed(0)
    model = ResNet(depth=18)
    model.eval()  # mmdet's ResNet.train() returns None
    x = torch.randn(1, 3, 224, 224)
    start = time.perf_counter()
    built = BlockBank.build(model, (x,), show_progress=False)
    profile_costs(built, show_progress=False)
    built.save(directory)
    build_s = time.perf_counter() - start
    return model, x, BlockBank.load(directory, model), build_s


def _selections(bank: BlockBank, rng: random.Random, count: int) -> List[Dict[str, float]]:
    return [{spec.name: rng.choice(bank.sparsities) for spec in bank.blocks} for _ in range(count)]


def _dir_bytes(directory: str) -> int:
    return sum(osp.getsize(osp.join(root, f)) for root, _, files in os.walk(directory) for f in files)


def run(quick: bool = False, seed: int = 0) -> dict:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        bank_dir = osp.join(tmp, 'bank')
        model, x, bank, build_s = _model_and_bank(bank_dir)
        switcher = BlockSwitcher(model, bank, guard_forward=False)
        selections = _selections(bank, rng, 40 if quick else 120)

        ours = [_ms(lambda s=s: switcher.switch(s)) for s in selections]

        # LegoDNN's way: every descendant's weights in a file of its own, read for the blocks that change.
        files, modules = {}, {}
        for spec in bank.blocks:
            for sparsity in bank.sparsities:
                # LegoDNN's own module objects (a copy): loading into the bank's descendants would write into the
                # switcher's zero-copy views (and materialize all of them)
                module = copy.deepcopy(bank.descendant(spec.name, sparsity).get_module(materialize=False))
                modules[spec.name, sparsity] = module
                files[spec.name, sparsity] = path = osp.join(tmp, f'{spec.name}@{sparsity}.pth')
                torch.save(module.state_dict(), path)
        legodnn, current = [], {spec.name: 0.0 for spec in bank.blocks}

        def load_changed(target):
            for name, sparsity in target.items():
                if sparsity != current[name]:
                    modules[name, sparsity].load_state_dict(torch.load(files[name, sparsity], weights_only=True))
                    current[name] = sparsity
        for s in selections:
            legodnn.append(_ms(lambda s=s: load_changed(s)))

        # Whole composites saved and reloaded into an already built copy (the page cache is warm: best case).
        state_dict, first, steady = [], [], []
        for i, s in enumerate(selections[:10 if quick else 20]):
            switcher.switch(s)
            composite = copy.deepcopy(model)
            path = osp.join(tmp, f'composite{i}.pth')
            torch.save(composite.state_dict(), path)
            state_dict.append(_ms(lambda: composite.load_state_dict(torch.load(path, weights_only=True))))
            os.remove(path)
            switcher.switch(selections[(i + 1) % len(selections)])  # away and back: the next forward is "first"
            switcher.switch(s)
            with torch.no_grad():
                first.append(_ms(lambda: model(x)))
                steady.append(float(np.median([_ms(lambda: model(x)) for _ in range(5)])))

        # Bank bytes vs every distinct model of a 100-budget memory sweep.
        profiles, problem_blocks = bank.profiles, {}
        flops = {spec.name: profiles.get(spec.name, 0.0).flops or 1 for spec in bank.blocks}
        total_flops = sum(flops.values())
        for spec in bank.blocks:
            problem_blocks[spec.name] = [
                BlockOption(s, s * flops[spec.name] / total_flops, 0.0, int(profiles.get(spec.name, s).memory_bytes))
                for s in bank.sparsities]
        teacher_bytes = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
        frame = teacher_bytes - sum(options[0].memory_bytes for options in problem_blocks.values())
        problem = ModelProblem('resnet18', 1.0, problem_blocks, frame_memory_bytes=max(0, frame))
        r = budget_range(problem)
        distinct = {}
        for budget in np.linspace(r['min_memory_bytes'], r['max_memory_bytes'], 100):
            result = solve(problem, memory_bytes=float(budget))
            distinct[tuple(sorted(result.choice().items()))] = result.total_memory_bytes
        switcher.reset()
        bank_bytes = _dir_bytes(bank_dir)
        return dict(
            model='mmdet ResNet-18, 1x3x224x224, random weights', blocks=len(bank.blocks),
            sparsities=bank.sparsities, bank_build_s=build_s, switches=len(selections),
            ours_median_ms=float(np.median(ours)), ours_p95_ms=float(np.percentile(ours, 95)),
            legodnn_median_ms=float(np.median(legodnn)), state_dict_median_ms=float(np.median(state_dict)),
            speedup_vs_state_dict=float(np.median(state_dict) / np.median(ours)),
            speedup_vs_legodnn=float(np.median(legodnn) / np.median(ours)),
            first_forward_ms=float(np.median(first)), steady_forward_ms=float(np.median(steady)),
            first_over_steady=float(np.median(first) / np.median(steady)),
            bank_plus_teacher_mb=(bank_bytes + teacher_bytes) / 2 ** 20, distinct_models=len(distinct),
            distinct_models_mb=sum(distinct.values()) / 2 ** 20)
