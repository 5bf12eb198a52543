"""mm-style inference APIs: build a scalable model from any OpenMMLab config, scale it, run it.

``init_lego_model`` plays the part of mmdet's ``init_detector`` / mmseg's ``init_model`` / mmpose's
``init_model`` / mmaction's ``init_recognizer``; ``inference_lego_model`` that of ``inference_detector`` /
``inference_model`` / ``inference_topdown`` / ``inference_recognizer`` and returns the same data samples
(``DetDataSample``, ``SegDataSample``, ``PoseDataSample``, ``ActionDataSample``); ``scale_model`` chooses the
descendants for a budget and switches them in.

Inference is one generic path for every task: the config's own test pipeline
(``cfg.test_dataloader.dataset.pipeline``, annotation loading removed) is built in the config's default scope,
fed one dict per input, collated, and run through ``model.test_step``, which is what each package's inference
function does. The package functions themselves are not called because they read different config keys (mmseg
and mmaction read a top-level ``test_pipeline``, which configs that only define ``test_dataloader`` lack) and
mmseg's mutates ``model.cfg``. Only turning a user's input into that dict depends on the task family: one small
function per family below, none per model.
"""
from __future__ import annotations

import copy
import os
from typing import Any, Callable, List, Optional, Tuple

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from mmengine.registry import DefaultScope

from ..models.legodnn import LegoDNN

from .init import TASK_FAMILIES, _require_lego

__all__ = ['inference_lego_model', 'task_family']

def task_family(model: LegoDNN) -> str | None:
    """``'det'``, ``'seg'``, ``'pose'`` or ``'action'``: from the architecture's package, else its scope."""
    root = type(model.architecture).__module__.split('.')[0]
    if root in TASK_FAMILIES:
        return TASK_FAMILIES[root]
    cfg = getattr(model, 'cfg', None)
    if cfg is not None:
        scope = (cfg.model.get('architecture') or {}).get('_scope_') or cfg.get('default_scope')
        return TASK_FAMILIES.get(scope)
    return None


def _is_image(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike)) or (isinstance(x, np.ndarray) and x.ndim in (2, 3))


def _type_name(transform: Any) -> str:
    t = transform.get('type') if isinstance(transform, dict) else type(transform).__name__
    return t if isinstance(t, str) else getattr(t, '__name__', str(t))


def _use_ndarray_loader(pipeline: list, scope: str) -> list:
    """The first (image-loading) transform replaced by the package's ``LoadImageFromNDArray``."""
    if pipeline and _type_name(pipeline[0]).split('.')[-1] == 'LoadImageFromFile':
        pipeline[0] = dict(pipeline[0], type=f'{scope}.LoadImageFromNDArray')
    return pipeline


# One input builder per task family: (model, one input, **kwargs) -> (list of pipeline dicts, pipeline edit).
# The pipeline edit (or None) adapts the config's test pipeline to in-memory inputs, as the packages do.
InputBuilder = Callable[..., Tuple[List[dict], Optional[Callable[[list], list]]]]


def _image_inputs(scope: str) -> InputBuilder:
    def build(model, img, **kwargs):
        if kwargs:
            raise TypeError(f'unexpected arguments for {scope} inference: {sorted(kwargs)}')
        if not _is_image(img):
            raise TypeError(f'{scope} inference takes an image path or an HxW(x3) BGR ndarray, got '
                            f'{type(img).__name__}')
        if isinstance(img, np.ndarray):
            return [dict(img=img, img_id=0)], lambda p: _use_ndarray_loader(p, scope)
        return [dict(img_path=str(img), img_id=0)], None
    return build


def _pose_inputs(model, img, bboxes=None, bbox_format: str = 'xyxy'):
    """Top-down pose: one pipeline dict per person box (default: the whole image), as ``inference_topdown``."""
    if not _is_image(img):
        raise TypeError(f'pose inference takes an image path or an HxWx3 BGR ndarray, got {type(img).__name__}')
    if bboxes is None:
        if isinstance(img, np.ndarray):
            h, w = img.shape[:2]
        else:
            import mmcv
            h, w = mmcv.imread(str(img)).shape[:2]
        bboxes = np.array([[0, 0, w, h]], dtype=np.float32)
    bboxes = np.asarray(bboxes, dtype=np.float32).reshape(-1, 4)
    if bbox_format == 'xywh':
        bboxes = np.concatenate([bboxes[:, :2], bboxes[:, :2] + bboxes[:, 2:]], axis=1)
    elif bbox_format != 'xyxy':
        raise ValueError(f'bbox_format must be "xyxy" or "xywh", got {bbox_format!r}')
    data = []
    for bbox in bboxes:
        info = dict(img=img) if isinstance(img, np.ndarray) else dict(img_path=str(img))
        info.update(bbox=bbox[None], bbox_score=np.ones(1, dtype=np.float32))
        info.update(model.dataset_meta or {})  # flip indices etc., needed by flip testing
        data.append(info)
    return data, None


