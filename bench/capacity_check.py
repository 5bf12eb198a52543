"""Does capacity matter on the synthetic data? A teacher's metric before and after uniform L1 filter pruning.

The foundation's difficulty target: pruning a teacher's backbone uniformly at 0.8 without retraining must drop
its metric clearly (>= 10 points); otherwise every LegoDNN descendant looks free and scaling decisions mean
nothing. Pruning is physical (torch-pruning's dependency graph); as in LegoDNN, convs whose outputs are coupled
by residual adds or leave the backbone keep their filters, so the backbone's interface to the head is unchanged.

    .venv/bin/python bench/capacity_check.py CONFIG CHECKPOINT [--sparsity 0.8] [--out result.json]
    .venv/bin/python bench/capacity_check.py --teachers bench/results/teachers.json   # all trained teachers

With ``--finetune`` the question is the one that matters for scaling: is capacity still needed after the pruned
model is trained again? The whole teacher is pruned uniformly (``bench/uniform_baseline.py``: every prunable layer
at one sparsity, B4's baseline) at each ``--sparsity`` and fine-tuned end to end with the teacher's own schedule
(its config's ``train_cfg``, optimizer and LR schedule, from the pruned weights); the metric is taken on the test
split before and after. Target (issues 9 and 13): >= 3 points lost at 0.6 and >= 8 at 0.8 (0-100 scale).

    .venv/bin/python bench/capacity_check.py --teachers work_dirs/teachers.json --only tsn trn --finetune \
        --sparsity 0.6 0.8     # -> capacity_finetuned.json beside the teachers file
"""
import argparse
import json
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from mmlego.utils.atomic_io import atomic_write_json  # noqa: E402


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', nargs='?')
    parser.add_argument('checkpoint', nargs='?')
    parser.add_argument('--teachers', help='check every teacher recorded by bench/teachers.py in this JSON file')
    parser.add_argument('--markdown', action='store_true', help='with --teachers: only print the recorded table')
    parser.add_argument('--sparsity', type=float, nargs='+', default=[0.8])
    parser.add_argument('--finetune', action='store_true',
                        help='prune the whole model uniformly and fine-tune it with the teacher schedule (see above)')
    parser.add_argument('--only', nargs='+', help='with --teachers: these models only')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help="overrides of the teacher's config")
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
    """Run the check for each recorded teacher and sparsity (one process each: every config has its own default
    scope, and a fine-tune its own runner); results merged into a JSON file beside the teachers file."""
    import subprocess
    from teachers import TEACHERS  # noqa: E402  (bench/teachers.py)
    teachers = json.load(open(args.teachers))
    out = osp.join(osp.dirname(args.teachers), 'capacity_finetuned.json' if args.finetune else 'capacity.json')
    results = json.load(open(out)) if osp.exists(out) else {}
    for name, record in ({} if args.markdown else teachers).items():
        if args.only and name not in args.only:
            continue
        for sparsity in args.sparsity if args.finetune else args.sparsity[:1]:
            key = f'{name}@{sparsity:g}' if args.finetune else name
            work_dir = osp.join(args.work_dir, key)
            result_file = osp.join(work_dir, 'result.json')
            subprocess.run([sys.executable, __file__, record['config'], record['checkpoint'], '--sparsity',
                            str(sparsity), '--out', result_file, '--work-dir', work_dir]
                           + (['--finetune'] if args.finetune else []), check=True, stdout=subprocess.DEVNULL)
            results = json.load(open(out)) if osp.exists(out) else {}  # re-read: runs for other models may have written
            results[key] = json.load(open(result_file))
            atomic_write_json(out, results)
    print(markdown(results, args.finetune))


