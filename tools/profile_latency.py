"""Measure a bank's latencies on this device, or apply a table measured elsewhere.

On the target device (GPU, phone-class CPU, ...):

    python tools/profile_latency.py CONFIG BANK_DIR [--checkpoint CKPT] [--device cuda] --out table.json

Then, wherever the bank is optimized (copy table.json there):

    python tools/profile_latency.py --apply table.json BANK_DIR [--device cuda]

The table holds only latencies, the teacher's fingerprint and the block names; applying it to a bank of another
teacher fails with a clear error. With ``--apply``, ``--device`` names where the bank will run: a table measured on
another device type is refused unless ``--allow-other-device`` is given.

With onnxruntime instead of PyTorch (the same table; see mmlego/profiling/onnx_latency.py for how standalone block
times are anchored on the whole composites):

    python tools/profile_latency.py CONFIG BANK_DIR --onnx [--provider CUDAExecutionProvider] [--onnx-suite DIR]

On a device that has only onnxruntime: export the suite here, time it there, build the table here:

    python tools/profile_latency.py CONFIG BANK_DIR --onnx --onnx-suite DIR --export-only
    python mmlego/profiling/onnx_timing.py DIR          # on the device (numpy + onnxruntime only)
    python tools/profile_latency.py CONFIG BANK_DIR --onnx-suite DIR --onnx-timings DIR/timings.json --out table.json
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None) -> argparse.Namespace:
    from mmlego.profiling.latency import DEFAULT_MIN_SECONDS
    parser = argparse.ArgumentParser(description='Profile (or apply) the latency table of a block bank')
    parser.add_argument('paths', nargs='+', metavar='PATH', help='CONFIG BANK_DIR to measure, or BANK_DIR with --apply')
    parser.add_argument('--apply', metavar='TABLE', help='write the latencies of TABLE into the bank\'s manifest')
    parser.add_argument('--checkpoint', help='teacher weights the bank was built from (the config\'s load_from '
                        'by default)')
    parser.add_argument('--out', help='where to write the latency table (default: BANK_DIR/latency_<device>.json)')
    parser.add_argument('--device', help='torch device to measure on (default cpu); with --apply, where the bank '
                        'will run (a table of another device type is refused; default: not checked)')
    parser.add_argument('--allow-other-device', action='store_true',
                        help='with --apply: apply a table measured on another device type than --device anyway')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--min-seconds', type=float, default=DEFAULT_MIN_SECONDS,
                        help='in-model profiling visits the composites for at least this long, in more rounds if '
                        'needed, to span the device\'s speed phases (default %(default)g; 0: 4 rounds)')
    parser.add_argument('--batch-size', type=int, default=1, help='batch of the example input (default 1)')
    parser.add_argument('--threads', type=int, help='CPU intra-op threads to measure with (default: the config\'s '
                        'model.latency_threads, else as this process runs); serve with the same count')
    onnx = parser.add_argument_group('onnxruntime')
    onnx.add_argument('--onnx', action='store_true', help='export every composite and descendant block to ONNX and '
                      'time them in onnxruntime instead of PyTorch')
    onnx.add_argument('--onnx-suite', metavar='DIR', help='where the exported suite goes (default: a temporary '
                      'directory, removed after timing)')
    onnx.add_argument('--export-only', action='store_true', help='with --onnx --onnx-suite: only export (time it '
                      'on the device with mmlego/profiling/onnx_timing.py)')
    onnx.add_argument('--onnx-timings', metavar='FILE', help='build the table from the suite in --onnx-suite and '
                      'these timings (measured elsewhere)')
    onnx.add_argument('--provider', default='CPUExecutionProvider', help='onnxruntime execution provider')
    onnx.add_argument('--opset', type=int, default=18, help='ONNX opset of the suite (>= 17)')
    return parser.parse_args(argv)


def apply_table(table_path: str, bank_dir: str, device: str | None = None, allow_other_device: bool = False) -> None:
    """Copies a table's latencies into a bank manifest (no teacher needed: the fingerprint is compared).

    Args:
        table_path: The latency table (JSON).
        bank_dir: The bank directory whose manifest gets the latencies.
        device: Where the bank will run (None: not checked); a table of another device type is refused.
        allow_other_device: Apply a table of another device type anyway.

    Raises:
        SystemExit: The table or the bank cannot be read, or the table does not fit the bank (one message).
    """
    from mmlego.block_bank.bank import MANIFEST, _read_manifest
    from mmlego.block_bank.profiles import BankProfiles
    from mmlego.profiling import LatencyTable
    from mmlego.utils.atomic_io import atomic_write_json
    import pathlib
    from mmlego.block_bank import BankError
    try:
        table = LatencyTable.load(table_path)
        manifest = _read_manifest(pathlib.Path(bank_dir) / MANIFEST)
    except (ValueError, BankError) as error:
        raise SystemExit(f'cannot apply {table_path} to {bank_dir}: {error}') from None
    profiles = BankProfiles.from_dict(manifest.get('profiles') or {})
    blocks = [block['name'] for block in manifest['extraction']['blocks']]
    try:
        table.apply_to_profiles(profiles, manifest['teacher_fingerprint'], blocks,
                                [float(s) for s in manifest['sparsities']], device=device,
                                allow_other_device=allow_other_device)
    except ValueError as error:
        raise SystemExit(f'cannot apply {table_path} to {bank_dir}: {error} (measure it with '
                         'tools/profile_latency.py CONFIG BANK_DIR on the target device)') from None
    manifest['profiles'] = profiles.to_dict()
    atomic_write_json(pathlib.Path(bank_dir) / MANIFEST, manifest)
    print(f'applied {table_path} ({table.device}) to {bank_dir}')


def measure(args: argparse.Namespace) -> str:
    """Loads config, teacher and bank, measures every descendant and the whole model, writes the table."""
    from mmlego.utils.launch import read_config
    import mmlego  # noqa: F401
    from mmlego.block_bank import BlockBank
    from mmlego.models import TENSOR_PATHS, build_model, example_batch
    from mmlego.profiling import LatencyTable, profile_latency
    config, bank_dir = args.paths
    from mmlego.profiling.latency import check_thread_count
    try:
        check_thread_count(args.threads, '--threads')
    except ValueError as error:
        raise SystemExit(str(error)) from None
    args.device = args.device or 'cpu'
    if args.onnx and args.onnx_suite:  # before anything is loaded
        from mmlego.profiling.onnx_latency import check_suite_directory
        try:
            check_suite_directory(args.onnx_suite)
        except FileExistsError as error:
            raise SystemExit(str(error)) from None
    try:
        cfg = read_config(config)
    except FileNotFoundError as error:
        raise SystemExit(str(error)) from None
    model = build_model(cfg, args.checkpoint or cfg.get('load_from'), device=args.device)
    bank = BlockBank.load(bank_dir, model, map_location=args.device)
    inputs = example_batch(cfg, model, batch_size=args.batch_size).to(args.device)
    forward = TENSOR_PATHS[bank.meta.get('tensor_path', 'tensor')]
    if args.onnx or args.onnx_timings:
        table, check = _onnx_table(args, bank, model, inputs, forward)
        if table is None:
            return args.onnx_suite
        default_name = f'latency_onnxruntime_{table.device.split()[0]}.json'
    else:
        from mmlego.profiling import intra_op_threads
        threads = args.threads if args.threads is not None else cfg.model.get('latency_threads')
        with intra_op_threads(threads):
            check = profile_latency(bank, model, (inputs,), forward, warmup=args.warmup, repeats=args.repeats,
                                    min_seconds=args.min_seconds)
        table = LatencyTable.from_bank(bank)
        default_name = f'latency_{args.device.replace(":", "")}.json'
    out = args.out or osp.join(bank_dir, default_name)
    table.save(out)
    print(f'wrote {out}: model {table.model_latency_ms:.2f} ms on {table.device}; frame + blocks vs measured '
          'composites: ' + ', '.join(f's={key}: {error:+.1%}' for key, error in check.items()))
    return out


def _onnx_table(args: argparse.Namespace, bank, model, inputs, forward):
    """(table, check) from onnxruntime timings of the bank's suite; (None, None) with --export-only."""
    import tempfile

    from mmlego.profiling.onnx_latency import apply_onnx_timings, export_latency_suite
    from mmlego.profiling.onnx_timing import time_suite
    if (args.export_only or args.onnx_timings) and not args.onnx_suite:
        raise SystemExit('--export-only and --onnx-timings need --onnx-suite DIR (where the suite is)')
    if args.onnx_timings:
        try:
            return apply_onnx_timings(bank, args.onnx_suite, args.onnx_timings)
        except ValueError as error:
            raise SystemExit(str(error)) from None
    from mmlego.export import ExportError
    with tempfile.TemporaryDirectory() as scratch:
        suite = args.onnx_suite or osp.join(scratch, 'suite')
        try:
            export_latency_suite(bank, model, inputs, forward, suite, opset=args.opset)
        except ExportError as error:  # one message, e.g. a two-stage detector's path
            raise SystemExit(str(error)) from None
        if args.export_only:
            print(f'wrote the ONNX latency suite to {suite}; time it on the device with '
                  f'python mmlego/profiling/onnx_timing.py {suite}')
            return None, None
        timings = time_suite(suite, args.provider, warmup=args.warmup, repeats=args.repeats)
        return apply_onnx_timings(bank, suite, timings)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.apply:
        if len(args.paths) != 1:
            raise SystemExit('--apply TABLE takes one BANK_DIR')
        apply_table(args.apply, args.paths[0], args.device, args.allow_other_device)
    else:
        if len(args.paths) != 2:
            raise SystemExit('measuring takes CONFIG BANK_DIR (or use --apply TABLE BANK_DIR)')
        measure(args)


if __name__ == '__main__':
    main()
