"""Evaluate a trained model (checkpoint) on a config's test set (mmengine-style)."""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmlego.utils.launch import build_runner, parse_common_args  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Evaluate a checkpoint on the test set of a config')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file (.pth, as saved by mmengine)')
    parse_common_args(parser)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    runner = build_runner(args, mode='test', checkpoint=args.checkpoint)
    return runner.test()


if __name__ == '__main__':
    main()
