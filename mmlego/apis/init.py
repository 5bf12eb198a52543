"""mm-style model building and scaling: ``init_lego_model`` (like mmdet's ``init_detector``) and ``scale_model``.

``init_lego_model`` builds a scalable model from any OpenMMLab config (a plain task config is wrapped in
``mmlego.LegoDNN``), loads the teacher and attaches a bank; ``scale_model`` chooses the descendants for a budget and
switches them in.
"""
from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from mmengine.logging import print_log
from mmengine.config import Config, ConfigDict
from mmengine.registry import init_default_scope

from ..block_bank.bank import MANIFEST, BankError
from ..models.legodnn import LegoDNN, resolve_bank_placeholder
from ..utils.checkpoint import load_checkpoint
from ..utils.launch import read_config



__all__ = ['init_lego_model', 'scale_model', 'scale_models', 'TASK_FAMILIES']

# OpenMMLab package (root module / scope of the architecture) -> task family.
TASK_FAMILIES = {'mmdet': 'det', 'mmseg': 'seg', 'mmpose': 'pose', 'mmaction': 'action'}


# -- init ---------------------------------------------------------------------------------------------------------
def _is_lego_type(model_type: Any) -> bool:
    return isinstance(model_type, str) and model_type.split('.')[-1] == 'LegoDNN'


def _is_bank_dir(path: str | os.PathLike) -> bool:
    return Path(path).is_dir()


def _dataset_meta_from_config(cfg: Config) -> dict | None:
    """The test (else val) dataset's metainfo as the dataset class itself resolves it, without loading data."""
    from mmengine.registry import DATASETS
    for split in ('test_dataloader', 'val_dataloader'):
        dataset = (cfg.get(split) or {}).get('dataset')
        while isinstance(dataset, dict) and 'metainfo' not in dataset and isinstance(dataset.get('dataset'), dict):
            dataset = dataset['dataset']  # dataset wrappers (RepeatDataset, ClassBalancedDataset, ...)
        if not isinstance(dataset, dict) or 'type' not in dataset:
            continue
        try:
            with DATASETS.switch_scope_and_registry(cfg.get('default_scope')) as registry:
                dataset_cls = registry.get(dataset['type'])
            if dataset_cls is None or not hasattr(dataset_cls, '_load_metainfo'):
                continue
            metainfo = dataset.get('metainfo')
            metainfo = copy.deepcopy(metainfo.to_dict() if isinstance(metainfo, ConfigDict) else metainfo)
            meta = dataset_cls._load_metainfo(metainfo)
        except Exception as error:  # metainfo is a convenience for visualizers, never a reason to fail
            print_log(f'could not read the dataset metainfo of {split} ({type(error).__name__}: {error})',
                      logger='current', level=logging.WARNING)
            continue
        if meta:
            return dict(meta)
    return None


def _work_dir(cfg: Config) -> str:
    """The config's work dir, or tools/train.py's default for it (``./work_dirs/<config name>``)."""
    if cfg.get('work_dir'):
        return str(cfg.work_dir)
    name = Path(cfg.filename).stem if cfg.filename else 'legodnn'
    return os.path.join('./work_dirs', name)


def _teacher_candidates(cfg: Config, checkpoint: str | None, bank_dir: str | None) -> list[tuple[str, str]]:
    """Where the teacher weights may come from, in order: the checkpoint argument, ``load_from``, the bank."""
    if checkpoint:
        return [('checkpoint argument', str(checkpoint))]
    candidates = []
    if cfg.get('load_from'):
        candidates.append(('config load_from', str(cfg.load_from)))
    if bank_dir is not None:
        try:
            meta = json.loads((Path(bank_dir) / MANIFEST).read_text()).get('meta') or {}
        except (OSError, ValueError, AttributeError):
            meta = {}
        if meta.get('teacher_checkpoint'):
            candidates.append(("the bank's recorded teacher_checkpoint", str(meta['teacher_checkpoint'])))
    return candidates


