"""Evaluate a checkpoint, or a LegoDNN block bank at budgets, on a config's test set (mmengine-style).

    python tools/test.py CONFIG CHECKPOINT                       # plain evaluation, as any OpenMMLab test.py
    python tools/test.py CONFIG BANK_DIR --budget memory=20MB,latency=150ms
    python tools/test.py CONFIG BANK_DIR --sweep 5 [--out DIR]

With a bank directory (it holds ``manifest.json``) the config's model must be ``mmlego.LegoDNN``; the teacher comes
from the config's ``load_from`` and the bank is attached to it (without --budget/--sweep the teacher is evaluated).
``--budget`` adds an ``mmlego.OnlineScalingHook`` with that budget and evaluates once; ``--sweep N`` evaluates N
memory budgets (``--sweep-by latency``: latency budgets) evenly spaced from the smallest configuration to the full
model and writes ``sweep.csv``, ``sweep.json``, ``sweep_budgets.png`` (per budget: estimated vs measured metric,
weight vs resident memory, profiled / corrected / measured latency, the teacher marked), ``sweep_memory.png`` and
``sweep_latency.png`` into ``--out`` (default ``WORK_DIR/sweep``). The metric is measured on the config's test
split (the pipeline profiled on val); the latency is the median of ``--latency-repeats`` timed forwards of the
tensor path on one example batch, the path the estimates describe.

A budget below the smallest configuration is an error (exit status 1, nothing evaluated) naming the smallest
achievable memory and latency; ``--allow-infeasible`` evaluates the smallest configuration instead (its row has
status ``infeasible``).
"""
import argparse
import json
import math
import os.path as osp
import re
import sys
from pathlib import Path

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmlego.apis.sweep import format_sweep_table, sweep_row, write_sweep  # noqa: E402
from mmlego.utils.launch import build_runner, load_config, parse_common_args  # noqa: E402

_BUDGET_HELP = 'memory=<MB> and/or latency=<ms>, comma-separated, e.g. --budget memory=12.5MB,latency=30ms'
_KEYS = {'memory': ('memory_mb', ('mb', 'mib')), 'latency': ('latency_ms', ('ms',))}
_NUMBER = re.compile(r'^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([a-zA-Z]*)\s*$')


def parse_budget_arg(text: str) -> dict:
    """``'memory=12.5MB,latency=30ms'`` -> ``{'memory_mb': 12.5, 'latency_ms': 30.0}`` (units optional)."""
    budget = {}
    items = [item.strip() for item in text.split(',') if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f'empty budget; give {_BUDGET_HELP}')
    for item in items:
        key, sep, value = item.partition('=')
        key = key.strip().lower()
        if not sep or key not in _KEYS:
            raise argparse.ArgumentTypeError(f'cannot read {item!r}: the budget keys are "memory" and "latency"; '
                                             f'give {_BUDGET_HELP}')
        name, units = _KEYS[key]
        if name in budget:
            raise argparse.ArgumentTypeError(f'{key} is given twice in {text!r}; give it once: {_BUDGET_HELP}')
        match = _NUMBER.match(value)
        unit = match.group(2).lower() if match else ''
        if not match or (unit and unit not in units):
            raise argparse.ArgumentTypeError(
                f'cannot read {key} {value!r}: give a number >= 0 in {units[0].replace("mb", "MB")} '
                f'(the unit is optional); {_BUDGET_HELP}')
        number = float(match.group(1))
        if not math.isfinite(number) or number < 0:
            raise argparse.ArgumentTypeError(f'{key} must be a finite number >= 0, got {value!r}; {_BUDGET_HELP}')
        budget[name] = number
    return budget


