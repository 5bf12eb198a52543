"""B4 quality: mmlego's pick vs a uniformly pruned, end-to-end fine-tuned model of the same memory, on the test split.

    .venv/bin/python bench/quality.py [--only yolov3 fcn simplebaseline] [--budgets 8] [--seeds 3] [--harsh]
        [--picks-only]

For each model (its bank from ``bench/pipelines.py`` in ``work_dirs/pipelines/<model>/bank``, its teacher from
``bench/results/teachers.json``), at ``--budgets`` memory budgets evenly from the bank's smallest configuration to the
teacher, in one process:

* **mmlego**: ``LegoDNN.scale(memory_mb=...)`` on the bank (retrained descendants), metric on the test split;
* **LegoDNN without retraining**: the same selection with the descendants as pruned (the bank regenerated from the
  teacher, deterministic L1 pruning, not retrained);
* **uniform (a)**: the teacher uniformly L1-pruned (``bench/uniform_baseline.py``) to the largest model within the
  budget, fine-tuned end to end on the task loss (the teacher's optimizer at ``--lr-scale`` x its learning rate)
  for the block-retraining compute divided by the number of budgets, once per ``--seeds`` (3: the fine-tuning's own
  spread is as large as the differences counted; compared by their mean, the range drawn). That compute is measured
  here: a retraining step of every descendant on the same batches (with the retraining settings the bank's
  pipeline recorded, training through the model included), times the pipeline's batches per epoch and
  retraining epochs;
* **uniform (b)** with ``--harsh``: the same with the whole block-retraining compute per budget.

``--picks-only`` measures mmlego's picks alone (no baseline): banks retrained in other ways side by side.

Writes ``bench/results/quality.json`` (merged per model) and ``bench/results/quality_<model>.png``; reports the
share of budgets where mmlego >= uniform (a) (target >= 80%) and the area under each curve (mean metric over the
budget range). Run on a quiet machine, one model at a time if need be.
"""
import argparse
import copy
import json
import os
import os.path as osp
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from child import emit, run_child  # noqa: E402

TARGET_SHARE = 0.8
_MB = 2 ** 20


def _evaluate(model, cfg, metric: str) -> float:
    """The metric of ``model`` on the config's test split (a fresh loader and evaluator each time)."""
    from mmengine.evaluator import Evaluator
    from mmengine.runner import Runner

    from mmlego.engine.task_metrics import evaluate_model, reported_metric
    loader = Runner.build_dataloader(copy.deepcopy(cfg.test_dataloader))
    evaluator = Evaluator(copy.deepcopy(cfg.test_evaluator))
    evaluator.dataset_meta = getattr(loader.dataset, 'metainfo', None)
    return reported_metric(evaluate_model(model, loader, evaluator), metric)  # 0 when it predicts nothing


def _batches(cfg):
    """An endless stream of training batches (restarts the loader; works with infinite samplers too)."""
    from mmengine.runner import Runner
    loader = Runner.build_dataloader(copy.deepcopy(cfg.train_dataloader))
    while True:
        yield from loader


def _fine_tune(model, teacher_cfg, batches, seconds: float, lr_scale: float) -> int:
    """End-to-end training steps on the task loss for ``seconds`` of wall time; returns the number of steps."""
    from mmengine.optim import build_optim_wrapper
    optim_cfg = copy.deepcopy(teacher_cfg.optim_wrapper)
    optim_cfg.optimizer.lr = optim_cfg.optimizer.lr * lr_scale
    optim = build_optim_wrapper(model, optim_cfg)
    model.train()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.train_step(next(batches), optim)
        steps += 1
    model.eval()
    return steps


def _pick(model, cfg, metric: str, budget: float) -> dict:
    """mmlego's pick at ``budget`` bytes (``LegoDNN.scale``) and its metric on the test split."""
    result = model.scale(memory_mb=budget / _MB)
    return dict(budget_mb=budget / _MB, selection=result.choice(), status=result.status,
                mmlego_mb=result.total_memory_bytes / _MB, mmlego=_evaluate(model, cfg, metric))


