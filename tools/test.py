"""Evaluate a checkpoint, or a LegoDNN block bank at budgets, on a config's test set (mmengine-style).

    python tools/test.py CONFIG CHECKPOINT                # as any OpenMMLab test.py; a legodnn config scales the
                                                          # model to the budget of its OnlineScalingHook
    python tools/test.py CONFIG BANK_DIR --budget memory=20MB,latency=150ms
    python tools/test.py CONFIG BANK_DIR --sweep 5 [--sweep-dir DIR]

A legodnn config carries ``runner_type='mmlego.LegoRunner'``, ``model.bank`` (where its pipeline wrote the bank) and
an ``mmlego.OnlineScalingHook`` with a budget, so ``CONFIG TEACHER_CKPT`` evaluates the scaled model with no flags
(the task package's own ``tools/test.py`` does the same). A bank directory (it holds ``manifest.json``) as the second
argument replaces ``model.bank``; the teacher then comes from the config's ``load_from``. ``--budget`` replaces the
hook's budget; ``--sweep N`` runs ``mmlego.BudgetSweepLoop``: N memory budgets (``--sweep-by latency``: latency
budgets) evenly spaced from the smallest configuration to the full model, in one run, writing ``sweep.csv``,
``sweep.json``, ``sweep_budgets.png`` (per budget: estimated vs measured metric, weight vs resident memory,
profiled / corrected / measured latency, the teacher marked), ``sweep_memory.png`` and ``sweep_latency.png`` into
``--sweep-dir`` (default ``WORK_DIR/sweep``). The metric is measured on the config's test split (the pipeline
profiled on val); the latency is the median of ``--latency-repeats`` timed forwards of the tensor path on one
example batch, the path the estimates describe. ``--out FILE.pkl`` dumps the predictions, as in mmdet.

A budget below the smallest configuration is an error (exit status 1, nothing evaluated) naming the smallest
achievable memory and latency; ``--allow-infeasible`` evaluates the smallest configuration instead (its row has
status ``infeasible``).

A bank directory is checked right after the arguments are parsed (manifest, format version, tensor file and its
checksum) and once the teacher is loaded (built from this teacher): a damaged or foreign bank exits with status 1
and one message, nothing evaluated. A bad ``--budget`` exits with status 2 and argparse's one-line usage error.
"""
import argparse
import json
import os.path as osp
import sys
from pathlib import Path

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmlego.apis.sweep import format_sweep_table, sweep_row  # noqa: E402
from mmlego.utils.launch import build_runner, load_config, parse_budget_arg, parse_common_args  # noqa: E402

_BUDGET_HELP = ("memory and/or latency, comma-separated, e.g. --budget memory=12.5MB,latency=30ms (units optional; "
                "'60%%' is a share of the full model)")


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
    parser.add_argument('--sweep-dir', help='directory of the sweep table and plots, or of budget.json with --budget '
                                            '(default for --sweep: WORK_DIR/sweep)')
    parser.add_argument('--out', help='dump the predictions to this pickle file (mmengine DumpResults, as mmdet)')
    parser.add_argument('--sweep-by', choices=('memory', 'latency'), default='memory',
                        help='the budget --sweep varies (default memory)')
    parser.add_argument('--latency-repeats', type=int, default=None,
                        help='timed forwards of the measured latency per budget, after 3 untimed ones (median; '
                             '0 skips it; default: the config hook\'s, 20 for --budget/--sweep)')
    parser.add_argument('--interleaved-seconds', type=float, default=10.0, metavar='S',
                        help='with --sweep and a measured latency: the rows\' configurations measured once more in '
                             'visits interleaved over at least S seconds (0: not; default 10)')
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