def _sweep_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 2:
        raise argparse.ArgumentTypeError(f'--sweep needs an integer >= 2 (budgets from the smallest configuration '
                                         f'to the full model), got {text!r}')
    return count


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Evaluate a checkpoint, or a LegoDNN block bank at budgets, on the test set of a config',
        epilog='A budget below the smallest configuration exits with status 1 (naming the smallest achievable '
               'memory/latency) unless --allow-infeasible is given.')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', metavar='BANK_OR_CHECKPOINT',
                        help='a block bank directory (holding manifest.json; the teacher comes from the config\'s '
                             'load_from) or a checkpoint file (.pth, as saved by mmengine)')
    scaling = parser.add_mutually_exclusive_group()
    scaling.add_argument('--budget', type=parse_budget_arg, help=f'evaluate one budget: {_BUDGET_HELP}')
    scaling.add_argument('--sweep', type=_sweep_count, metavar='N',
                         help='evaluate N memory budgets evenly spaced from the smallest configuration to the full '
                              'model; writes sweep.csv, sweep.json and PNG plots into --out')
    parser.add_argument('--out', help='directory of the sweep table and plots (default: WORK_DIR/sweep)')
    parser.add_argument('--sweep-by', choices=('memory', 'latency'), default='memory',
                        help='the budget --sweep varies (default memory)')
    parser.add_argument('--latency-repeats', type=int, default=20,
                        help='timed forwards of the measured latency per budget, after 3 untimed ones (median; '
                             '0 skips it)')
    parser.add_argument('--allow-infeasible', action='store_true',
                        help='evaluate the smallest configuration when --budget is below it (instead of exiting)')
    parse_common_args(parser)
    return parser.parse_args(argv)


def _is_bank(path: str) -> bool:
    return (Path(path) / 'manifest.json').is_file()


def _is_lego(cfg) -> bool:
    model_type = cfg.get('model', {}).get('type', '')
    return isinstance(model_type, str) and model_type.split('.')[-1] == 'LegoDNN'


def _bank_teacher_hint(bank_dir: str) -> str:
    try:
        meta = json.loads((Path(bank_dir) / 'manifest.json').read_text()).get('meta') or {}
    except (OSError, ValueError):
        return ''
    return f' (the bank records {meta["teacher_checkpoint"]})' if meta.get('teacher_checkpoint') else ''


def _prepare_config(args):
    """The config with the bank, teacher and scaling hook set up; exits with a clear message on misuse."""
    cfg = load_config(args)
    scaling = args.budget is not None or args.sweep is not None
    if _is_bank(args.checkpoint):
        if not _is_lego(cfg):
            raise SystemExit(f'{args.config} builds a {cfg.get("model", {}).get("type")!r} model, but a bank '
                             f'directory needs a LegoDNN config: model=dict(type="mmlego.LegoDNN", architecture=...) '
                             f'(e.g. the *_legodnn_* config the bank was built with)')
        if not cfg.get('load_from'):
            raise SystemExit(f'{args.config} has no load_from: the teacher checkpoint the bank was built from is '
                             f'needed; set load_from in the config or pass --cfg-options load_from=<teacher.pth>'
                             f'{_bank_teacher_hint(args.checkpoint)}')
        teacher = str(cfg.load_from)
        if '://' not in teacher and not Path(teacher).is_file():
            raise SystemExit(f'the teacher checkpoint {teacher} (load_from) does not exist; pass the checkpoint the '
                             f'bank was built from with --cfg-options load_from=<teacher.pth>'
                             f'{_bank_teacher_hint(args.checkpoint)}')
        cfg.model.bank = str(Path(args.checkpoint).resolve())
    else:
        if Path(args.checkpoint).is_dir():
            raise SystemExit(f'{args.checkpoint} is a directory without manifest.json: neither a block bank nor a '
                             'checkpoint; pass work_dir/bank of the LegoDNN pipeline or a .pth file')
        cfg.load_from = args.checkpoint
        if scaling and not _is_lego(cfg):
            raise SystemExit('--budget/--sweep scale an mmlego.LegoDNN model: use a LegoDNN config and pass its '
                             'block bank directory (work_dir/bank of tools/train.py) as the second argument')
    if scaling:
        hooks = [hook for hook in cfg.get('custom_hooks', None) or []
                 if str(hook.get('type', '')).split('.')[-1] != 'OnlineScalingHook']
        hooks.append(dict(type='mmlego.OnlineScalingHook', budget=None, latency_repeats=max(0, args.latency_repeats),
                          latency_warmup=3))
        cfg.custom_hooks = hooks
    return cfg


def _scaling_setup(runner):
    """The scaling hook, the wrapper (weights loaded, bank attached) and the bank's scaling problem."""
    from mmengine.model import is_model_wrapper

    from mmlego.block_bank import problem_from_bank
    from mmlego.engine import OnlineScalingHook
    hook = next(h for h in runner.hooks if isinstance(h, OnlineScalingHook))
    runner.load_or_resume()  # the teacher weights first: the bank is checked against them
    wrapper = runner.model.module if is_model_wrapper(runner.model) else runner.model
    wrapper.load_configured_bank()
    if wrapper.bank is None:
        raise SystemExit('the model has no block bank: pass the bank directory (work_dir/bank of tools/train.py on '
                         'the legodnn config) as the second argument, or set model.bank in the config')
    return hook, wrapper, problem_from_bank(wrapper.bank, latency_scale=wrapper.latency_scale)


