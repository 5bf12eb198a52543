"""Train an OpenMMLab model, or run mmlego's LegoDNN pipeline, from a config (mmengine-style)."""
import argparse
import os.path as osp
import sys

# Running `python tools/train.py` from a checkout works without `pip install -e .` too.
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmlego.utils.launch import build_runner, parse_common_args  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model (or build a LegoDNN block bank) from a config')
    parser.add_argument('config', help='config file path')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from the given checkpoint, or from the latest one in the work dir if no path is given')
    parser.add_argument('--amp', action='store_true', help='enable automatic mixed precision training')
    parser.add_argument('--auto-scale-lr', action='store_true', help='scale the learning rate by the batch size')
    parse_common_args(parser)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    runner = build_runner(args, mode='train')
    runner.train()


if __name__ == '__main__':
    main()