def _action_inputs(model, clip, **kwargs):
    """A clip: a rawframe directory, a video file, or its frames (a list of HxWx3 RGB arrays or a TxHxWx3 array).

    A rawframe directory runs the config's pipeline unchanged (like the test set); frames and videos are decoded
    here and run with mmaction's ``ArrayDecode`` in place of the config's ``*Init``/``*Decode`` steps.
    """
    if kwargs:
        raise TypeError(f'unexpected arguments for action inference: {sorted(kwargs)}')
    dataset = model.cfg.test_dataloader.dataset
    if isinstance(clip, (str, os.PathLike)) and os.path.isdir(clip):
        frames = sorted(f for f in os.listdir(clip) if not f.startswith('.'))
        if not frames:
            raise ValueError(f'{clip} holds no frames')
        if any(_type_name(t).split('.')[-1] == 'RawFrameDecode' for t in dataset.pipeline):
            return [dict(frame_dir=str(clip), total_frames=len(frames), label=-1, modality='RGB',
                         filename_tmpl=dataset.get('filename_tmpl', 'img_{:05}.jpg'),
                         start_index=dataset.get('start_index', 1), offset=0)], None
        import mmcv
        clip = [mmcv.imread(os.path.join(clip, f), channel_order='rgb') for f in frames]
    elif isinstance(clip, (str, os.PathLike)):
        if not os.path.isfile(clip):
            raise FileNotFoundError(f'{clip} is neither a rawframe directory nor a video file')
        import mmcv
        clip = [mmcv.bgr2rgb(frame) for frame in mmcv.VideoReader(str(clip))]
    array = np.stack([np.asarray(f) for f in clip]) if not isinstance(clip, np.ndarray) else clip
    if array.ndim != 4 or array.shape[0] == 0:
        raise ValueError(f'a clip given as frames must be T x H x W x C (T > 0), got shape {array.shape}')

    def use_array(pipeline):
        kept = [t for t in pipeline if not _type_name(t).split('.')[-1].endswith('Init')]
        return [dict(type='mmaction.ArrayDecode') if _type_name(t).split('.')[-1].endswith('Decode') else t
                for t in kept]
    return [dict(array=array, total_frames=len(array), label=-1, start_index=0, modality='RGB')], use_array


_INPUT_BUILDERS: dict[str, InputBuilder] = {
    'det': _image_inputs('mmdet'), 'seg': _image_inputs('mmseg'), 'pose': _pose_inputs, 'action': _action_inputs}


def _is_single(family: str | None, inputs: Any) -> bool:
    """Whether ``inputs`` is one input (else a list of them)."""
    if isinstance(inputs, (dict, str, os.PathLike)):
        return True
    if isinstance(inputs, np.ndarray):
        return True
    if family == 'action' and isinstance(inputs, (list, tuple)) and inputs \
            and all(isinstance(x, np.ndarray) for x in inputs):
        return True  # the frames of one clip
    return False


def _test_pipeline(cfg: Config) -> list:
    loader = cfg.get('test_dataloader') or cfg.get('val_dataloader')
    dataset = (loader or {}).get('dataset') or {}
    while 'pipeline' not in dataset and isinstance(dataset.get('dataset'), dict):
        dataset = dataset['dataset']
    if 'pipeline' not in dataset:
        raise ValueError('the config has no test_dataloader.dataset.pipeline to prepare inputs with')
    return [t for t in copy.deepcopy(dataset['pipeline'])
            if not _type_name(t).split('.')[-1].startswith('LoadAnnotations')]


def inference_lego_model(model: LegoDNN, inputs: Any, **kwargs) -> Any:
    """Runs the model (its current selection of descendants) the way the task package's inference does.

    Args:
        model: A model from :func:`init_lego_model` (scaled or not).
        inputs: One input or a list of them. Per task family:

            - det / seg: an image path or a BGR ``ndarray``;
            - pose (top-down): an image path or a BGR ``ndarray``; keyword ``bboxes`` (N x 4, default the whole
              image) and ``bbox_format`` (``'xyxy'``, default, or ``'xywh'``);
            - action: a rawframe directory, a video file, or the frames of a clip (a list of RGB ``ndarray`` or
              one T x H x W x 3 array); a list of such clips for several;
            - any task: a dict, fed as is to the config's test pipeline (e.g. a dataset's data info).

    Returns:
        For one input the package's data sample (``DetDataSample``, ``SegDataSample``, ``PoseDataSample`` with
        every box's instance merged, ``ActionDataSample``), for a list of inputs a list of them.

    Raises:
        ValueError: The model's task family is unknown and the inputs are not pipeline dicts.
    """
    model = _require_lego(model)
    cfg = getattr(model, 'cfg', None)
    if cfg is None:
        raise ValueError('the model has no .cfg; build it with mmlego.apis.init_lego_model')
    family = task_family(model)
    single = _is_single(family, inputs)
    items = [inputs] if single else list(inputs)
    builder = _INPUT_BUILDERS.get(family)
    results = []
    model.eval()
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        for item in items:
            if isinstance(item, dict):
                if kwargs:
                    raise TypeError(f'dict inputs go to the pipeline as they are; unexpected arguments '
                                    f'{sorted(kwargs)}')
                data, edit = [dict(item)], None
            elif builder is None:
                raise ValueError(
                    f'unknown task family of {type(model.architecture).__name__} (package '
                    f'{type(model.architecture).__module__.split(".")[0]}, scope {cfg.get("default_scope")}): '
                    f'inputs other than pipeline dicts are understood for {sorted(TASK_FAMILIES)} models; pass '
                    'dicts as the config test pipeline expects them')
            else:
                data, edit = builder(model, item, **kwargs)
            pipeline = _test_pipeline(cfg)
            if edit is not None:
                pipeline = edit(pipeline)
            pipeline = Compose(pipeline)
            batch = pseudo_collate([pipeline(d) for d in data])
            with torch.no_grad():
                samples = model.test_step(batch)
            if family == 'pose' and not isinstance(item, dict):
                from mmpose.structures import merge_data_samples
                results.append(merge_data_samples(samples))
            else:
                results.extend(samples)
    return results[0] if single else results
