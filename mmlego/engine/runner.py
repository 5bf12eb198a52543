"""``mmlego.LegoRunner``: mmengine's Runner with what a legodnn config needs, usable from any package's tools.

Set ``runner_type='mmlego.LegoRunner'`` in a config and every OpenMMLab ``tools/train.py`` / ``tools/test.py``
(mmdet's, mmseg's, mmpose's, mmaction2's, mmlego's) builds it through ``RUNNERS.build(cfg)``. It adds:

- checkpoint loading (``load_from``, ``resume``) with ``torch.load(weights_only=True)`` and exactly the globals an
  mmengine checkpoint needs (:mod:`mmlego.utils.checkpoint`); torch >= 2.6 refuses them otherwise;
- ``{work_dir}`` in ``model.bank``, replaced by the run's work dir, so a config names the bank its own pipeline
  writes (``work_dir/bank``) whatever ``--work-dir`` says;
- ``--resume`` of any package's ``tools/train.py`` continues the LegoDNN pipeline's own stages;
- a teacher check before loading: ``load_from`` of another architecture (missing, unexpected or reshaped keys) is an
  error naming them, not warnings over a partly random teacher.
"""
from __future__ import annotations

import copy
from typing import Any

from mmengine.runner import Runner

from ..registry import RUNNERS
from ..models.legodnn import resolve_bank_placeholder
from ..utils.checkpoint import allow_mmengine_checkpoints, check_teacher_checkpoint



def check_pipeline_cfg(train_cfg: Any) -> None:
    """Refuses unknown keys of an ``mmlego.LegoDNNPipelineLoop`` ``train_cfg`` (and of its ``retrain``), naming the
    valid ones and the closest match, before anything is built (other train loops are left alone).

    Raises:
        ValueError: An unknown (e.g. misspelled) key.
    """
    loop_type = train_cfg.get('type') if isinstance(train_cfg, dict) else None
    name = loop_type if isinstance(loop_type, str) else getattr(loop_type, '__name__', '')
    if name.split('.')[-1] != 'LegoDNNPipelineLoop':
        return
    import dataclasses
    import difflib
    import inspect

    from ..block_retraining import RetrainingConfig
    from .pipeline_loop import LegoDNNPipelineLoop
    valid = [key for key in inspect.signature(LegoDNNPipelineLoop.__init__).parameters
             if key not in ('self', 'runner', 'dataloader')]
    retrain = train_cfg.get('retrain') or {}
    fields = [field.name for field in dataclasses.fields(RetrainingConfig)]
    for where, given, known in (('train_cfg', set(train_cfg) - {'type'}, valid),
                                ('train_cfg.retrain', set(retrain) if isinstance(retrain, dict) else set(), fields)):
        unknown = sorted(set(given) - set(known))
        if unknown:
            close = {key: difflib.get_close_matches(key, known, n=1) for key in unknown}
            hints = ''.join(f'; {key!r}: did you mean {match[0]!r}?' for key, match in close.items() if match)
            raise ValueError(f'{where} has unknown keys {unknown}; the valid keys are {sorted(known)}{hints} (see '
                             'mmlego.LegoDNNPipelineLoop and mmlego.block_retraining.RetrainingConfig)')


def _lego_model(runner):
    from mmengine.model import is_model_wrapper

    from ..models.legodnn import LegoDNN
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    return model if isinstance(model, LegoDNN) else None


def check_runner_teacher(runner) -> None:
    """Refuses a ``load_from`` that does not fit the runner's LegoDNN model (once per runner, before loading)."""
    model = _lego_model(runner)
    if model is None or runner._has_loaded or runner._load_from is None or runner._resume \
            or getattr(runner, '_mmlego_teacher_checked', False):
        return
    check_teacher_checkpoint(model, str(runner._load_from))
    runner._mmlego_teacher_checked = True


def prepare_runner(runner) -> None:
    """Gives a runner built without ``runner_type`` what :class:`LegoRunner` adds (call it before loading).

    mmseg's ``tools/test.py`` and mmpose's tools build ``Runner.from_cfg(cfg)`` whatever ``runner_type`` says;
    ``mmlego.OnlineScalingHook`` calls this in ``before_run``, which mmengine runs before ``load_or_resume``, so
    those tools load mmengine checkpoints, fill in ``{work_dir}`` and check the teacher too.
    """
    model = _lego_model(runner)
    if model is None or isinstance(runner, LegoRunner) or getattr(runner, '_mmlego_prepared', False):
        return
    from ..utils.checkpoint import scope_runner_checkpoint_loading
    runner._mmlego_prepared = True
    model.fill_work_dir(runner.work_dir)
    scope_runner_checkpoint_loading(runner)
    check_runner_teacher(runner)


@RUNNERS.register_module()
class LegoRunner(Runner):
    """:class:`mmengine.runner.Runner` for legodnn configs (see the module docstring); same arguments."""

    @classmethod
    def from_cfg(cls, cfg) -> 'LegoRunner':
        """``Runner.from_cfg``; a pipeline config's ``resume`` continues the pipeline's stages (not a checkpoint).

        Unknown keys of a pipeline ``train_cfg`` are refused first (:func:`check_pipeline_cfg`).

        Every package's ``tools/train.py --resume`` sets ``cfg.resume`` (and with no path ``load_from=None``):
        for the LegoDNN pipeline that means its own resume, from the teacher recorded with its stages.
        """
        import json
        from pathlib import Path
        cfg = copy.deepcopy(cfg)
        train_cfg = cfg.get('train_cfg') or {}
        check_pipeline_cfg(train_cfg)  # a misspelled key fails here, not after the model and data are built
        if cfg.get('resume') and str(train_cfg.get('type', '')).split('.')[-1] == 'LegoDNNPipelineLoop':
            cfg.train_cfg['resume'], cfg['resume'] = True, False
            saved = Path(cfg['work_dir']) / 'legodnn' / 'pipeline.json'
            if not cfg.get('load_from') and saved.is_file():
                cfg['load_from'] = json.loads(saved.read_text()).get('settings', {}).get('load_from')
        return super().from_cfg(cfg)

    def __init__(self, *args, **kwargs) -> None:
        if 'model' in kwargs and 'work_dir' in kwargs:  # from_cfg passes keywords
            kwargs['model'] = resolve_bank_placeholder(kwargs['model'], kwargs['work_dir'])
        super().__init__(*args, **kwargs)

    def load_checkpoint(self, filename: str, *args, **kwargs):
        """``Runner.load_checkpoint`` with mmengine checkpoints allowed under ``weights_only=True``."""
        with allow_mmengine_checkpoints():
            return super().load_checkpoint(filename, *args, **kwargs)

    def load_or_resume(self) -> None:
        """Checks that ``load_from`` fits the architecture of a LegoDNN model, then loads as mmengine does."""
        check_runner_teacher(self)
        super().load_or_resume()
