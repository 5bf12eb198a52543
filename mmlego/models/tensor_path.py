"""The tensor path of an OpenMMLab 2.x model: what block extraction traces and retraining runs.

Every OpenMMLab 2.x model has ``forward(inputs, data_samples=None, mode='tensor')``. Where that path needs data
samples (two-stage detectors: their RPN proposes boxes for the image shapes the samples carry), the path is
``mode='tensor'`` with samples that carry each image's shape (:func:`tensor_with_samples`): ``extract_feat`` is
traced and the RoI head, run on the proposals, is traced module by module
(:mod:`mmlego.block_extraction.off_path`). ``extract_feat(inputs)`` alone is the last resort. The choice is made
by trying the paths in that order, the same way for every model: no per-model code.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import torch
from mmengine.logging import print_log
from mmengine.config import Config, ConfigDict
from torch import nn

from ..block_extraction import ModelGraph, trace_model


def contiguous_inputs(inputs: Any) -> Any:
    """A tensor batch in the standard contiguous (NCHW) layout; anything else as given.

    mmaction's clip pipelines hand over a permuted HWC view (strides of channels-last), and a convolution keeps its
    input's layout, so the whole network then runs channels-last: on the CPU the synthetic TSN took 35 ms per
    forward that way and 17 ms contiguous (``bench/latency_fidelity.py``, 2026-12-05). Every path that times or
    serves the model (profiling, the latency measurements, ``LegoDNN.forward``) feeds this layout, so the profiled
    latency is the served one.
    """
    if isinstance(inputs, torch.Tensor) and not inputs.is_contiguous():
        return inputs.contiguous()
    return inputs


def tensor_mode(model: nn.Module, inputs: torch.Tensor, data_samples: Any = None) -> Any:
    """``model(inputs, None, mode='tensor')``, run to the class scores where a recognizer stops short of them
    (``data_samples`` unused: this path runs without them).

    mmaction's recognizers end ``mode='tensor'`` at the backbone's features (``stage='backbone'``): the head, e.g.
    TRN's relation MLPs (30% of its bytes), would stay outside every block, and the backbone's last stage would
    count as the path's output. Their ``stage='head'`` runs the head to the class scores.
    """
    if _has_head_stage(type(model)) and getattr(model, 'with_cls_head', False):
        return model(inputs, None, mode='tensor', stage='head')
    return model(inputs, None, mode='tensor')


@functools.lru_cache(maxsize=None)
def _has_head_stage(model_type: type) -> bool:
    forward = getattr(model_type, '_forward', None)
    try:
        return forward is not None and 'stage' in inspect.signature(forward).parameters
    except (TypeError, ValueError):  # a builtin or otherwise unintrospectable forward
        return False


def extract_feat(model: nn.Module, inputs: torch.Tensor, data_samples: Any = None) -> Any:
    """``model.extract_feat(inputs)`` (``data_samples`` unused)."""
    return model.extract_feat(inputs)


def image_samples(inputs: torch.Tensor) -> list:
    """One data sample per image of a batch, carrying only its shape (the batch's: inputs are padded to it) at
    scale 1: what a two-stage detector's RPN needs to propose boxes, for inputs that come without samples."""
    from mmengine.structures import BaseDataElement
    shape = tuple(int(size) for size in inputs.shape[-2:])
    meta = dict(img_shape=shape, ori_shape=shape, pad_shape=shape, batch_input_shape=shape, scale_factor=(1.0, 1.0))
    return [BaseDataElement(metainfo=meta) for _ in range(inputs.shape[0])]


def tensor_with_samples(model: nn.Module, inputs: torch.Tensor, data_samples: Any = None) -> Any:
    """``model(inputs, samples, mode='tensor')``: a two-stage detector's network forward, the RPN's proposals (NMS
    included) and the RoI head on them, without the final box decoding. ``data_samples``: the batch's own where it
    has them (their image shapes clip the proposals to each image, not to the padded batch); else
    :func:`image_samples`. Its traceable part is ``extract_feat``; the RoI head's modules are traced alone
    (:mod:`mmlego.block_extraction.off_path`)."""
    return model(inputs, image_samples(inputs) if data_samples is None else data_samples, mode='tensor')


tensor_with_samples.traced_part = extract_feat  # what torch.export traces of this path


def task_loss(model: nn.Module, batch: Any) -> torch.Tensor:
    """The model's own training loss on a data batch (``mode='loss'``, summed by ``parse_losses``): what
    ``train_cfg.retrain.through_model='task'`` trains descendants with, through the rest of the model."""
    data = model.data_preprocessor(batch, True)
    total, _ = model.parse_losses(model(**data, mode='loss'))
    return total


#: Path name -> ``forward(model, inputs, data_samples=None)``; a path that does not need samples ignores them.
TENSOR_PATHS: dict[str, Callable[..., Any]] = {
    'tensor': tensor_mode, 'tensor_with_samples': tensor_with_samples, 'extract_feat': extract_feat}


def batch_forward(path: str) -> Callable[[nn.Module, Any], Any]:
    """``forward(model, batch)``: the path on a data batch, preprocessed by the model, the batch's samples passed on
    (on ``tensor_with_samples`` their image shapes clip the proposals as in serving: padding is no region of
    interest). What retraining's teacher and composite forwards run."""
    path_fn = TENSOR_PATHS[path]

    def forward(model: nn.Module, batch: Any) -> Any:
        data = model.data_preprocessor(batch, False)
        return path_fn(model, data['inputs'], data.get('data_samples'))
    return forward


def trace_tensor_path(model: nn.Module, inputs: torch.Tensor,
                      path: str | None = None) -> tuple[str, ModelGraph]:
    """Traces the model's tensor path: ``mode='tensor'`` if it traces, else ``tensor_with_samples`` if it runs,
    else ``extract_feat``.

    Args:
        model: An OpenMMLab model in eval mode.
        inputs: A preprocessed batch (``data_preprocessor(batch)['inputs']``).
        path: Force one of :data:`TENSOR_PATHS`.

    Returns:
        The name of the traced path and its graph.
    """
    names = [path] if path else list(TENSOR_PATHS)
    errors = []
    for name in names:
        if name not in TENSOR_PATHS:
            raise ValueError(f'unknown tensor path {name!r}; choose one of {list(TENSOR_PATHS)}')
        if name in ('extract_feat', 'tensor_with_samples') and not hasattr(model, 'extract_feat'):
            errors.append(f'{name}: the model has no extract_feat')
            continue
        try:
            return name, trace_model(model, (inputs,), TENSOR_PATHS[name])
        except RuntimeError as error:
            print_log(f'tensor path {name} does not trace: {error}', logger='current')
            errors.append(f'{name}: {error}')
    raise RuntimeError('no tensor path of the model could be traced:\n  ' + '\n  '.join(errors))


def build_model(cfg: Config, checkpoint: str | None = None, device: str | torch.device = 'cpu') -> nn.Module:
    """Builds the teacher of ``cfg`` in its default scope, loads a checkpoint (weights only), eval mode.

    ``cfg.model`` of a task config is the teacher; of a legodnn config, its ``architecture`` (so tools take either).
    """
    from mmengine.registry import MODELS, init_default_scope

    from ..utils.checkpoint import load_checkpoint
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    model_cfg = cfg.model
    if str(model_cfg.get('type', '')).split('.')[-1] == 'LegoDNN':
        model_cfg = model_cfg['architecture']
    model = MODELS.build(model_cfg)
    if checkpoint:
        load_checkpoint(model, checkpoint)
    model.to(device)
    model.eval()
    return model


def example_batch(cfg: Config, model: nn.Module, batch_size: int = 1, split: str = 'val') -> torch.Tensor:
    """One preprocessed batch of the config's ``{split}_dataloader`` (single process), as model inputs."""
    from mmengine.runner import Runner
    loader_cfg = ConfigDict(cfg.get(f'{split}_dataloader'))
    if not loader_cfg:
        raise ValueError(f'the config has no {split}_dataloader to draw an example batch from')
    loader_cfg.update(batch_size=batch_size, num_workers=0, persistent_workers=False)
    loader = Runner.build_dataloader(loader_cfg)
    try:
        batch = next(iter(loader))
    except StopIteration:
        raise ValueError(f'the {split} dataloader is empty; check data_root and ann_file of the config') from None
    with torch.no_grad():
        return contiguous_inputs(model.data_preprocessor(batch, False)['inputs'])
