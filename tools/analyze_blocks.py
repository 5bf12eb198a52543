"""Print the LegoDNN blocks of any OpenMMLab config (or write them as JSON).

    python tools/analyze_blocks.py CONFIG [--max-ratio 0.125] [--checkpoint CKPT] [--json [FILE]] [--shape H W]

The example input is one sample of the config's val dataloader, so the data it names must exist (for the synthetic
configs: ``make data``), unless ``--shape`` gives the input instead (random values; blocks depend only on shapes),
as mmdet's ``get_flops.py --shape`` does: ``--shape 512`` or ``--shape 512 1024`` for an image model (batch 1, 3
channels), or the whole preprocessed input, e.g. ``--shape 1 8 3 112 112`` for TSN (batch, clips x segments, C,
H, W).
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None) -> argparse.Namespace:
    from mmengine.config import DictAction

    from mmlego.models.tensor_path import TENSOR_PATHS
    parser = argparse.ArgumentParser(description='Show the blocks LegoDNN finds in a model')
    parser.add_argument('config', help='an OpenMMLab config file, or an installed package\'s (mmseg::pspnet/...)')
    parser.add_argument('--max-ratio', type=float, default=0.125,
                        help='a block holds at most max(2, floor(max_ratio x #convs)) convs (default 0.125)')
    parser.add_argument('--checkpoint', help='teacher weights (optional: blocks depend only on the structure)')
    parser.add_argument('--tensor-path', choices=list(TENSOR_PATHS),
                        help="traced path (default: mode='tensor' if it traces, else tensor_with_samples if it runs "
                             "(two-stage detectors), else extract_feat)")
    parser.add_argument('--json', nargs='?', const='-', metavar='FILE',
                        help='write JSON (to FILE, or stdout when no FILE is given) instead of the table')
    parser.add_argument('--shape', type=int, nargs='+', metavar='N',
                        help='input shape instead of a dataset sample: S, H W (image models) or the whole shape')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings (key=value)')
    return parser.parse_args(argv)


def input_shape(shape: list) -> tuple:
    """``--shape``: S -> (1, 3, S, S); H W -> (1, 3, H, W); anything longer is the whole shape."""
    if any(n <= 0 for n in shape):
        raise SystemExit(f'--shape takes positive sizes, got {shape}')
    if len(shape) == 1:
        return (1, 3, shape[0], shape[0])
    if len(shape) == 2:
        return (1, 3, *shape)
    return tuple(shape)


def analyze(args: argparse.Namespace) -> dict:
    import torch
    from mmlego.utils.launch import read_config
    import mmlego  # noqa: F401  (registries)
    from mmlego.block_extraction import extract_blocks
    from mmlego.models import build_model, example_batch, trace_tensor_path
    try:
        cfg = read_config(args.config)
    except FileNotFoundError as error:
        raise SystemExit(str(error)) from None
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    model = build_model(cfg, args.checkpoint)
    inputs = example_batch(cfg, model) if not args.shape else torch.randn(input_shape(args.shape))
    path, graph = trace_tensor_path(model, inputs, args.tensor_path)
    extraction = extract_blocks(model, (inputs,), max_ratio=args.max_ratio, graph=graph)
    total_params = sum(p.numel() for p in model.parameters())
    result = extraction.to_dict()
    result.update(config=args.config, tensor_path=path, model_params=total_params)
    return result


def print_table(result: dict) -> None:
    print(f"{result['config']}: traced path '{result['tensor_path']}', {len(result['blocks'])} blocks covering "
          f"{result['num_convs_covered']}/{result['num_convs_total']} convs "
          f"({100 * result['num_convs_covered'] / max(1, result['num_convs_total']):.0f}%), at most "
          f"{result['max_convs_per_block']} convs per block (max_ratio {result['max_ratio']}; linear layers count as convs)")
    header = f"{'#':>2}  {'block':<48} {'convs':>5} {'prunable':>8} {'params':>10}  {'input':<18} output"
    print(header)
    print('-' * len(header))
    for i, block in enumerate(result['blocks']):
        name = block['name'] if len(block['name']) <= 48 else block['name'][:45] + '...'
        print(f"{i:>2}  {name:<48} {len(block['convs']):>5} {len(block['prunable_convs']):>8} "
              f"{block['num_params']:>10,}  {str(block['input_shape']):<18} {block['output_shape']}")
        if len(block['members']) > 1:
            wired = ' (side by side, joined by the model\'s own ops: a fan-out block)' if block.get('wiring') else ''
            print(f"    members{wired}: {', '.join(block['members'])}")
        if block.get('calls', 1) > 1:
            print(f"    called {block['calls']} times per forward (one descendant serves every call)")
    covered = sum(block['num_params'] for block in result['blocks'])
    print(f"blocks hold {covered:,} of the model's {result['model_params']:,} parameters "
          f"({100 * covered / max(1, result['model_params']):.0f}%)")


def main(argv=None) -> dict:
    args = parse_args(argv)
    result = analyze(args)
    if args.json == '-':
        print(json.dumps(result, indent=2))
    elif args.json:
        from mmlego.utils.atomic_io import atomic_write_json
        atomic_write_json(args.json, result)
        print(f'wrote {args.json}')
    else:
        print_table(result)
    return result


if __name__ == '__main__':
    main()