def _scaling_hook(cfg, args) -> dict:
    """The config's OnlineScalingHook entry (one is added if there is none), with the command line applied."""
    hooks = list(cfg.get('custom_hooks', None) or [])
    hook = next((h for h in hooks if str(h.get('type', '')).split('.')[-1] == 'OnlineScalingHook'), None)
    if hook is None:
        hook = dict(type='mmlego.OnlineScalingHook', budget=None, latency_repeats=20, latency_warmup=3)
        hooks.append(hook)
    if args.latency_repeats is not None:
        hook['latency_repeats'] = max(0, args.latency_repeats)
    if args.budget is not None:
        hook['budget'] = args.budget
        hook['on_infeasible'] = 'warn' if args.allow_infeasible else 'error'
    cfg.custom_hooks = hooks
    return hook


def _prepare_config(args):
    """The config with the bank, teacher, scaling hook and test loop set up; exits with a clear message on misuse."""
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
    if _is_lego(cfg) and (scaling or args.latency_repeats is not None):
        _scaling_hook(cfg, args)
    if args.sweep is not None:
        cfg.test_cfg = dict(type='mmlego.BudgetSweepLoop', num_budgets=args.sweep, sweep_by=args.sweep_by,
                            out_dir=args.sweep_dir, interleaved_seconds=args.interleaved_seconds)
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise SystemExit(f'--out must be a .pkl file (the dumped predictions), got {args.out}')
        evaluator = cfg.test_evaluator
        cfg.test_evaluator = [*(evaluator if isinstance(evaluator, list) else [evaluator]),
                              dict(type='DumpResults', out_file_path=args.out)]
    return cfg


def _check_bank_files(args) -> None:
    """A corrupted or foreign-format bank is one error line right after parsing (no runner built, no traceback).

    Whether the bank belongs to the teacher needs the teacher weights: that is checked once they are loaded.
    """
    if not _is_bank(args.checkpoint):
        return
    from mmlego.block_bank import BankError, BlockBank
    try:
        BlockBank.verify(args.checkpoint)
    except BankError as error:
        raise SystemExit(f'{error}{_bank_teacher_hint(args.checkpoint)}') from None


def main(argv=None):
    args = parse_args(argv)
    _check_bank_files(args)
    cfg = _prepare_config(args)
    runner = build_runner(args, mode='test', cfg=cfg)

    from mmengine.dist import is_main_process
    from mmengine.model import is_model_wrapper

    from mmlego.block_bank import BankError
    from mmlego.engine import BudgetSweepLoop, OnlineScalingHook
    from mmlego.scaling_optimizer.budget import InfeasibleBudgetError
    try:
        if _is_bank(args.checkpoint):  # checked before the test loop, with or without --budget / --sweep
            runner.load_or_resume()  # the teacher weights first: the bank is checked against them
            model = runner.model.module if is_model_wrapper(runner.model) else runner.model
            model.load_configured_bank()
        metrics = runner.test()
    except InfeasibleBudgetError as error:
        raise SystemExit(f'{error}, or pass --allow-infeasible to evaluate the smallest configuration') from None
    except BankError as error:
        raise SystemExit(f'{error}{_bank_teacher_hint(args.checkpoint)}') from None
    hook = next((h for h in runner.hooks if isinstance(h, OnlineScalingHook)), None)
    if isinstance(runner.test_loop, BudgetSweepLoop):
        rows = runner.test_loop.rows
    elif hook is not None and hook.records:
        rows = [sweep_row(hook.records[-1], 0)]
        if args.sweep_dir and is_main_process():
            Path(args.sweep_dir).mkdir(parents=True, exist_ok=True)
            (Path(args.sweep_dir) / 'budget.json').write_text(json.dumps(rows[0], indent=2))
    else:
        return metrics
    if is_main_process():
        print(format_sweep_table(rows))
        if isinstance(runner.test_loop, BudgetSweepLoop) and runner.test_loop.out_dir is not None:
            print(f'wrote sweep.csv, sweep.json and plots into {runner.test_loop.out_dir}')
    return rows if args.sweep is not None else rows[0]


if __name__ == '__main__':
    main()