def _evaluate(runner, hook) -> dict:
    """One runner.test() under the hook's budget; the row of the configuration that ran."""
    before = len(hook.records)
    runner.test()
    new = hook.records[before:]
    if not new:  # pragma: no cover - the hook records every test epoch once a budget is set
        raise SystemExit('the scaling hook recorded nothing; is the test dataloader empty?')
    return new[-1]


def main(argv=None):
    args = parse_args(argv)
    cfg = _prepare_config(args)
    runner = build_runner(args, mode='test', cfg=cfg)
    if args.budget is None and args.sweep is None:
        return runner.test()

    from mmengine.dist import is_main_process

    from mmlego.scaling_optimizer import budget_range, solve
    hook, wrapper, problem = _scaling_setup(runner)
    limits = budget_range(problem)
    smallest = (f'the smallest configuration needs {limits["min_memory_bytes"] / 2 ** 20:.2f} MB and '
                f'{limits["min_latency_ms"]:.2f} ms (estimates); the full model '
                f'{limits["max_memory_bytes"] / 2 ** 20:.2f} MB and {limits["max_latency_ms"]:.2f} ms')
    metric_name = wrapper.bank.profiles.metric_name
    if args.budget is not None:
        budget = args.budget
        memory = budget.get('memory_mb')
        check = solve(problem, latency_ms=budget.get('latency_ms'),
                      memory_bytes=None if memory is None else memory * 2 ** 20)
        if check.status == 'infeasible':
            given = ','.join(f'{key}={budget[name]:g}{unit}' for key, name, unit in
                             (('memory', 'memory_mb', 'MB'), ('latency', 'latency_ms', 'ms')) if name in budget)
            message = (f'budget {given} is infeasible: {smallest}; '
                       f'raise --budget to at least memory={limits["min_memory_bytes"] / 2 ** 20:.2f}MB,'
                       f'latency={limits["min_latency_ms"]:.2f}ms')
            if not args.allow_infeasible:
                raise SystemExit(message + ', or pass --allow-infeasible to evaluate the smallest configuration')
            runner.logger.warning(message + '; evaluating the smallest configuration (--allow-infeasible)')
        hook.set_budget(budget)
        rows = [sweep_row(_evaluate(runner, hook), 0)]
        if is_main_process():
            print(format_sweep_table(rows))
            if args.out:
                Path(args.out).mkdir(parents=True, exist_ok=True)
                (Path(args.out) / 'budget.json').write_text(json.dumps(rows[0], indent=2))
        return rows[0]

    if args.sweep_by == 'memory':
        low, high, key, unit = (limits['min_memory_bytes'] / 2 ** 20, limits['max_memory_bytes'] / 2 ** 20,
                                'memory_mb', 'MB')
    else:
        low, high, key, unit = limits['min_latency_ms'], limits['max_latency_ms'], 'latency_ms', 'ms'
    budgets = [low + (high - low) * i / (args.sweep - 1) for i in range(args.sweep)]
    budgets[-1] = high
    hook.set_budget([{key: b} for b in budgets])
    rows = []
    for index, budget in enumerate(budgets):
        runner.logger.info(f'sweep {index + 1}/{len(budgets)}: {args.sweep_by} budget {budget:.2f} {unit}')
        rows.append(sweep_row(_evaluate(runner, hook), index))
    out = Path(args.out) if args.out else Path(runner.work_dir) / 'sweep'
    if is_main_process():
        info = dict(config=args.config, bank=cfg.model.get('bank'), metric_name=metric_name, sweep_by=args.sweep_by,
                    report_split='test', profiling_split='val',
                    teacher_metric=wrapper.bank.profiles.teacher_metric, budget_range=limits,
                    latency_device=wrapper.bank.profiles.device)
        paths = write_sweep(rows, info, out)
        print(format_sweep_table(rows))
        print('wrote ' + ', '.join(str(path) for path in paths))
    return rows


if __name__ == '__main__':
    main()