def markdown(results: dict, finetune: bool) -> str:
    """README's capacity table from the merged results."""
    from teachers import TEACHERS  # noqa: E402
    if not finetune:
        lines = ['| model | metric | teacher | backbone pruned at 0.8 | drop | params kept |', '|---|---|---|---|---|---|']
    else:
        lines = ['| model | metric | teacher (test) | sparsity | params kept | pruned | fine-tuned (teacher schedule) | '
                 'loss after fine-tuning (0-100) | target | fine-tune minutes |', '|---|---|---|---|---|---|---|---|---|---|']
    for key, r in results.items():
        label = key.split('@')[0]  # '<model>' or '<model>:<variant>' (e.g. a teacher of another width, kept beside)
        name = label.split(':')[0]
        metric = TEACHERS[name][1]
        full = r['metrics_full'][metric]
        pruned = r['metrics_pruned'].get(metric, 0.0)  # no metrics: the pruned model detected nothing
        kept = r['params_pruned'] / r['params_full']
        if not finetune:
            lines.append(f'| {label} | {metric} | {full:.3f} | {pruned:.3f} | {full - pruned:.3f} | {kept:.0%} |')
            continue
        tuned = r['metrics_finetuned'][metric]
        points = 1.0 if metric == 'mIoU' else 100.0
        loss = (full - tuned) * points
        target = 3.0 if r['sparsity'] < 0.7 else 8.0
        lines.append(f'| {label} | {metric} | {full:.3f} | {r["sparsity"]:g} | {kept:.0%} | {pruned:.3f} | {tuned:.3f} '
                     f'| {loss:.1f} | >= {target:g}: {"met" if loss >= target else "not met"} | '
                     f'{r["finetune_seconds"] / 60:.1f} |')
    return '\n'.join(lines)


def finetune_uniformly(runner, sparsity: float) -> dict:
    """Prunes the runner's (loaded) model uniformly and trains it with the runner's own schedule; returns figures."""
    import time

    from mmengine.model import BaseModule

    from mmlego.models import TENSOR_PATHS, example_batch, trace_tensor_path
    from uniform_baseline import prune_uniformly
    model = runner.model
    example = example_batch(runner.cfg, model)
    path, _ = trace_tensor_path(model.eval(), example)
    prune_uniformly(model, example, TENSOR_PATHS[path], sparsity)  # recognizers: to the class scores
    for module in model.modules():  # Runner.train() initializes weights not yet initialized: these are trained
        if isinstance(module, BaseModule):
            module._is_init = True
    pruned = runner.test()
    start = time.perf_counter()
    runner.train()
    seconds = time.perf_counter() - start
    return dict(metrics_pruned=pruned, metrics_finetuned=runner.test(), finetune_seconds=seconds,
                params_pruned=sum(p.numel() for p in model.parameters()))


def main(argv=None):
    args = parse_args(argv)
    if args.teachers:
        return check_teachers(args)
    os.makedirs(args.work_dir, exist_ok=True)
    from mmengine.config import Config
    from mmengine.runner import Runner

    from mmlego.utils import scope_runner_checkpoint_loading
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.work_dir = args.work_dir
    cfg.load_from = args.checkpoint
    runner = Runner.from_cfg(cfg)
    scope_runner_checkpoint_loading(runner)
    full = runner.test()
    params_full = sum(p.numel() for p in runner.model.parameters())
    sparsity = args.sparsity[0]
    result = dict(config=args.config, sparsity=sparsity, params_full=params_full, metrics_full=full)
    if args.finetune:
        result.update(finetune_uniformly(runner, sparsity))
    else:
        num_pruned = prune_backbone_uniformly(runner.model, next(iter(runner.test_dataloader)), sparsity)
        result.update(pruned_convs=num_pruned, params_pruned=sum(p.numel() for p in runner.model.parameters()),
                      metrics_pruned=runner.test())  # the checkpoint is not reloaded: the runner has loaded it
    print(json.dumps(result, indent=2, default=float))
    if args.out:
        atomic_write_json(args.out, json.loads(json.dumps(result, default=float)))
    return result


if __name__ == '__main__':
    main()