def init_lego_model(config: str | os.PathLike | Config, bank_or_checkpoint: str | os.PathLike | None = None,
                    device: str | torch.device = 'cpu', cfg_options: dict | None = None,
                    checkpoint: str | os.PathLike | None = None) -> LegoDNN:
    """Builds a :class:`~mmlego.models.LegoDNN` from a config, loads the teacher weights and attaches a bank.

    Args:
        config: A config path or :class:`~mmengine.config.Config`. Its ``model`` is either ``mmlego.LegoDNN``
            (a legodnn config) or any OpenMMLab task model, which is then wrapped automatically.
        bank_or_checkpoint: A block bank directory (attached after the teacher weights are loaded) or a
            checkpoint file (teacher weights, or a checkpoint of the LegoDNN model). None: the config's
            ``model.bank``, if any, is attached.
        device: Where the model and the bank live.
        cfg_options: Overrides merged into the config (as ``--cfg-options`` does).
        checkpoint: The teacher checkpoint when ``bank_or_checkpoint`` is a bank. Default: the config's
            ``load_from``, else the ``teacher_checkpoint`` the bank recorded.

    Returns:
        The model in eval mode, with ``model.cfg`` (the config) and ``model.dataset_meta`` (the test dataset's
        metainfo, e.g. class names, for visualizers) set.

    Raises:
        BankError: The bank is not a bank, is corrupted, or was built from another teacher.
        FileNotFoundError: The config or a checkpoint path (argument, ``load_from`` or the bank's) does not exist.
        ValueError: A bank is given but no teacher weights are.
    """
    import mmlego  # noqa: F401  (the mmlego scope: mmlego.LegoDNN is found through the registry's locations)
    if isinstance(config, (str, os.PathLike)):
        cfg = read_config(config)
    elif isinstance(config, Config):
        cfg = copy.deepcopy(config)
    else:
        raise TypeError(f'config must be a filename or an mmengine Config, got {type(config).__name__}')
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if 'model' not in cfg:
        raise ValueError('the config has no "model"; pass an OpenMMLab task config or a legodnn config')
    if not _is_lego_type(cfg.model.get('type')):  # a plain task config: wrap its model
        cfg.model = ConfigDict(type='mmlego.LegoDNN', architecture=cfg.model)
    cfg.model = resolve_bank_placeholder(cfg.model, _work_dir(cfg))

    bank_dir = checkpoint_arg = None
    if bank_or_checkpoint is not None:
        if not os.path.exists(bank_or_checkpoint):
            raise FileNotFoundError(f'{bank_or_checkpoint} does not exist: pass a block bank directory (with '
                                    f'{MANIFEST}) or a checkpoint file')
        if _is_bank_dir(bank_or_checkpoint):
            bank_dir = str(bank_or_checkpoint)
            if not (Path(bank_dir) / MANIFEST).exists():
                raise BankError(f'{bank_dir} has no {MANIFEST}: not a block bank directory (build one with '
                                'tools/train.py on the legodnn config)')
        else:
            checkpoint_arg = str(bank_or_checkpoint)
    if checkpoint is not None:
        if checkpoint_arg is not None:
            raise ValueError('two checkpoints given (bank_or_checkpoint and checkpoint); pass a bank directory as '
                             'bank_or_checkpoint, or only one checkpoint')
        checkpoint_arg = str(checkpoint)

    candidates = _teacher_candidates(cfg, checkpoint_arg, bank_dir)
    teacher = next((path for _, path in candidates if os.path.isfile(path)), None)
    if teacher is None and candidates:
        tried = '; '.join(f'{what}: {path}' for what, path in candidates)
        raise FileNotFoundError(f'no teacher checkpoint found ({tried} do not exist); pass checkpoint=... (demo: '
                                '--checkpoint) or set load_from (--cfg-options load_from=...)')
    configured_bank = cfg.model.get('bank') and (Path(cfg.model.bank) / MANIFEST).is_file()
    if teacher is None and (bank_dir is not None or configured_bank):
        raise ValueError('a bank needs the weights of the teacher it was built from, but the config has no '
                         'load_from and no checkpoint was given; pass checkpoint=... or set load_from')

    init_default_scope(cfg.get('default_scope', 'mmengine'))
    from mmengine.registry import MODELS
    model = MODELS.build(cfg.model)
    if not isinstance(model, LegoDNN):
        raise TypeError(f'cfg.model built a {type(model).__name__}, not an mmlego.LegoDNN')
    checkpoint_meta: dict = {}
    if teacher is None:
        print_log('no checkpoint given and the config has no load_from: the model keeps its initial weights',
                  logger='current', level=logging.WARNING)
    else:
        loaded = load_checkpoint(model, teacher, map_location='cpu')
        checkpoint_meta = (loaded.get('meta') or {}) if isinstance(loaded, dict) else {}
    model.to(device)
    model.eval()
    model.cfg = cfg
    model.dataset_meta = _dataset_meta_from_config(cfg) or checkpoint_meta.get('dataset_meta')
    model.architecture.dataset_meta = model.dataset_meta

    if bank_dir is not None:
        try:
            model.attach_bank(bank_dir)
        except BankError as error:
            raise BankError(f'cannot use bank {bank_dir} with teacher weights {teacher}: {error}') from error
    elif cfg.model.get('bank') and not configured_bank:
        print_log(f'model.bank {cfg.model.bank} holds no block bank yet (build it with tools/train.py on the '
                  'legodnn config, or pass the bank directory): the model runs the teacher', logger='current',
                  level=logging.WARNING)
    else:
        model.load_configured_bank()
    return model


