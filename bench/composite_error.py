"""How far the all-at-s composites are from the teacher: retraining settings side by side, or finished banks.

    .venv/bin/python bench/composite_error.py --model simplebaseline --epochs 2 \
        --variant '{}' --variant '{"through_model": "distill", "through_lr_ratio": 0.1}'
    .venv/bin/python bench/composite_error.py --model simplebaseline --banks work_dirs/pipelines work_dirs/other

With ``--variant`` (a JSON dict of ``train_cfg.retrain`` settings over the legodnn config's), the teacher's blocks
and descendants are generated once and retrained for ``--epochs`` with each variant on the same batches (the
config's train loader; held-out: its first ``--heldout`` val batches); with ``--banks``, the finished banks in
``<dir>/<model>/bank`` are loaded. Either way the all-at-s composite of every ``--sparsities`` runs on the held-out
batches and its relative output error against the teacher (``||out - teacher||^2 / ||teacher||^2`` on the tensor
path, the loss ``through_model='distill'`` trains) is printed, one JSON line per variant or bank.
"""
from __future__ import annotations

import argparse
import copy
import json
import os.path as osp
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))


def composite_errors(teacher, bank, descendants, forward, batches, sparsities) -> dict:
    """Sparsity -> mean relative output error of the all-at-s composite on ``batches``."""
    import torch

    from mmlego.block_retraining.losses import distill_loss
    from mmlego.block_switcher import BlockSwitcher
    bank = copy.copy(bank)
    bank.descendants = descendants
    model = copy.deepcopy(teacher)
    switcher = BlockSwitcher(model, bank, guard_forward=False)
    errors = {}
    for sparsity in sparsities:
        switcher.switch({spec.name: sparsity for spec in bank.blocks})
        with torch.no_grad():
            errors[sparsity] = sum(float(distill_loss(forward(model, b), forward(teacher, b)))
                                   for b in batches) / len(batches)
    return errors


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', default='simplebaseline')
    parser.add_argument('--variant', action='append', default=[], help='JSON dict of retraining settings')
    parser.add_argument('--banks', nargs='+', default=[], help='directories holding <model>/bank')
    parser.add_argument('--epochs', type=int, default=2)
    parser.add_argument('--heldout', type=int, default=4)
    parser.add_argument('--sparsities', type=float, nargs='+', default=[0.2, 0.8])
    args = parser.parse_args(argv)
    import torch
    from mmengine.config import Config
    from mmengine.runner import Runner

    from mmlego.apis import init_lego_model
    from mmlego.block_bank import BlockBank
    from mmlego.block_retraining import RetrainingConfig, retrain_descendants
    from mmlego.models import TENSOR_PATHS, build_model, example_batch
    from mmlego.models.tensor_path import task_loss, trace_tensor_path
    from pipelines import LEGO_CONFIGS
    from teachers import TEACHERS

    torch.manual_seed(0)
    checkpoint = json.load(open(osp.join(ROOT, 'bench', 'results', 'teachers.json')))[args.model]['checkpoint']
    cfg = Config.fromfile(osp.join(ROOT, LEGO_CONFIGS[args.model]))
    cfg.load_from = checkpoint
    teacher = build_model(Config.fromfile(osp.join(ROOT, TEACHERS[args.model][0])), checkpoint).eval()
    heldout = [b for _, b in zip(range(args.heldout), Runner.build_dataloader(copy.deepcopy(cfg.val_dataloader)))]
    for bank_dir in args.banks:
        model = init_lego_model(cfg, osp.join(bank_dir, args.model, 'bank'), device='cpu', checkpoint=None)
        path = TENSOR_PATHS[model.bank.meta['tensor_path']]
        forward = lambda m, b, path=path: path(m, m.data_preprocessor(b, False)['inputs'])  # noqa: E731
        errors = composite_errors(teacher, model.bank, model.bank.descendants, forward, heldout, args.sparsities)
        print(json.dumps(dict(model=args.model, bank=bank_dir, errors=errors)), flush=True)
    if not args.variant:
        return
    example = example_batch(cfg, teacher, 1)
    path = TENSOR_PATHS[trace_tensor_path(teacher, example)[0]]  # as the pipeline chooses it
    forward = lambda m, b: path(m, m.data_preprocessor(b, False)['inputs'])  # noqa: E731
    loop = cfg.train_cfg
    bank = BlockBank.build(teacher, (example,), loop.get('sparsities', [0.0, 0.2, 0.4, 0.6, 0.8]),
                           loop.get('max_ratio', 0.125), path, show_progress=False)
    train = list(Runner.build_dataloader(copy.deepcopy(cfg.train_dataloader)))
    for variant in args.variant:
        settings = {**dict(loop.get('retrain') or {}), **json.loads(variant), 'epochs': args.epochs}
        descendants = copy.deepcopy(bank.descendants)
        start = time.perf_counter()
        retrain_descendants(teacher, descendants, train, heldout, forward, RetrainingConfig(**settings),
                            show_progress=False, task_loss=task_loss)
        seconds = time.perf_counter() - start
        errors = composite_errors(teacher, bank, descendants, forward, heldout, args.sparsities)
        print(json.dumps(dict(model=args.model, variant=json.loads(variant), epochs=args.epochs,
                              retraining_seconds=round(seconds, 1), errors=errors)), flush=True)


if __name__ == '__main__':
    main()