def measure_model(name: str, num_budgets: int, harsh: bool, lr_scale: float, banks: str | None = None,
                  cfg_options: dict | None = None, picks_only: bool = False, seeds: int = 3) -> dict:
    import torch
    from mmengine.config import Config

    from mmlego.apis import init_lego_model
    from mmlego.block_bank import BlockBank
    from mmlego.block_extraction import trace_model
    from mmlego.block_retraining import RetrainingConfig, retrain_descendants
    from mmlego.block_switcher import BlockSwitcher
    from mmlego.models import TENSOR_PATHS, build_model, example_batch
    from mmlego.models.tensor_path import batch_forward, task_loss
    from pipelines import LEGO_CONFIGS
    from teachers import TEACHERS
    from uniform_baseline import parameter_bytes, prune_to_bytes

    torch.manual_seed(0)
    teacher_ckpt = json.load(open(osp.join(ROOT, 'bench', 'results', 'teachers.json')))[name]['checkpoint']
    bank_dir = osp.join(banks or osp.join(ROOT, 'work_dirs', 'pipelines'), name, 'bank')
    cfg = Config.fromfile(osp.join(ROOT, LEGO_CONFIGS[name]))
    if cfg_options:  # e.g. the retraining epochs the bank was made with: the uniform side's compute follows them
        cfg.merge_from_dict(cfg_options)
    cfg.load_from = teacher_ckpt
    teacher_cfg = Config.fromfile(osp.join(ROOT, TEACHERS[name][0]))
    model = init_lego_model(cfg, bank_dir, device='cpu', checkpoint=None)
    bank = model.bank
    metric = bank.profiles.metric_name
    path = bank.meta['tensor_path']
    forward = TENSOR_PATHS[path]
    names = [spec.name for spec in bank.blocks]
    teacher = build_model(teacher_cfg, teacher_ckpt)  # a clean copy (the live model carries the switcher's hooks)
    example = example_batch(cfg, teacher, batch_size=1)
    teacher_bytes = parameter_bytes(teacher)
    teacher_metric = _evaluate(teacher, cfg, metric)

    smallest = model.scale(memory_mb=1e-6)  # infeasible: switches to the smallest configuration
    low = smallest.total_memory_bytes
    budgets = [low + (teacher_bytes - low) * i / (num_budgets - 1) for i in range(num_budgets)]
    if picks_only:  # banks retrained differently, compared on the same budgets and split
        rows = [_pick(model, cfg, metric, budget) for budget in budgets]
        for row in rows:
            print(f'[quality] {name} {row["budget_mb"]:.1f} MB: mmlego {row["mmlego"]:.3f}', flush=True)
        return dict(model=name, metric=metric, teacher_metric=teacher_metric, teacher_mb=teacher_bytes / _MB,
                    bank=osp.realpath(bank_dir), retraining_seconds=None, rows=rows, **summarize(rows))

    # LegoDNN without retraining: the same blocks and pruning, regenerated from the teacher.
    loop_cfg = cfg.train_cfg
    graph = trace_model(teacher, (example,), forward)  # the teacher in eval mode (build_model); traced once for both
    fresh = BlockBank.build(teacher, (example,), bank.sparsities, loop_cfg.get('max_ratio', 0.125), forward,
                            show_progress=False, graph=graph)
    if [spec.name for spec in fresh.blocks] != names:
        raise SystemExit(f'{name}: the regenerated bank has other blocks than {bank_dir}')
    untrained_model = copy.deepcopy(teacher)
    untrained_switcher = BlockSwitcher(untrained_model, fresh, guard_forward=False)

    # The block-retraining compute, measured on the same machine now (one call per epoch, as the pipeline runs).
    batches = _batches(cfg)
    # The bank's own retraining settings where its pipeline recorded them (epochs, training through the model, ...).
    retrain_settings = dict(loop_cfg.get('retrain') or {})
    recorded = osp.join(osp.dirname(bank_dir), 'legodnn', 'pipeline.json')
    if osp.exists(recorded) and not (cfg_options and any(k.startswith('train_cfg.retrain') for k in cfg_options)):
        retrain_settings = json.load(open(recorded))['settings']['retrain']
    retrain_cfg = RetrainingConfig(**{**retrain_settings, 'epochs': 1})
    timed = [next(batches) for _ in range(4)]
    teacher_forward = batch_forward(path)
    scratch = BlockBank.build(teacher, (example,), bank.sparsities, loop_cfg.get('max_ratio', 0.125), forward,
                              show_progress=False, graph=graph)
    retrain_descendants(teacher, scratch.descendants, timed[:1], None, teacher_forward, retrain_cfg,
                        show_progress=False, task_loss=task_loss)
    start = time.perf_counter()
    retrain_descendants(teacher, scratch.descendants, timed[1:], None, teacher_forward, retrain_cfg,
                        show_progress=False, task_loss=task_loss)
    retrain_step_s = (time.perf_counter() - start) / len(timed[1:])
    del scratch
    from mmengine.runner import Runner
    epoch_batches = len(Runner.build_dataloader(copy.deepcopy(cfg.train_dataloader)))
    epoch_batches = retrain_settings.get('max_batches_per_epoch') or epoch_batches
    retrain_s = retrain_step_s * epoch_batches * retrain_settings.get('epochs', 1)

    rows = []
    for budget in budgets:
        row = _pick(model, cfg, metric, budget)
        untrained_switcher.switch(row['selection'])
        row['untrained'] = _evaluate(untrained_model, cfg, metric)
        pruned, sparsity = prune_to_bytes(teacher, example, forward, budget)
        row.update(uniform_sparsity=sparsity, uniform_mb=parameter_bytes(pruned) / _MB)
        runs = [('uniform_a', retrain_s / num_budgets)] + ([('uniform_b', retrain_s)] if harsh else [])
        for key, seconds in runs:
            values, steps = [], []
            for seed in range(seeds):  # the fine-tuning's own spread is as large as the differences counted
                torch.manual_seed(seed)
                candidate = copy.deepcopy(pruned)
                steps.append(_fine_tune(candidate, teacher_cfg, batches, seconds, lr_scale))
                values.append(_evaluate(candidate, cfg, metric))
                del candidate
            row[key], row[key + '_seeds'] = sum(values) / len(values), values
            row[key + '_steps'] = round(sum(steps) / len(steps))
        rows.append(row)
        print(f'[quality] {name} {row["budget_mb"]:.1f} MB: mmlego {row["mmlego"]:.3f}, untrained '
              f'{row["untrained"]:.3f}, uniform (a) {row["uniform_a"]:.3f} over {seeds} seed(s) '
              f'{[round(v, 3) for v in row["uniform_a_seeds"]]} (s={sparsity:.2f}, {row["uniform_a_steps"]} steps)',
              flush=True)
    return dict(model=name, metric=metric, teacher_metric=teacher_metric, teacher_mb=teacher_bytes / _MB,
                retraining_seconds=retrain_s, retrain_step_s=retrain_step_s, retrain_settings=retrain_settings,
                lr_scale=lr_scale, seeds=seeds, rows=rows, **summarize(rows))


