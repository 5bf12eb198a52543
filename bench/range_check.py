"""How small can a configuration get? The smallest configuration's weight bytes / the teacher's, per top sparsity.

Issue 13 asks for a range as wide as uniform pruning's: the smallest configuration <= 20% of the teacher's weight
bytes on all eight. The smallest configuration switches every block to its sparsest descendant; what it keeps is the
frame (modules outside every block) plus those descendants. This builds each model's blocks and descendants (no
retraining: bytes do not depend on it) at the config's block extraction and the given sparsities, and reports the
share at each:

    .venv/bin/python bench/range_check.py [--only yolov3 ...] [--sparsities 0.8 0.9 0.95] [--teachers FILE]
"""
import argparse
import copy
import json
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

TARGET_SHARE = 0.2


def smallest_shares(teacher_config: str, lego_config: str, checkpoint: str | None,
                    sparsities: list[float]) -> dict[float, float]:
    """Weight bytes of the all-at-``s`` configuration / the teacher's, for each ``s`` in ``sparsities``."""
    from mmengine.config import Config

    from mmlego.block_bank import BlockBank
    from mmlego.block_switcher import BlockSwitcher
    from mmlego.models import TENSOR_PATHS, build_model, example_batch, trace_tensor_path
    from uniform_baseline import parameter_bytes
    cfg = Config.fromfile(lego_config)
    teacher = build_model(Config.fromfile(teacher_config), checkpoint)
    example = example_batch(cfg, teacher)
    path, graph = trace_tensor_path(teacher, example)
    bank = BlockBank.build(teacher, (example,), [0.0] + list(sparsities), cfg.train_cfg.get('max_ratio', 0.125),
                           TENSOR_PATHS[path], show_progress=False, graph=graph)
    shares = {}
    for sparsity in sparsities:
        model = copy.deepcopy(teacher)
        BlockSwitcher(model, bank, guard_forward=False).switch({spec.name: sparsity for spec in bank.blocks})
        shares[sparsity] = parameter_bytes(model) / parameter_bytes(teacher)
    return shares


def markdown(results: dict) -> str:
    sparsities = sorted({float(s) for shares in results.values() for s in shares})
    lines = ['| model | ' + ' | '.join(f'top sparsity {s:g}' for s in sparsities) + ' |',
             '|---|' + '---|' * len(sparsities)]
    for name, shares in results.items():
        cells = [f'{shares[str(s)]:.1%}' + (' (met)' if shares[str(s)] <= TARGET_SHARE else '')
                 if str(s) in shares else '-' for s in sparsities]
        lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main(argv=None):
    from pipelines import LEGO_CONFIGS
    from teachers import TEACHERS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--only', nargs='+', choices=sorted(LEGO_CONFIGS), default=list(LEGO_CONFIGS))
    parser.add_argument('--sparsities', nargs='+', type=float, default=[0.8, 0.9, 0.95])
    parser.add_argument('--teachers', help='teacher checkpoints (bench/teachers.py JSON); default: random weights, '
                                           'which have the same bytes')
    parser.add_argument('--out', default=osp.join(ROOT, 'bench', 'results', 'range.json'))
    args = parser.parse_args(argv)
    teachers = json.load(open(args.teachers)) if args.teachers else {}
    results = json.load(open(args.out)) if osp.exists(args.out) else {}  # --only updates those models' rows
    for name in args.only:
        shares = smallest_shares(osp.join(ROOT, TEACHERS[name][0]), osp.join(ROOT, LEGO_CONFIGS[name]),
                                 teachers.get(name, {}).get('checkpoint'), args.sparsities)
        results[name] = {str(s): share for s, share in shares.items()}
        print(f'[range] {name}: ' + ', '.join(f'{s:g}: {v:.1%}' for s, v in shares.items()), flush=True)
    from mmlego.utils.atomic_io import atomic_write_json
    atomic_write_json(args.out, results)
    print(markdown(results))
    return results


if __name__ == '__main__':
    main()
