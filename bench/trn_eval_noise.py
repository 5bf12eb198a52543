"""How much TRN's val metric moves between evaluations of one model with different random draws (mmaction2's TRN
head samples which frame relations it sums in every forward, eval included): the noise a drop, a difference of two
evaluations, carried before every evaluation drew the same random numbers (``evaluate_model(seed=0)``).

    .venv/bin/python bench/trn_eval_noise.py   # the pipeline's TRN bank and teacher -> bench/results/trn_eval_noise.json
"""
import copy
import json
import os.path as osp
import statistics
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

CONFIG = osp.join(ROOT, 'configs/action/trn/trn_r18_legodnn_synthaction.py')
BANK = osp.join(ROOT, 'work_dirs/pipelines/trn/bank')


def main(seeds: int = 6) -> dict:
    from mmengine.evaluator import Evaluator
    from mmengine.runner import Runner

    from mmlego.apis import init_lego_model
    from mmlego.engine.task_metrics import evaluate_model
    from mmlego.utils.launch import read_config
    teacher = json.load(open(osp.join(ROOT, 'bench/results/teachers.json')))['trn']['checkpoint']
    model = init_lego_model(CONFIG, BANK, device='cpu', checkpoint=teacher)
    cfg = read_config(CONFIG)

    def evaluate(seed):
        loader = Runner.build_dataloader(copy.deepcopy(cfg.val_dataloader))
        evaluator = Evaluator(copy.deepcopy(cfg.val_evaluator))
        evaluator.dataset_meta = getattr(loader.dataset, 'metainfo', None)
        return float(evaluate_model(model, loader, evaluator, seed=seed)['acc/top1'])
    out = {}
    for name, sparsity in (('teacher', 0.0), ('all_0.8', 0.8)):
        model.switch({spec.name: sparsity for spec in model.bank.blocks})
        values = [evaluate(seed) for seed in range(seeds)]
        out[name] = dict(seeds=values, spread=max(values) - min(values), stdev=statistics.stdev(values),
                         same_seed_again=evaluate(0))
        print(name, out[name], flush=True)
    with open(osp.join(ROOT, 'bench/results/trn_eval_noise.json'), 'w') as f:
        json.dump(out, f, indent=1)
    return out


if __name__ == '__main__':
    main()
