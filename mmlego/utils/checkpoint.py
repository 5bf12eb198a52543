"""Load mmengine checkpoints with ``torch.load(weights_only=True)`` and nothing more than needed allowed.

Since torch 2.6 ``torch.load`` defaults to ``weights_only=True``. An mmengine checkpoint also stores, next to the
weights, the message hub (``HistoryBuffer`` objects holding numpy arrays and scalars), so mmengine 0.10.7's own
``load_from`` and ``--resume`` raise ``UnpicklingError`` on torch 2.14. Rather than switching ``weights_only``
off (which would let any checkpoint a user hands us run code), we allow exactly the globals such checkpoints
contain, only while a checkpoint is being loaded. ``builtins.getattr``, which a pickled bound method needs, is
mapped to a getattr that only reaches the public statistics methods of ``HistoryBuffer``.
"""
import contextlib
from pickle import UnpicklingError  # the error torch.load raises for refused globals
from typing import Callable, Iterator, List, Tuple, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

__all__ = ['allow_mmengine_checkpoints', 'check_teacher_checkpoint', 'load_checkpoint', 'TeacherCheckpointError',
           'scope_runner_checkpoint_loading',
           'mmengine_checkpoint_globals']


def _history_buffer_getattr(obj, name: str):
    """``getattr`` as an unpickler may call it: only public methods of :class:`HistoryBuffer`."""
    if (obj is HistoryBuffer or isinstance(obj, HistoryBuffer)) and not name.startswith('_') \
            and callable(getattr(HistoryBuffer, name, None)):
        return getattr(obj, name)
    raise UnpicklingError(
        f'checkpoint asks for attribute {name!r} of {type(obj).__name__}; only public HistoryBuffer methods '
        'are allowed when loading mmengine checkpoints')


def _numpy_globals() -> List[Union[Callable, Tuple[Callable, str]]]:
    """numpy's array/scalar reconstructors, under the module paths numpy 1.x and 2.x pickle them with."""
    core = np._core if hasattr(np, '_core') else np.core  # numpy 2 renamed core -> _core
    reconstruct, scalar = core.multiarray._reconstruct, core.multiarray.scalar
    allowed: List[Union[Callable, Tuple[Callable, str]]] = [np.ndarray, np.dtype]
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        allowed += [(reconstruct, f'{module}._reconstruct'), (scalar, f'{module}.scalar')]
    # A pickled np.dtype is rebuilt as an instance of its numpy 2 class (e.g. numpy.dtypes.Float64DType).
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        allowed += [cls for name, cls in vars(dtypes).items() if name.endswith('DType') and isinstance(cls, type)]
    return allowed


def mmengine_checkpoint_globals() -> List[Union[Callable, Tuple[Callable, str]]]:
    """The globals an mmengine checkpoint (weights, meta, message hub) needs beyond torch's defaults.

    Measured with ``torch.serialization.get_unsafe_globals_in_checkpoint`` on checkpoints mmengine 0.10.7 saved
    here: numpy.ndarray, numpy.dtype, numpy._core.multiarray._reconstruct / scalar, HistoryBuffer, builtins.getattr,
    plus the numpy 2 dtype classes the dtypes are rebuilt as.
    """
    return _numpy_globals() + [HistoryBuffer, (_history_buffer_getattr, 'builtins.getattr')]


@contextlib.contextmanager
def allow_mmengine_checkpoints() -> Iterator[None]:
    """Context in which ``torch.load(..., weights_only=True)`` accepts mmengine checkpoints."""
    with torch.serialization.safe_globals(mmengine_checkpoint_globals()):
        yield


def load_checkpoint(model: torch.nn.Module, filename: str, map_location='cpu', strict: bool = False, **kwargs):
    """:func:`mmengine.runner.load_checkpoint` with the mmengine globals allowed (weights_only stays on)."""
    from mmengine.runner import load_checkpoint as mmengine_load_checkpoint
    with allow_mmengine_checkpoints():
        return mmengine_load_checkpoint(model, filename, map_location=map_location, strict=strict, **kwargs)


def scope_runner_checkpoint_loading(runner) -> None:
    """Make ``runner.load_checkpoint`` (used by ``load_from`` and ``resume``) accept mmengine checkpoints.

    Only this runner's checkpoint loading is affected; everything else keeps torch's defaults.
    """
    unscoped = runner.load_checkpoint

    def load_checkpoint_scoped(*args, **kwargs):
        with allow_mmengine_checkpoints():
            return unscoped(*args, **kwargs)

    runner.load_checkpoint = load_checkpoint_scoped


def refusal_reason(error: BaseException) -> str:
    """One line of a ``torch.load(weights_only=True)`` refusal: the global it refused (its message is long)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    refused = [line for line in lines if 'Unsupported global' in line or 'Unsupported operand' in line]
    line = (refused or lines or [type(error).__name__])[0]
    return line.split('. Please use')[0][:200]


class TeacherCheckpointError(ValueError):
    """``load_from`` does not hold the weights of the model's architecture."""


def _names(keys: list, limit: int = 5) -> str:
    shown = ', '.join(keys[:limit])
    return f'{shown}, ... ({len(keys)} in all)' if len(keys) > limit else shown


def check_teacher_checkpoint(model: torch.nn.Module, filename: str) -> None:
    """Refuses a checkpoint that does not fit ``model`` (an ``mmlego.LegoDNN``) key for key and shape for shape.

    A teacher checkpoint (``backbone.*``) is compared with ``model.architecture``; a checkpoint of the wrapper
    (``architecture.*``) with ``model``. The usual ``module.`` prefix of data-parallel checkpoints is dropped.

    Raises:
        TeacherCheckpointError: Missing, unexpected or reshaped keys, named (the first few of each), or a pickle
            that needs more than tensors and mmengine's metadata (never executed).
    """
    from mmengine.runner.checkpoint import _load_checkpoint
    try:
        with allow_mmengine_checkpoints():
            checkpoint = _load_checkpoint(filename, map_location='cpu')
    except UnpicklingError as error:
        raise TeacherCheckpointError(
            f'{filename} holds objects other than tensors and mmengine metadata, refused unexecuted '
            f'(torch.load(weights_only=True): {refusal_reason(error)}); load_from must be a checkpoint '
            'saved by OpenMMLab training (or torch.save of a plain state_dict)') from None
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise TeacherCheckpointError(f'{filename} holds no state_dict; load_from must be the trained teacher\'s '
                                     'checkpoint (as saved by its tools/train.py)')
    state = {key[len('module.'):] if key.startswith('module.') else key: value for key, value in state.items()}
    target = model.architecture if model.is_teacher_state_dict(state) else model
    expected = target.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    reshaped = sorted(key for key in set(state) & set(expected)
                      if hasattr(state[key], 'shape') and tuple(state[key].shape) != tuple(expected[key].shape))
    if not (missing or unexpected or reshaped):
        return
    problems = [f'missing keys: {_names(missing)}' if missing else '',
                f'unexpected keys: {_names(unexpected)}' if unexpected else '',
                'other shapes: ' + _names([f'{key} {tuple(state[key].shape)} vs {tuple(expected[key].shape)}'
                                           for key in reshaped]) if reshaped else '']
    raise TeacherCheckpointError(
        f'load_from={filename} does not fit the teacher architecture of this config ('
        + '; '.join(p for p in problems if p) + '); it must be the checkpoint of the model the legodnn config wraps '
        '(trained with its teacher config), e.g. --cfg-options load_from=work_dirs/<teacher config>/epoch_N.pth')