# -- scaling ------------------------------------------------------------------------------------------------------
def _require_lego(model: Any) -> LegoDNN:
    if not isinstance(model, LegoDNN):
        raise TypeError(f'expected an mmlego.LegoDNN model (build it with mmlego.apis.init_lego_model), got '
                        f'{type(model).__name__}')
    return model


def scale_model(model: LegoDNN, latency_ms: float | None = None, memory_mb: float | None = None,
                solver: str = 'exact') -> dict[str, Any]:
    """Chooses the descendants that maximise the estimated metric within the budget and switches them in.

    Args:
        model: A model from :func:`init_lego_model` with a bank.
        latency_ms: Latency budget in ms (None: unconstrained).
        memory_mb: Memory budget in MiB (None: unconstrained).
        solver: The scaling optimizer's solver: ``'exact'`` (default), ``'pulp'``
            (LegoDNN's ILP through CBC) or ``'brute_force'``.

    Returns:
        ``selection`` (block -> sparsity now running), ``status`` (``'optimal'``, ``'feasible'`` or
        ``'infeasible'``: the budget is below the smallest configuration, which then runs), the estimates
        ``metric``, ``latency_ms``, ``memory_mb`` of the chosen configuration, the teacher's ``metric_name``,
        ``teacher_metric``, ``teacher_latency_ms`` and ``teacher_memory_mb``, and the optimizer's ``result``.

    Raises:
        RuntimeError: The model has no bank.
        ValueError: A negative or non-numeric budget, or a bank that is not fully profiled.
    """
    model = _require_lego(model)
    result = model.scale(latency_ms=latency_ms, memory_mb=memory_mb, solver=solver)
    name = next(iter(result.choices))
    profiles = model.bank.profiles
    return dict(
        selection=dict(model.selection), status=result.status,
        metric=result.estimated_metric[name], latency_ms=result.latency_ms[name],
        memory_mb=result.memory_bytes[name] / 2 ** 20,
        metric_name=profiles.metric_name, teacher_metric=profiles.teacher_metric,
        teacher_latency_ms=model.estimate({spec.name: 0.0 for spec in model.bank.blocks})['latency_ms']
        if profiles.model_latency_ms is not None else None,
        teacher_memory_mb=profiles.model_memory_bytes / 2 ** 20 if profiles.model_memory_bytes is not None else None,
        result=result)


def scale_models(models, latency_ms: float | str | None = None, memory_mb: float | str | None = None,
                 weights: dict[str, float] | None = None, solver: str = 'exact',
                 on_infeasible: str = 'error') -> dict[str, Any]:
    """Scales several models jointly under one shared budget (their latencies and memories add up).

    Args:
        models: ``name -> LegoDNN`` (or a list, named by their config files), or a
            :class:`~mmlego.runtime.MultiModelRuntime` (kept, so later budgets switch only what changed).
        latency_ms: Limit on the summed latency (ms, ``'30ms'``, ``'60%'`` of the teachers' total, or None).
        memory_mb: Limit on the summed weight memory (MB, ``'20MB'``, ``'60%'``, or None).
        weights: ``name -> weight`` of its metric drop (default ``1 / teacher_metric``: metrics relative to each
            teacher, comparable across tasks).
        solver: ``'exact'`` (default), ``'pulp'`` or ``'brute_force'``.
        on_infeasible: ``'error'`` (default) or ``'smallest'`` (run the smallest joint configuration).

    Returns:
        :meth:`MultiModelRuntime.summary`: ``status``, per model ``models[name]`` (``selection``, ``metric``,
        ``relative_metric``, ``latency_ms``, ``memory_mb``, ``changed_blocks``), the totals ``latency_ms`` and
        ``memory_mb``, ``result`` (the optimizer's) and ``runtime`` (to scale again).

    Raises:
        InfeasibleBudgetError: The budget is below the smallest joint configuration (named), nothing switched.
        ValueError: Models sharing a name, a bad weight or a limit that is not one.
    """
    from ..runtime import MultiModelRuntime
    if isinstance(models, MultiModelRuntime):
        runtime = models
        if weights is not None or solver != runtime.solver:
            runtime = MultiModelRuntime(runtime.models, weights=weights or runtime.weights, solver=solver)
    else:
        runtime = MultiModelRuntime(models, weights=weights, solver=solver)
    result = runtime.scale(latency_ms=latency_ms, memory_mb=memory_mb, on_infeasible=on_infeasible)
    return dict(runtime.summary(result), runtime=runtime)
