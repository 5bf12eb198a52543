"""Export the configuration a budget picks: ONNX (checked with onnxruntime) plus a standalone artifact.

    python tools/export.py CONFIG BANK_DIR --budget memory=20MB,latency=30ms --out work_dirs/export

The teacher comes from ``--checkpoint``, else the config's ``load_from``, else the checkpoint the bank recorded. The
artifact (``config.py``, ``weights.safetensors``, ``configuration.json``, ``model.onnx``) runs without the bank and
the teacher checkpoint: ``mmlego.export.load_configuration(DIR)``. ``configuration.json`` holds the selection, its
estimates, the budget, the teacher fingerprint and the ONNX check (largest |onnxruntime - PyTorch| difference).
An infeasible budget, an existing ``--out`` (without ``--overwrite``) or an opset that cannot express a layer exit
with status 1 and one message; nothing is written.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmlego.utils.launch import parse_budget_arg  # noqa: E402  (the one --budget parser, shared with tools/test.py)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Export the configuration a budget picks (ONNX + artifact)')
    parser.add_argument('config', help='the legodnn config the bank was built with')
    parser.add_argument('bank', help='the block bank directory')
    parser.add_argument('--budget', type=parse_budget_arg, required=True,
                        help="memory and/or latency, e.g. memory=20MB,latency=30ms ('60%%': share of the teacher)")
    parser.add_argument('--out', required=True, help='the artifact directory')
    parser.add_argument('--checkpoint', help='teacher checkpoint the bank was built from')
    parser.add_argument('--opset', type=int, default=18, help='ONNX opset (>= 17, default 18)')
    parser.add_argument('--no-onnx', action='store_true', help='write the safetensors artifact only')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing --out')
    parser.add_argument('--device', default='cpu', help='torch device (default cpu)')
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from mmengine.registry import DefaultScope

    from mmlego.apis import init_lego_model
    from mmlego.block_bank import BankError
    from mmlego.engine.budget_schedule import infeasible_message
    from mmlego.export import ExportError, export_configuration
    from mmlego.models import example_batch
    if osp.exists(args.out) and not args.overwrite:
        raise SystemExit(f'{args.out} exists; choose another --out or pass --overwrite')
    try:
        model = init_lego_model(args.config, args.bank, device=args.device, checkpoint=args.checkpoint)
        result = model.scale(**{key: args.budget.get(key) for key in ('latency_ms', 'memory_mb')})
        if result.status == 'infeasible':
            raise SystemExit(f'cannot export: {infeasible_message(args.budget, model)}')
        with DefaultScope.overwrite_default_scope(model.cfg.get('default_scope')):
            inputs = example_batch(model.cfg, model.architecture, split='test').to(args.device)
        meta = export_configuration(model, args.out, inputs, extra=dict(budget=model.budget, status=result.status),
                                    onnx=not args.no_onnx, opset=args.opset, overwrite=args.overwrite)
    except (BankError, ExportError, ValueError, FileNotFoundError, FileExistsError) as error:
        raise SystemExit(f'export: {error}') from None
    onnx = meta.get('onnx')
    print(f'exported to {args.out}: {sum(1 for s in meta["selection"].values() if s > 0)}/{len(meta["selection"])} '
          f'blocks pruned, {meta["estimates"]["memory_bytes"] / 2 ** 20:.2f} MB, '
          f'{meta["estimates"]["latency_ms"]:.2f} ms estimated'
          + (f'; ONNX opset {onnx["opset"]}, max |onnxruntime - torch| = {onnx["max_abs_diff"]:.2e}' if onnx else ''))
    return meta


if __name__ == '__main__':
    main()
