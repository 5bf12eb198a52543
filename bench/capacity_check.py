"""Does capacity matter on the synthetic data? A teacher's metric before and after uniform L1 filter pruning.

The foundation's difficulty target: pruning a teacher's backbone uniformly at 0.8 without retraining must drop
its metric clearly (>= 10 points); otherwise every LegoDNN descendant looks free and scaling decisions mean
nothing. Pruning is physical (torch-pruning's dependency graph keeps residual groups and the neck's inputs
consistent); only backbone convolutions are pruning roots, and the task heads keep their outputs.

    .venv/bin/python bench/capacity_check.py CONFIG CHECKPOINT [--sparsity 0.8] [--out result.json]
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--sparsity', type=float, default=0.8)
    parser.add_argument('--out', help='write the metrics as JSON here')
    parser.add_argument('--work-dir', default='work_dirs/capacity_check')
    return parser.parse_args(argv)


def prune_backbone_uniformly(model, batch, sparsity: float) -> None:
    """L1 filter pruning of every backbone conv group at ``sparsity``, physically, in place."""
    import torch
    import torch_pruning as tp

    data = model.data_preprocessor(batch, False)
    inputs, data_samples = data['inputs'], data['data_samples']
    backbone = set(model.backbone.modules())
    ignored = [m for m in model.modules()
               if isinstance(m, (torch.nn.modules.conv._ConvNd, torch.nn.Linear)) and m not in backbone]
    model.eval()
    pruner = tp.pruner.MagnitudePruner(
        model, example_inputs=inputs, importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=sparsity, ignored_layers=ignored,
        forward_fn=lambda m, x: m(x, data_samples, mode='tensor'))
    pruner.step()


def main(argv=None):
    args = parse_args(argv)
    from mmengine.config import Config
    from mmengine.runner import Runner

    from mmlego.utils import scope_runner_checkpoint_loading
    cfg = Config.fromfile(args.config)
    cfg.work_dir = args.work_dir
    cfg.load_from = args.checkpoint
    runner = Runner.from_cfg(cfg)
    scope_runner_checkpoint_loading(runner)
    full = runner.test()
    params_full = sum(p.numel() for p in runner.model.parameters())
    prune_backbone_uniformly(runner.model, next(iter(runner.test_dataloader)), args.sparsity)
    params_pruned = sum(p.numel() for p in runner.model.parameters())
    pruned = runner.test()  # the checkpoint is not reloaded: the runner remembers it has loaded it
    result = dict(config=args.config, sparsity=args.sparsity, params_full=params_full,
                  params_pruned=params_pruned, metrics_full=full, metrics_pruned=pruned)
    print(json.dumps(result, indent=2, default=float))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=2, default=float)
    return result


if __name__ == '__main__':
    main()
