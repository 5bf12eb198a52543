"""The tensor path of a running configuration as ONNX, checked against PyTorch with onnxruntime.

The exported graph is what block extraction traced and latency profiling timed: ``model(inputs, mode='tensor')``
(or ``extract_feat`` for two-stage detectors), the task package's post-processing (NMS, keypoint decoding) excluded.
Shapes are static (those of the example input).
"""
from __future__ import annotations

import contextlib
import os
import re
from typing import Any, Callable, Iterator

import torch
from torch import nn

__all__ = ['ExportError', 'TensorPathModule', 'export_onnx', 'onnx_max_abs_diff', 'MIN_OPSET', 'DEFAULT_OPSET']

#: Oldest opset accepted (LayerNorm, GridSample and friends as single ops) and the one torch's exporter writes.
MIN_OPSET, DEFAULT_OPSET = 17, 18


class ExportError(RuntimeError):
    """A configuration cannot be exported as asked (an opset that cannot express a layer, outputs that differ)."""


class TensorPathModule(nn.Module):
    """``forward(inputs)`` -> the tensor path's output tensors as a flat tuple (ONNX outputs are flat)."""

    def __init__(self, architecture: nn.Module, forward: Callable[[nn.Module, torch.Tensor], Any]) -> None:
        super().__init__()
        self.architecture = architecture
        self._forward = forward

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        leaves = torch.utils._pytree.tree_leaves(self._forward(self.architecture, inputs))
        return tuple(leaf for leaf in leaves if isinstance(leaf, torch.Tensor))


def export_onnx(module: TensorPathModule, inputs: torch.Tensor, path: str | os.PathLike,
                opset: int = DEFAULT_OPSET) -> list[str]:
    """Writes ``module`` as ONNX (torch's exporter) and returns the output names.

    Raises:
        ValueError: ``opset`` below :data:`MIN_OPSET`.
        ExportError: The exporter cannot express a layer at this opset (the message names the opset and the cause).
    """
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET:
        raise ValueError(f'opset must be an integer >= {MIN_OPSET}, got {opset!r}')
    module = module.eval()
    with torch.no_grad(), same_draws():  # the caller's numpy generator is not drawn from
        count = len(module(inputs))
    names = [f'output_{index}' for index in range(count)]
    try:
        with same_draws():
            torch.onnx.export(module, (inputs,), str(path), opset_version=opset, input_names=['inputs'],
                              output_names=names, dynamo=True, verbose=False)
    except Exception as error:  # noqa: BLE001 - the exporter raises many kinds; the user needs one message
        raise ExportError(f'the configuration cannot be exported to ONNX opset {opset} ({_root_cause(error)}); '
                          'try a newer --opset, or export with --no-onnx (the safetensors artifact alone)') from error
    return names


@contextlib.contextmanager
def same_draws(seed: int = 0) -> Iterator[None]:
    """numpy's global generator seeded inside, restored after: a forward that draws from it (mmaction's TRN samples
    its relations per forward) draws the same in the traced export, which bakes the draws into the graph, and in the
    PyTorch reference it is compared with."""
    import numpy as np
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _root_cause(error: BaseException) -> str:
    """The innermost cause of an exporter error, one line (it names the layer: "No ONNX function found for ...")."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    text = re.sub(r'\x1b\[[0-9;]*m', '', str(error)).strip()
    return f'{type(error).__name__}: {text.splitlines()[0][:300] if text else ""}'


def onnx_max_abs_diff(path: str | os.PathLike, module: TensorPathModule, inputs: torch.Tensor) -> float:
    """Largest absolute difference between onnxruntime's outputs (CPU) and PyTorch's on ``inputs``."""
    import numpy as np
    import onnxruntime
    session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    outputs = session.run(None, {session.get_inputs()[0].name: inputs.detach().cpu().numpy()})
    with torch.no_grad(), same_draws():
        reference = [tensor.detach().cpu().numpy() for tensor in module(inputs)]
    if len(outputs) != len(reference):
        raise ExportError(f'the ONNX model has {len(outputs)} outputs, PyTorch {len(reference)}')
    return max((float(np.abs(out.astype(np.float64) - ref.astype(np.float64)).max()) if out.size else 0.0)
               for out, ref in zip(outputs, reference))
