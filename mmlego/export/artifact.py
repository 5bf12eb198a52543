"""A chosen configuration as a standalone artifact: runs without the bank and without the teacher checkpoint.

Directory layout (written to a temporary sibling and renamed into place: never half-written)::

    config.py            the legodnn config (its ``model.architecture`` is the teacher's architecture)
    weights.safetensors  every parameter and buffer of the composite (frame + chosen descendants)
    configuration.json   format version, teacher fingerprint, selection, estimates, budget, per pruned block its
                         spec and recorded structure, the weights' SHA-256, and the ONNX file's check
    model.onnx           the tensor path (optional), outputs checked with onnxruntime

:func:`load_configuration` builds the architecture from ``config.py``, reshapes the pruned blocks from their
recorded structure and loads the weights (safetensors, no pickle).
"""
from __future__ import annotations

import copy
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..block_bank.bank import _file_sha256
from .onnx_export import DEFAULT_OPSET, ExportError, TensorPathModule, export_onnx, onnx_max_abs_diff

__all__ = ['ARTIFACT_FORMAT', 'ONNX_TOLERANCE', 'composite_copy', 'export_configuration', 'load_configuration']

ARTIFACT_FORMAT = 1
#: Largest |onnxruntime - PyTorch| output difference an export accepts.
ONNX_TOLERANCE = 1e-4
_CONFIGURATION = 'configuration.json'
_WEIGHTS = 'weights.safetensors'


def composite_copy(model) -> nn.Module:
    """A deep copy of what a LegoDNN model runs now (its architecture with the switched-in descendants), without
    the switcher's guard or the latency timer's hooks; taken while no switch can happen."""
    timer = getattr(model, 'timer', None)
    attached = timer is not None and timer.attached
    with model.switcher.frozen():
        if attached:
            timer.detach()
        try:
            composite = copy.deepcopy(model.architecture)
        finally:
            if attached:
                timer.attach()
    return composite.eval()


def _replace_directory(staged: Path, out: Path, overwrite: bool) -> None:
    if out.exists():
        if not overwrite:
            raise FileExistsError(f'{out} exists; choose another --out or pass --overwrite')
        trash = Path(tempfile.mkdtemp(dir=out.parent, prefix=f'.{out.name}.old.'))
        out.rename(trash / out.name)
        staged.rename(out)
        shutil.rmtree(trash)
    else:
        staged.rename(out)


def export_configuration(model, out: str | Path, inputs: torch.Tensor, extra: dict[str, Any] | None = None,
                         onnx: bool = True, opset: int = DEFAULT_OPSET, overwrite: bool = False) -> dict[str, Any]:
    """Writes the running configuration of ``model`` (a LegoDNN with a bank) as a standalone artifact.

    Args:
        model: The scaled LegoDNN model (``model.cfg`` set, as :func:`mmlego.apis.init_lego_model` does).
        out: The artifact directory (must not exist unless ``overwrite``).
        inputs: An example input of the tensor path (its shape is the ONNX model's).
        extra: More metadata (e.g. the budget) stored in ``configuration.json``.
        onnx: Also write ``model.onnx`` and check it with onnxruntime.
        opset: ONNX opset (>= 17).
        overwrite: Replace an existing ``out``.

    Returns:
        The metadata written to ``configuration.json``.

    Raises:
        ExportError: ONNX export failed or its outputs differ from PyTorch's by more than :data:`ONNX_TOLERANCE`.
        FileExistsError: ``out`` exists and ``overwrite`` is False.
    """
    from ..block_bank.bank import teacher_fingerprint
    from ..models.tensor_path import TENSOR_PATHS
    from ..utils.atomic_io import atomic_save_tensors, atomic_write_json
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f'{out} exists; choose another --out or pass --overwrite')
    bank = model.bank
    selection = dict(model.selection)
    composite = composite_copy(model).to(inputs.device)
    tensor_path = bank.meta.get('tensor_path') or model.tensor_path or 'tensor'
    blocks = []
    for spec in bank.blocks:
        sparsity = selection[spec.name]
        if sparsity > 0:
            plan = bank.descendant(spec.name, sparsity).plan
            blocks.append(dict(spec=spec.to_dict(), sparsity=sparsity, structure=plan.structure))
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(dir=out.parent, prefix=f'.{out.name}.partial.'))
    try:
        model.cfg.dump(str(staged / 'config.py'))
        state = {key: value.detach().cpu().contiguous() for key, value in composite.state_dict().items()}
        atomic_save_tensors(staged / _WEIGHTS, state)
        try:
            estimates = model.estimate()
        except ValueError:  # a bank without profiles (built, not yet profiled): nothing to estimate
            estimates = None
        meta = dict(format_version=ARTIFACT_FORMAT, teacher_fingerprint=bank.fingerprint,
                    composite_fingerprint=teacher_fingerprint(composite), selection=selection,
                    estimates=estimates, tensor_path=tensor_path, blocks=blocks,
                    weights=dict(file=_WEIGHTS, sha256=_file_sha256(staged / _WEIGHTS)),
                    input_shape=list(inputs.shape), **(extra or {}))
        if onnx:
            # A path with data-dependent code (a two-stage detector's proposals) exports its traceable part.
            path_fn = TENSOR_PATHS[tensor_path]
            onnx_fn = getattr(path_fn, 'traced_part', path_fn)
            module = TensorPathModule(composite, onnx_fn).eval()
            names = export_onnx(module, inputs, staged / 'model.onnx', opset=opset)
            difference = onnx_max_abs_diff(staged / 'model.onnx', module, inputs)
            if not difference <= ONNX_TOLERANCE:
                raise ExportError(f'onnxruntime\'s outputs differ from PyTorch\'s by {difference:.3g} (> '
                                  f'{ONNX_TOLERANCE:g}); the ONNX file is not written')
            meta['onnx'] = dict(file='model.onnx', opset=opset, outputs=names, max_abs_diff=difference,
                                checked_with='onnxruntime (CPUExecutionProvider)',
                                path=onnx_fn.__name__)
        atomic_write_json(staged / _CONFIGURATION, meta)
        _replace_directory(staged, out, overwrite)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return meta


