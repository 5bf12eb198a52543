"""Does capacity matter on the synthetic data? A teacher's metric before and after uniform L1 filter pruning.

The foundation's difficulty target: pruning a teacher's backbone uniformly at 0.8 without retraining must drop
its metric clearly (>= 10 points); otherwise every LegoDNN descendant looks free and scaling decisions mean
nothing. Pruning is physical (torch-pruning's dependency graph); as in LegoDNN, convs whose outputs are coupled
by residual adds or leave the backbone keep their filters, so the backbone's interface to the head is unchanged.

    .venv/bin/python bench/capacity_check.py CONFIG CHECKPOINT [--sparsity 0.8] [--out result.json]
    .venv/bin/python bench/capacity_check.py --teachers bench/results/teachers.json   # all trained teachers
"""
import argparse
import json
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', nargs='?')
    parser.add_argument('checkpoint', nargs='?')
    parser.add_argument('--teachers', help='check every teacher recorded by bench/teachers.py in this JSON file')
    parser.add_argument('--markdown', action='store_true', help='with --teachers: only print the recorded table')
    parser.add_argument('--sparsity', type=float, default=0.8)
    parser.add_argument('--out', help='write the metrics as JSON here')
    parser.add_argument('--work-dir', default='work_dirs/capacity_check')
    return parser.parse_args(argv)


def prune_backbone_uniformly(model, batch, sparsity: float) -> int:
    """L1 filter pruning at ``sparsity`` of every backbone conv whose output stays inside the backbone.

    As in LegoDNN, convs whose output channels are coupled to others (residual adds) or leave the backbone keep
    all their filters; the rest (e.g. the first conv of every residual block) lose their lowest-L1 filters
    physically, with the dependent BN and next-layer input channels (torch-pruning's dependency graph).

    Returns:
        The number of pruned convs.
    """
    import torch
    import torch_pruning as tp

    data = model.data_preprocessor(batch, False)
    inputs, data_samples = data['inputs'], data['data_samples']
    model.eval()
    graph = tp.DependencyGraph().build_dependency(
        model, example_inputs=inputs, forward_fn=lambda m, x: m(x, data_samples, mode='tensor'))
    backbone = set(model.backbone.modules())
    out_handlers = (tp.prune_conv_out_channels, tp.prune_linear_out_channels)
    pruned = 0
    for conv in [m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d)]:
        group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=list(range(conv.out_channels)))
        outputs = [dep for dep, _ in group if dep.handler in out_handlers]
        # torch-pruning's stand-ins for functional ops (relu, add, view...) are not model modules.
        layers = [dep.target.module for dep, _ in group
                  if not type(dep.target.module).__module__.startswith('torch_pruning')]
        if len(outputs) != 1 or any(m not in backbone for m in layers) or conv.groups > 1:
            continue
        importance = conv.weight.detach().abs().sum(dim=(1, 2, 3))
        idxs = importance.argsort()[:int(sparsity * conv.out_channels)].tolist()
        graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=idxs).prune()
        pruned += 1
    return pruned


def check_teachers(args) -> None:
    """Run the check for each recorded teacher (one process each: every config has its own default scope)."""
    import subprocess
    from teachers import TEACHERS  # noqa: E402  (bench/teachers.py)
    teachers = json.load(open(args.teachers))
    out = osp.join(osp.dirname(args.teachers), 'capacity.json')
    results = json.load(open(out)) if osp.exists(out) else {}
    for name, record in ({} if args.markdown else teachers).items():
        result_file = osp.join(args.work_dir, f'{name}.json')
        subprocess.run([sys.executable, __file__, record['config'], record['checkpoint'], '--sparsity',
                        str(args.sparsity), '--out', result_file, '--work-dir', osp.join(args.work_dir, name)],
                       check=True, stdout=subprocess.DEVNULL)
        results[name] = json.load(open(result_file))
        with open(out + '.tmp', 'w') as f:
            json.dump(results, f, indent=2)
        os.replace(out + '.tmp', out)
    print(f'| model | metric | teacher | backbone pruned at {args.sparsity} | drop | params kept |')
    print('|---|---|---|---|---|---|')
    for name, r in results.items():
        metric = TEACHERS[name][1]
        full, pruned = r['metrics_full'][metric], r['metrics_pruned'][metric]
        print(f'| {name} | {metric} | {full:.3f} | {pruned:.3f} | {full - pruned:.3f} | '
              f'{r["params_pruned"] / r["params_full"]:.0%} |')


def main(argv=None):
    args = parse_args(argv)
    if args.teachers:
        return check_teachers(args)
    os.makedirs(args.work_dir, exist_ok=True)
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
    num_pruned = prune_backbone_uniformly(runner.model, next(iter(runner.test_dataloader)), args.sparsity)
    params_pruned = sum(p.numel() for p in runner.model.parameters())
    pruned = runner.test()  # the checkpoint is not reloaded: the runner remembers it has loaded it
    result = dict(config=args.config, sparsity=args.sparsity, pruned_convs=num_pruned, params_full=params_full,
                  params_pruned=params_pruned, metrics_full=full, metrics_pruned=pruned)
    print(json.dumps(result, indent=2, default=float))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=2, default=float)
    return result


if __name__ == '__main__':
    main()
