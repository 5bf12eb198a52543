"""Replay a shared budget trace over several LegoDNN models: CSV table and PNG timeline.

    python tools/replay_budget_trace.py TRACE.json \
        --model configs/detection/yolov3/yolov3_r18_legodnn_synthdet.py work_dirs/yolo/bank \
        --model configs/segmentation/fcn/fcn_r18-d8_legodnn_synthseg.py work_dirs/fcn/bank work_dirs/fcn_teacher.pth \
        --out work_dirs/trace

TRACE is a JSON/YAML list of ``{"time_s": ..., "memory_mb": ..., "latency_ms": ...}`` (the same format as
``OnlineScalingHook(budget=<file>)``; shares such as ``"60%"`` are taken of the teachers' total). Every
``--model CONFIG BANK [TEACHER]`` joins the shared budget (the teacher defaults to the config's ``load_from``, else
the checkpoint the bank recorded). Per step the models are solved jointly when the budget changed, only the changed
blocks switch, and each model is measured as it runs: the median latency of its tensor path and its metric on the
report split (its config's test set). Writes ``trace.csv``, ``trace.json`` and ``trace.png`` into ``--out``.

A step below the smallest joint configuration exits with status 1 naming it (nothing run) unless
``--allow-infeasible`` is given.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))


from mmengine.config import DictAction  # noqa: E402


def _weights(text: str) -> dict:
    weights = {}
    for part in filter(None, text.split(',')):
        name, _, value = part.partition('=')
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f'--weights takes name=number pairs, e.g. yolov3=1,fcn=0.5; got '
                                             f'{part!r}') from None
    return weights


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Replay a shared budget trace over several LegoDNN models')
    parser.add_argument('trace', help='JSON/YAML list of {"time_s", "memory_mb", "latency_ms"}')
    parser.add_argument('--model', nargs='+', action='append', required=True, metavar='CONFIG BANK [TEACHER]',
                        help='a legodnn config, its bank directory and optionally its teacher checkpoint; repeat')
    parser.add_argument('--name', action='append', help='names of the models, in --model order (default: the '
                        'config file names)')
    parser.add_argument('--weights', type=_weights, help='name=weight of each metric drop (default: 1/teacher '
                        'metric, i.e. each metric relative to its teacher)')
    parser.add_argument('--out', required=True, help='directory of trace.csv, trace.json and trace.png')
    parser.add_argument('--device', default='cpu', help='torch device (default cpu)')
    parser.add_argument('--latency-repeats', type=int, default=10, help='timed forwards per model and step '
                        '(median; 0 skips)')
    parser.add_argument('--max-batches', type=int, default=None, help='report-split batches per model and step '
                        '(default all; 0 skips the metric)')
    parser.add_argument('--solver', default='exact', choices=('exact', 'pulp', 'brute_force'))
    parser.add_argument('--allow-infeasible', action='store_true',
                        help='run the smallest joint configuration at steps below it (instead of exiting)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='overrides applied to every config (e.g. test_dataloader.num_workers=0)')
    args = parser.parse_args(argv)
    for entry in args.model:
        if len(entry) not in (2, 3):
            parser.error(f'--model takes CONFIG BANK [TEACHER], got {entry}')
    if args.name and len(args.name) != len(args.model):
        parser.error(f'{len(args.name)} --name for {len(args.model)} --model')
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    from mmengine.logging import MMLogger, print_log

    from mmlego.apis import init_lego_model
    from mmlego.apis.budget_trace import ModelProbe, check_trace_feasible, replay_trace, write_trace
    from mmlego.block_bank import BankError
    from mmlego.engine.budget_schedule import load_schedule
    from mmlego.runtime import MultiModelRuntime
    os.makedirs(args.out, exist_ok=True)
    MMLogger.get_instance('mmlego', log_file=osp.join(args.out, 'trace.log'))
    try:
        trace = load_schedule(args.trace)
        built = [init_lego_model(entry[0], entry[1], device=args.device, cfg_options=args.cfg_options,
                                 checkpoint=entry[2] if len(entry) == 3 else None) for entry in args.model]
        models = dict(zip(args.name, built)) if args.name else built
        runtime = MultiModelRuntime(models, weights=args.weights, solver=args.solver)
        if not args.allow_infeasible:
            check_trace_feasible(runtime, trace)
    except (ValueError, BankError, FileNotFoundError, TypeError) as error:
        raise SystemExit(f'replay_budget_trace: {error}') from None
    probes = {name: ModelProbe(model, latency_repeats=args.latency_repeats, max_batches=args.max_batches)
              for name, model in runtime.models.items()}

    def log(row):
        measured = row['measured_latency_ms']
        print_log(f'step {row["step"]} t={row["time_s"]:g}s: {row["status"]}, {row["memory_mb"]:.2f} MB, '
                  f'{row["estimated_latency_ms"]:.2f} ms estimated / '
                  f'{"-" if measured is None else format(measured, ".2f")} ms measured, '
                  f'{row["switched_blocks"]} blocks switched', logger='current')

    rows = replay_trace(runtime, trace, probes, on_step=log)
    info = dict(trace=args.trace, models={name: dict(config=model.cfg.filename, bank=str(model._bank_dir),
                                                     metric_name=model.bank.profiles.metric_name,
                                                     teacher_metric=model.bank.profiles.teacher_metric,
                                                     weight=runtime.weights[name])
                                          for name, model in runtime.models.items()},
                device=args.device)
    paths = write_trace(rows, list(runtime.models), info, args.out)
    print('\n'.join(str(path) for path in paths))


if __name__ == '__main__':
    main()
