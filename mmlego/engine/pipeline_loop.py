"""``mmlego.LegoDNNPipelineLoop``: the offline LegoDNN pipeline as the train loop of a legodnn config.

Stages, each saved under ``work_dir`` before the next starts (``--resume`` continues at the stage and epoch where
a run stopped): blocks + descendants -> block retraining over the config's train dataloader -> accuracy profiling
with the config's val dataloader and evaluator -> memory / FLOPs / latency profiling -> ``work_dir/bank``.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Sequence

import torch
import torch.distributed as dist
from mmengine.model import is_model_wrapper
from mmengine.runner import BaseLoop, set_random_seed

from ..block_bank import BlockBank
from ..block_retraining import RetrainingConfig, retrain_descendants
from ..block_retraining.state import completed_epochs
from ..descendant_generation import DEFAULT_SPARSITIES, check_sparsities
from ..models.tensor_path import TENSOR_PATHS, batch_forward, example_batch, task_loss, trace_tensor_path
from ..profiling import DEFAULT_REFERENCES, intra_op_threads, profile_accuracy, profile_costs, profile_model
from ..profiling.latency import DEFAULT_MIN_SECONDS, check_min_seconds
from ..profiling.accuracy import reference_sparsity
from ..registry import LOOPS
from ..utils.atomic_io import atomic_write_json, read_json
from ..utils.checkpoint import check_teacher_checkpoint
from .task_metrics import evaluate_model, pick_metric, reported_metric

STAGES = ('descendants', 'retrained', 'accuracy', 'done')


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _average_gradients(module: torch.nn.Module) -> None:
    """Data-parallel retraining: every rank applies the mean gradient."""
    for param in module.parameters():
        if param.grad is not None:
            dist.all_reduce(param.grad)
            param.grad /= _world_size()


def _average_losses(losses: dict[str, float]) -> dict[str, float]:
    """Held-out losses averaged over ranks, so that every rank keeps the same best epoch."""
    keys = sorted(losses)
    values = torch.tensor([losses[key] for key in keys], dtype=torch.float64)
    dist.all_reduce(values)
    return {key: float(value) / _world_size() for key, value in zip(keys, values)}


class EpochView:
    """Epochs of ``length`` batches drawn from one persistent iterator over ``loader``.

    Iteration-based configs (mmseg) train with an infinite sampler, whose loader cannot be re-iterated per epoch;
    a finite loader is simply restarted when it runs out. ``skip_epochs`` draws (and drops) the batches of epochs a
    resumed run already trained, so it sees the batches an uninterrupted run would (their loading is repeated, not
    their training).
    """

    def __init__(self, loader, length: int, skip_epochs: int = 0) -> None:
        self.loader, self.length, self._iterator = loader, length, None
        self._skip = skip_epochs

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        for _ in range(self._skip):
            for _ in self._draw():
                pass
        self._skip = 0
        yield from self._draw()

    def _draw(self):
        for _ in range(self.length):
            if self._iterator is None:
                self._iterator = iter(self.loader)
            try:
                yield next(self._iterator)
            except StopIteration:
                self._iterator = iter(self.loader)
                yield next(self._iterator)


@LOOPS.register_module()
class LegoDNNPipelineLoop(BaseLoop):
    """Runs LegoDNN's offline stages on the teacher loaded from ``load_from``.

    Args:
        runner: The runner.
        dataloader: The train dataloader (config dict or loader): block retraining data.
        sparsities: Descendant sparsities, starting with 0.0.
        max_ratio: Block size limit (``max(2, floor(max_ratio x #convs))`` convs).
        retrain: :class:`~mmlego.block_retraining.RetrainingConfig` fields (epochs, lr, loss, ...).
        heldout_batches: Val batches whose block-output loss picks each descendant's best epoch.
        references: Reference composites of accuracy profiling (LegoDNN: teacher, middle, max).
        max_val_batches: Limit accuracy-profiling evaluations to this many val batches (None: the whole set).
        metric: The evaluator metric to maximize (default: the task family's usual one).
        latency_repeats: Timed runs per latency measurement (median).
        latency_min_seconds: Latency profiling visits its composites for at least this long (more rounds for a
            model of a few milliseconds, so the profile spans the machine's speed phases; 0: 4 rounds).
        resume: Continue the stages saved in ``work_dir`` (``tools/train.py --resume`` sets it). Refused when the
            settings above (or ``load_from``) changed since the saved stages were made.
        overwrite: Start over even though ``work_dir/legodnn`` holds an earlier run (deleted then). Without it and
            without ``resume`` an earlier run is an error, never silently deleted.
    """

    def __init__(self, runner, dataloader, sparsities: Sequence[float] = DEFAULT_SPARSITIES,
                 max_ratio: float = 0.125, retrain: dict | None = None, heldout_batches: int = 4,
                 references: Sequence[str] = DEFAULT_REFERENCES, max_val_batches: int | None = None,
                 metric: str | None = None, latency_repeats: int = 20,
                 latency_min_seconds: float = DEFAULT_MIN_SECONDS, resume: bool = False,
                 overwrite: bool = False) -> None:
        super().__init__(runner, dataloader)
        self.sparsities = [float(s) for s in check_sparsities(sparsities)]
        if isinstance(max_ratio, bool) or not isinstance(max_ratio, (int, float)) or not 0 < max_ratio <= 1:
            raise ValueError(f'max_ratio must be a number in (0, 1] (the largest block as a share of the convs), '
                             f'got {max_ratio!r}')
        for reference in references:
            reference_sparsity(reference, self.sparsities)  # a clear ValueError for an unknown reference
        if metric is not None and not isinstance(metric, str):
            raise ValueError(f'metric must be the name of an evaluator metric (e.g. "coco/bbox_mAP") or None, got '
                             f'{metric!r}')
        self.overwrite = overwrite
        self.max_ratio = max_ratio
        fields = {field.name for field in dataclasses.fields(RetrainingConfig)}
        unknown = sorted(set(retrain or {}) - fields)
        if unknown:
            raise ValueError(f'train_cfg.retrain has unknown keys {unknown}; the valid keys are {sorted(fields)}')
        self.retrain = RetrainingConfig(**(retrain or {}))
        if self.retrain.max_batches_per_epoch is None:  # an epoch of an infinite sampler: one pass of its length
            self.retrain.max_batches_per_epoch = len(self.dataloader)
        self.heldout_batches = heldout_batches
        self.references = tuple(references)
        self.max_val_batches = max_val_batches
        self.metric = metric
        self.latency_repeats = latency_repeats
        check_min_seconds(latency_min_seconds, 'latency_min_seconds')  # before minutes of retraining, not after
        self.latency_min_seconds = float(latency_min_seconds)
        self.resume = resume
        self.lego_dir = Path(runner.work_dir) / 'legodnn'
        self.bank_dir = Path(runner.work_dir) / 'bank'
        self._epoch = 0
        self._iter = 0

    @property
    def max_epochs(self) -> int:
        """Retraining epochs (mmengine's schedulers and hooks read it)."""
        return self.retrain.epochs

    @property
    def max_iters(self) -> int:
        """Retraining iterations."""
        return self.retrain.epochs * len(self.dataloader)

    @property
    def epoch(self) -> int:
        """Completed retraining epochs."""
        return self._epoch

    @property
    def iter(self) -> int:
        """Completed retraining iterations (counted per epoch)."""
        return self._iter

    # -- helpers ---------------------------------------------------------------------------------------------
    @property
    def wrapper(self):
        model = self.runner.model
        return model.module if is_model_wrapper(model) else model

    def settings(self) -> dict:
        """What the saved stages depend on; ``--resume`` refuses to continue when any of it changed."""
        return dict(load_from=str(self.runner.cfg.get('load_from')), sparsities=self.sparsities,
                    max_ratio=self.max_ratio, retrain=self.retrain.recorded(),
                    heldout_batches=self.heldout_batches, references=[str(r) for r in self.references],
                    max_val_batches=self.max_val_batches, metric=self.metric)

    def _saved(self) -> dict | None:
        path = self.lego_dir / 'pipeline.json'
        if not path.exists():
            return None
        try:
            saved = read_json(path, '')
        except ValueError:
            saved = None
        if not isinstance(saved, dict) or saved.get('stage') not in STAGES:
            raise RuntimeError(f'{path} (the LegoDNN stage record) is corrupted; start over with --cfg-options '
                               'train_cfg.overwrite=True or another --work-dir') from None
        return saved

    def _check_earlier_run(self) -> str | None:
        """The stage to resume after (None: start); refuses to delete or silently continue an earlier run."""
        saved = self._saved()
        if saved is None or self.overwrite:
            return None
        if not self.resume:
            raise RuntimeError(
                f'{self.lego_dir} holds an earlier LegoDNN run (after stage "{saved["stage"]}"); pass --resume to '
                'continue it, --cfg-options train_cfg.overwrite=True to delete it and start over, or another '
                '--work-dir')
        old = saved.get('settings')
        if old is not None:
            new = json.loads(json.dumps(self.settings()))
            changed = [f'{key}: {old.get(key)!r} -> {new.get(key)!r}' for key in sorted(set(old) | set(new))
                       if old.get(key) != new.get(key)]
            if changed:
                raise RuntimeError(
                    f'cannot resume the LegoDNN run in {self.lego_dir}: its settings changed ({"; ".join(changed)}); '
                    'restore them, or start over with --cfg-options train_cfg.overwrite=True or another --work-dir')
        return saved['stage']

    def _finish_stage(self, stage: str, bank: BlockBank) -> None:
        if _rank() == 0:
            bank.save(self.lego_dir / 'bank')
            atomic_write_json(self.lego_dir / 'pipeline.json', dict(stage=stage, settings=self.settings()))
        if _world_size() > 1:
            dist.barrier()
        self.runner.logger.info(f'LegoDNN stage "{stage}" done, saved in {self.lego_dir}')

    def _val_tools(self):
        loader = self.runner.build_dataloader(self.runner._val_dataloader)
        evaluator = self.runner.build_evaluator(self.runner._val_evaluator)
        if hasattr(loader.dataset, 'metainfo'):
            evaluator.dataset_meta = loader.dataset.metainfo
        return loader, evaluator

    def _check_metric(self, val_loader, evaluator) -> None:
        """One val batch through the teacher: a metric the evaluator does not report fails now, not after hours."""
        try:
            pick_metric(evaluate_model(self.wrapper, val_loader, evaluator, max_batches=1), self.metric)
        except KeyError as error:
            raise ValueError(f'train_cfg.metric: {error.args[0]}') from None

    # -- the pipeline ----------------------------------------------------------------------------------------
    def run(self) -> torch.nn.Module:
        """Runs (or resumes) every stage and attaches the finished bank to the model."""
        runner, wrapper = self.runner, self.wrapper
        if not runner.cfg.get('load_from'):
            raise ValueError('the LegoDNN pipeline needs the trained teacher: set load_from=<teacher checkpoint> '
                             'in the config or pass --cfg-options load_from=...')
        if not getattr(runner, '_mmlego_teacher_checked', False):  # LegoRunner / the hook checked it before loading
            check_teacher_checkpoint(wrapper, str(runner.cfg.load_from))
        teacher = wrapper.architecture
        teacher.eval()
        stage = self._check_earlier_run()
        val_loader, evaluator = self._val_tools()
        if stage is None:
            self._check_metric(val_loader, evaluator)
        runner.call_hook('before_train')
        if stage is None and self.lego_dir.exists() and _rank() == 0:
            shutil.rmtree(self.lego_dir)  # overwrite=True (an earlier run is refused otherwise)
        if _world_size() > 1:
            dist.barrier()
        if stage is None:
            example = example_batch(runner.cfg, teacher, batch_size=1).to(next(teacher.parameters()).device)
            path, graph = trace_tensor_path(teacher, example, wrapper.tensor_path)
            bank = BlockBank.build(teacher, (example,), self.sparsities, self.max_ratio, TENSOR_PATHS[path],
                                   show_progress=_rank() == 0, graph=graph)
            bank.meta.update(tensor_path=path, config=Path(runner.cfg.filename).name if runner.cfg.filename else None,
                             teacher_checkpoint=str(runner.cfg.load_from))
            runner.logger.info(f'{len(bank.blocks)} blocks ({bank.extraction.num_convs_covered}/'
                               f'{bank.extraction.num_convs_total} convs) on the {path} path')
            self._finish_stage('descendants', bank)
            stage = 'descendants'
        else:
            bank = BlockBank.load(self.lego_dir / 'bank', teacher)
            runner.logger.info(f'resuming the LegoDNN pipeline after stage "{stage}"')
        path = bank.meta['tensor_path']

        if STAGES.index(stage) < STAGES.index('retrained'):
            # Reseeded from the run's seed: a resumed run retrains from the random state an uninterrupted one had
            # (the stages before consume random numbers too), and skips the batches of the epochs it saved.
            set_random_seed(runner.seed)  # runner.seed is per rank already with randomness.diff_rank_seed
            heldout = [batch for _, batch in zip(range(self.heldout_batches), val_loader)]
            state_dir = self.lego_dir / 'retraining'
            batches = EpochView(self.dataloader, self.retrain.max_batches_per_epoch, completed_epochs(state_dir))
            report = retrain_descendants(teacher, bank.descendants, batches, heldout or None,
                                teacher_forward=batch_forward(path), config=self.retrain,
                                state_dir=str(state_dir),
                                grad_sync=_average_gradients if _world_size() > 1 else None,
                                loss_sync=_average_losses if _world_size() > 1 else None,
                                show_progress=_rank() == 0, task_loss=task_loss)
            self._epoch = self.retrain.epochs
            for record in report.history:
                train, val = record['train'].values(), record['val'].values()
                through = record.get('through_train')
                if train and val:
                    runner.visualizer.add_scalars({'retrain/mean_train_loss': sum(train) / len(train),
                                                   'retrain/mean_heldout_loss': sum(val) / len(val),
                                                   **({} if through is None else {'retrain/through_loss': through})},
                                                  step=int(record['epoch']))
                runner.logger.info(f'block retraining epoch {record["epoch"]}/{self.retrain.epochs}: mean train '
                                   f'loss {sum(train) / len(train):.5g}, mean held-out loss {sum(val) / len(val):.5g} '
                                   f'over {len(train)} descendants'
                                   + ('' if through is None else f', {self.retrain.through_model} loss through the '
                                      f'model {through:.5g}'))
            self._finish_stage('retrained', bank)
            stage = 'retrained'

        if STAGES.index(stage) < STAGES.index('accuracy'):
            metric_key: dict[str, str] = {}

            def evaluate(_model) -> float:
                metrics = evaluate_model(wrapper, val_loader, evaluator, self.max_val_batches)
                if 'key' not in metric_key:  # the teacher's evaluation, first: it names the metric
                    metric_key['key'] = pick_metric(metrics, self.metric)
                return reported_metric(metrics, metric_key['key'])  # 0 for a composite that predicts nothing

            profile_accuracy(bank, teacher, evaluate, self.references,
                             cache_file=self.lego_dir / 'accuracy_cache.json', show_progress=_rank() == 0)
            bank.profiles.metric_name = metric_key.get('key')
            self._finish_stage('accuracy', bank)
            stage = 'accuracy'

        if STAGES.index(stage) < STAGES.index('done'):
            example = example_batch(runner.cfg, teacher, batch_size=1).to(next(teacher.parameters()).device)
            profile_costs(bank, show_progress=_rank() == 0)
            with intra_op_threads(wrapper.latency_threads):  # the thread count the model will be served with
                check = profile_model(bank, teacher, (example,), TENSOR_PATHS[path], repeats=self.latency_repeats,
                                      show_progress=_rank() == 0, min_seconds=self.latency_min_seconds)
            runner.logger.info('in-model latency: teacher {:.2f} ms; frame + blocks vs measured composites: {}'.format(
                bank.profiles.model_latency_ms, ', '.join(f's={key}: {error:+.1%}' for key, error in check.items())))
            self._finish_stage('done', bank)
        if _rank() == 0:
            bank.save(self.bank_dir)
        if _world_size() > 1:
            dist.barrier()
        wrapper.attach_bank(BlockBank.load(self.bank_dir, teacher))
        runner.logger.info(f'block bank written to {self.bank_dir}: {len(bank.blocks)} blocks x '
                           f'{len(bank.sparsities)} sparsities, teacher {bank.profiles.metric_name} = '
                           f'{bank.profiles.teacher_metric}')
        runner.call_hook('after_train')
        return wrapper