def load_configuration(directory: str | Path, device: str | torch.device = 'cpu') -> tuple[nn.Module, dict]:
    """Loads an exported configuration: the composite model (eval mode) and its metadata.

    Raises:
        ValueError: Not an artifact directory, another format version, or a damaged weights file.
    """
    from mmengine.config import Config

    from ..block_extraction import BlockSpec
    from ..block_extraction.block_module import put_block
    from ..descendant_generation.structure import apply_structure, build_block, structure_copy, tensor_names
    from ..models.tensor_path import build_model
    from ..utils.atomic_io import read_json
    from safetensors.torch import load_file
    directory = Path(directory)
    meta_path = directory / _CONFIGURATION
    if not meta_path.is_file():
        raise ValueError(f'{directory} has no {_CONFIGURATION}: not an exported configuration (write one with '
                         'tools/export.py)')
    meta = read_json(meta_path, 'export the configuration again (tools/export.py)')
    if not isinstance(meta, dict) or meta.get('format_version') != ARTIFACT_FORMAT:
        found = meta.get('format_version') if isinstance(meta, dict) else None
        raise ValueError(f'{meta_path} has artifact format {found}, this mmlego reads {ARTIFACT_FORMAT}; export it '
                         'again with this version')
    weights = directory / meta['weights']['file']
    if not weights.is_file() or _file_sha256(weights) != meta['weights']['sha256']:
        raise ValueError(f'{weights} is missing or corrupted (its SHA-256 differs from {_CONFIGURATION}); export '
                         'the configuration again')
    model = build_model(Config.fromfile(str(directory / 'config.py')))
    state = load_file(str(weights))
    try:
        for block in meta['blocks']:  # each pruned block rebuilt at its recorded shapes, holding its saved tensors
            spec = BlockSpec.from_dict(block['spec'])
            template = apply_structure(structure_copy(model, spec), block['structure'])
            tensors = {local: state[template.model_name(local)] for local in tensor_names(template)}
            put_block(model, build_block(model, spec, block['structure'], tensors))
        model.load_state_dict(state, strict=True)
    except (AttributeError, KeyError, TypeError, ValueError, RuntimeError) as error:  # edited by hand
        raise ValueError(f'{meta_path} does not describe {weights.name} ({type(error).__name__}: '
                         f'{str(error).splitlines()[0][:200] if str(error) else ""}); export the configuration '
                         'again') from None
    return model.to(device).eval(), meta