def summarize(rows: list) -> dict:
    """Share of budgets won by mmlego over uniform (a) (its mean over the fine-tuning seeds; ties count as won), each
    curve's mean metric, and the mean spread (max - min) of uniform (a) over its seeds."""
    curves = [key for key in ('mmlego', 'untrained', 'uniform_a', 'uniform_b') if key in rows[0]]
    won = sum(row['mmlego'] >= row['uniform_a'] for row in rows) / len(rows) if 'uniform_a' in rows[0] else None
    spreads = [max(row['uniform_a_seeds']) - min(row['uniform_a_seeds']) for row in rows if 'uniform_a_seeds' in row]
    return dict(share_won=won, mean_metric={key: sum(row[key] for row in rows) / len(rows) for key in curves},
                uniform_a_seed_spread=sum(spreads) / len(spreads) if spreads else None)


def plot(result: dict, out: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows = result['rows']
    fig, ax = plt.subplots(figsize=(6.5, 4))
    x = [row['budget_mb'] for row in rows]
    styles = dict(mmlego=('mmlego pick', 'o-'), untrained=('LegoDNN without retraining', 'v--'),
                  uniform_a=('uniform + fine-tune (retraining compute / budgets)', 's-'),
                  uniform_b=('uniform + fine-tune (whole retraining compute)', 'd:'))
    for key, (label, style) in styles.items():
        if key in rows[0]:
            ax.plot(x, [row[key] for row in rows], style, label=label)
        if len(rows[0].get(key + '_seeds', ())) > 1:  # the fine-tuning seeds' range around their mean
            ax.fill_between(x, [min(row[key + '_seeds']) for row in rows], [max(row[key + '_seeds']) for row in rows],
                            alpha=0.2)
    ax.axhline(result['teacher_metric'], color='gray', lw=0.8, label='teacher')
    ax.set_xlabel('memory budget (MB of weights)')
    ax.set_ylabel(f"{result['metric']} (test split)")
    won = result['share_won']
    ax.set_title(f"B4 {result['model']}: " + ('mmlego picks only' if won is None else
                                              f'won {won:.0%} of budgets (target >= 80%)'))
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def markdown(results: dict) -> str:
    lines = ['| model | metric | teacher (test) | budgets | mmlego >= uniform (a) | mean metric: mmlego / without '
             'retraining / uniform (a) / uniform (b) | uniform (a) seeds, mean spread | retraining compute |',
             '|---|---|---|---|---|---|---|---|']
    for name, r in results.items():
        mean = r['mean_metric']
        means = ' / '.join(f'{mean[k]:.3f}' if k in mean else '-' for k in ('mmlego', 'untrained', 'uniform_a',
                                                                               'uniform_b'))
        won = '-' if r['share_won'] is None else \
            f"{r['share_won']:.0%} ({'met' if r['share_won'] >= TARGET_SHARE else 'not met'})"
        compute = '-' if r['retraining_seconds'] is None else f"{r['retraining_seconds'] / 60:.1f} min"
        seeds = '-' if r.get('uniform_a_seed_spread') is None else \
            f"{r.get('seeds', 1)}, {r['uniform_a_seed_spread']:.3f}"
        lines.append(f"| {name} | {r['metric']} | {r['teacher_metric']:.3f} | {len(r['rows'])} | {won} | {means} | "
                     f"{seeds} | {compute} |")
    return '\n'.join(lines)


def main(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--only', nargs='+', default=['yolov3', 'fcn', 'simplebaseline'])
    parser.add_argument('--budgets', type=int, default=8)
    parser.add_argument('--harsh', action='store_true', help='also fine-tune with the whole retraining compute')
    parser.add_argument('--lr-scale', type=float, default=0.1, help="fine-tuning lr = this x the teacher's lr")
    parser.add_argument('--out', default=osp.join(ROOT, 'bench', 'results', 'quality.json'))
    parser.add_argument('--markdown', action='store_true', help='only print the table from --out')
    parser.add_argument('--banks', help='directory holding <model>/bank (default: work_dirs/pipelines)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='overrides of the legodnn config, e.g. the retraining epochs the banks were made with')
    parser.add_argument('--picks-only', action='store_true',
                        help="only mmlego's picks, no baselines: compare banks retrained in other ways")
    parser.add_argument('--seeds', type=int, default=3,
                        help='fine-tuning seeds of the uniform baseline per budget (compared: their mean)')
    parser.add_argument('--child', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.budgets < 2:
        parser.error('--budgets must be >= 2')
    if args.seeds < 1:
        parser.error('--seeds must be >= 1')
    if args.child:
        emit(measure_model(args.child, args.budgets, args.harsh, args.lr_scale, args.banks, args.cfg_options,
                           args.picks_only, args.seeds))
        return
    results = json.load(open(args.out)) if osp.exists(args.out) else {}
    for name in [] if args.markdown else args.only:
        child_args = ['--child', name, '--budgets', str(args.budgets), '--lr-scale', str(args.lr_scale),
                      '--seeds', str(args.seeds)]
        child_args += (['--banks', args.banks] if args.banks else []) + (
            ['--cfg-options', *[f'{k}={v}' for k, v in args.cfg_options.items()]] if args.cfg_options else [])
        child_args += (['--harsh'] if args.harsh else []) + (['--picks-only'] if args.picks_only else [])
        result, stderr = run_child(__file__, child_args, ROOT)
        if result is None:
            raise SystemExit(f'quality of {name} failed:\n{stderr}')
        results[name] = result
        stem = osp.splitext(osp.basename(args.out))[0]  # quality.json -> quality_<model>.png
        plot(results[name], osp.join(osp.dirname(args.out), f'{stem}_{name}.png'))
        with open(args.out + '.tmp', 'w') as f:
            json.dump(results, f, indent=1)
        os.replace(args.out + '.tmp', args.out)
    print(markdown(results))


if __name__ == '__main__':
    main()
