"""The block bank: every block's descendants and their profiles, in memory and on disk.

On disk a bank is a directory with ``descendants-<sha>.safetensors`` (the tensors of every descendant, named by
their SHA-256) and ``manifest.json`` (format version, the teacher's fingerprint, the blocks, each descendant's
pruning plan, and the profiles). A descendant is rebuilt from the teacher and its plan, then its tensors are
loaded: nothing is unpickled. Both files are written atomically, the manifest last; it names the tensor file and
records its SHA-256. A new tensor file never replaces the one the current manifest names, so a save that fails
at any point leaves the previous bank loadable; tensor files no manifest names are removed after a save.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..block_extraction import BlockExtraction, BlockSpec, extract_blocks
from ..descendant_generation import (DEFAULT_SPARSITIES, Descendant, PruningPlan, check_sparsities,
                                     generate_descendants, rebuild_descendant)
from ..utils.atomic_io import atomic_save_tensors, atomic_write_json
from ..version import __version__
from .profiles import BankProfiles, sparsity_key

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = 'manifest.json'
TENSORS = 'descendants.safetensors'  # staging name; saved banks name the file after its SHA-256


class BankError(ValueError):
    """A bank cannot be used: missing or corrupted files, another teacher, another format."""


def teacher_fingerprint(model: nn.Module) -> str:
    """SHA-256 over the names, shapes, dtypes and values of the model's parameters and buffers."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        if isinstance(tensor, torch.Tensor):
            digest.update(f'{tuple(tensor.shape)}{tensor.dtype}'.encode())
            digest.update(tensor.detach().to('cpu').contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as file:
        for chunk in iter(lambda: file.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class BlockBank:
    """Blocks, descendants and profiles of one teacher.

    Attributes:
        fingerprint: The teacher's :func:`teacher_fingerprint`.
        extraction: The detected blocks.
        sparsities: Sparsities of every block's descendants (starting with 0.0).
        descendants: Block name -> sparsity -> descendant (modules live in memory).
        profiles: Accuracy drops, memory, FLOPs and latency (filled by :mod:`mmlego.profiling`).
        meta: Free-form provenance (e.g. the config that built it).
    """

    fingerprint: str
    extraction: BlockExtraction
    sparsities: list[float]
    descendants: dict[str, dict[float, Descendant]]
    profiles: BankProfiles = field(default_factory=BankProfiles)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def blocks(self) -> list[BlockSpec]:
        """The blocks, in execution order."""
        return self.extraction.blocks

    @classmethod
    def build(cls, model: nn.Module, example_inputs: Sequence[Any],
              sparsities: Sequence[float] = DEFAULT_SPARSITIES, max_ratio: float = 0.125,
              forward_fn: Callable[..., Any] | None = None, show_progress: bool = True) -> 'BlockBank':
        """Extracts the blocks of ``model`` and generates their descendants (stages 1 and 2)."""
        extraction = extract_blocks(model, example_inputs, max_ratio=max_ratio, forward_fn=forward_fn)
        if not extraction.blocks:
            raise ValueError(f'no block found: the traced path has {extraction.num_convs_total} convs and no '
                             'single-input/single-output piece with 2..max convs and a prunable conv; try a larger '
                             'max_ratio or trace a larger part of the model')
        sparsities = check_sparsities(sparsities)
        descendants = generate_descendants(model, extraction.blocks, sparsities, show_progress=show_progress)
        return cls(fingerprint=teacher_fingerprint(model), extraction=extraction, sparsities=sparsities,
                   descendants=descendants)

    def descendant(self, block: str, sparsity: float) -> Descendant:
        """One descendant; KeyError names the valid choices."""
        try:
            return self.descendants[block][float(sparsity)]
        except KeyError:
            raise KeyError(f'no descendant {block}@{sparsity}: blocks are {list(self.descendants)}, sparsities '
                           f'{self.sparsities}') from None

    def to(self, device: torch.device | str) -> 'BlockBank':
        """Moves every descendant to ``device``."""
        for by_sparsity in self.descendants.values():
            for descendant in by_sparsity.values():
                descendant.module.to(device)
        return self

    # -- disk ------------------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Writes the bank to ``directory`` (tensors, then the manifest; each atomically).

        A failure at any point leaves the bank previously saved there loadable.
        """
        directory = Path(directory)
        tensors = {}
        for name, by_sparsity in self.descendants.items():
            for sparsity, descendant in by_sparsity.items():
                prefix = f'{name}|{sparsity_key(sparsity)}|'
                tensors.update({prefix + key: t for key, t in descendant.module.state_dict().items()})
        staging = directory / f'.{TENSORS}.staging'
        atomic_save_tensors(staging, tensors, metadata={'format_version': str(FORMAT_VERSION)})
        sha256 = _file_sha256(staging)
        tensor_file = f'descendants-{sha256[:16]}.safetensors'
        os.replace(staging, directory / tensor_file)
        manifest = dict(
            format_version=FORMAT_VERSION, mmlego_version=__version__, teacher_fingerprint=self.fingerprint,
            tensors=dict(file=tensor_file, sha256=sha256),
            sparsities=self.sparsities, extraction=self.extraction.to_dict(),
            plans={name: {sparsity_key(s): d.plan.to_dict() for s, d in by_sparsity.items()}
                   for name, by_sparsity in self.descendants.items()},
            profiles=self.profiles.to_dict(), meta=self.meta)
        atomic_write_json(directory / MANIFEST, manifest)
        for stale in directory.glob('descendants*.safetensors'):
            if stale.name != tensor_file:
                stale.unlink()
        return directory

    def save_profiles(self, directory: str | Path) -> None:
        """Rewrites only the manifest's profiles (the tensors are unchanged).

        Raises:
            BankError: ``directory`` holds no bank, or the bank of another teacher.
        """
        path = Path(directory) / MANIFEST
        manifest = _read_manifest(path)
        if manifest['teacher_fingerprint'] != self.fingerprint:
            raise BankError(f'{directory} holds the bank of another teacher; save this bank there first')
        manifest['profiles'] = self.profiles.to_dict()
        manifest['meta'] = self.meta
        atomic_write_json(path, manifest)

    @classmethod
    def load(cls, directory: str | Path, model: nn.Module, map_location: str | torch.device = 'cpu',
             check_fingerprint: bool = True) -> 'BlockBank':
        """Loads a bank saved by :meth:`save` for the teacher ``model``.

        Raises:
            BankError: Missing or corrupted files, another format version, or another teacher.
        """
        from safetensors.torch import load_file
        directory = Path(directory)
        manifest = _read_manifest(directory / MANIFEST)
        if manifest.get('format_version') != FORMAT_VERSION:
            raise BankError(f'{directory} has bank format {manifest.get("format_version")}, this mmlego reads '
                            f'{FORMAT_VERSION}; rebuild the bank with this version')
        if check_fingerprint and manifest['teacher_fingerprint'] != teacher_fingerprint(model):
            raise BankError(f'{directory} was built from another teacher (fingerprint '
                            f'{manifest["teacher_fingerprint"][:12]}...); load the checkpoint the bank was built '
                            'from, or build a bank for this teacher')
        try:
            tensor_path = directory / manifest['tensors']['file']
            expected_sha = manifest['tensors']['sha256']
            extraction = _extraction_from_dict(manifest['extraction'])
            sparsities = [float(s) for s in manifest['sparsities']]
            plans = {spec.name: {float(key): PruningPlan.from_dict(data)
                                 for key, data in manifest['plans'][spec.name].items()}
                     for spec in extraction.blocks}
            profiles = BankProfiles.from_dict(manifest.get('profiles') or {})
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise BankError(f'{directory / MANIFEST} is malformed ({type(error).__name__}: {error}); the bank is '
                            'corrupted, rebuild it') from error
        incomplete = [name for name, by_sparsity in plans.items() if sorted(by_sparsity) != sparsities]
        if incomplete:
            raise BankError(f'{directory / MANIFEST} is malformed: blocks {incomplete} lack descendants at some '
                            f'of the sparsities {sparsities}; the bank is corrupted, rebuild it')
        if not tensor_path.exists():
            raise BankError(f'{tensor_path} is missing; the bank directory is incomplete, rebuild or re-copy it')
        if _file_sha256(tensor_path) != expected_sha:
            raise BankError(f'{tensor_path} is corrupted (its SHA-256 differs from the manifest); re-copy or '
                            'rebuild the bank')
        try:
            tensors = load_file(str(tensor_path), device=str(map_location))
        except Exception as error:
            raise BankError(f'{tensor_path} cannot be read as safetensors ({error}); rebuild the bank') from error
        descendants: dict[str, dict[float, Descendant]] = {}
        model_device = next(model.parameters()).device
        for spec in extraction.blocks:
            descendants[spec.name] = {}
            for sparsity, plan in plans[spec.name].items():
                key = sparsity_key(sparsity)
                try:
                    descendant = rebuild_descendant(model, spec, plan)
                except (KeyError, AttributeError, ValueError) as error:
                    raise BankError(f'descendant {spec.name}@{key} cannot be rebuilt from this teacher '
                                    f'({error}); load the teacher the bank was built from') from error
                prefix = f'{spec.name}|{key}|'
                state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
                try:
                    descendant.module.load_state_dict(state, strict=True)
                except RuntimeError as error:
                    raise BankError(f'descendant {spec.name}@{key} does not match its tensors: '
                                    f'{str(error).splitlines()[0]}; rebuild the bank') from error
                descendant.module.to(model_device).eval()
                descendants[spec.name][sparsity] = descendant
        return cls(fingerprint=manifest['teacher_fingerprint'], extraction=extraction,
                   sparsities=sparsities, descendants=descendants, profiles=profiles, meta=manifest.get('meta') or {})


def _read_manifest(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise BankError(f'{path} is missing: not a block bank directory (build one with the LegoDNN pipeline)')
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BankError(f'{path} is not valid JSON ({error}); the bank is corrupted, rebuild it') from error
    if not isinstance(manifest, dict):
        raise BankError(f'{path} holds a JSON {type(manifest).__name__}, not a block bank manifest; the bank is '
                        'corrupted, rebuild it')
    for key in ('format_version', 'teacher_fingerprint', 'tensors', 'sparsities', 'extraction', 'plans'):
        if key not in manifest:
            raise BankError(f'{path} lacks "{key}"; the bank is corrupted or not a block bank, rebuild it')
    return manifest


def _extraction_from_dict(data: dict[str, Any]) -> BlockExtraction:
    return BlockExtraction(blocks=[BlockSpec.from_dict(block) for block in data['blocks']],
                           num_convs_total=int(data['num_convs_total']),
                           max_convs_per_block=int(data['max_convs_per_block']),
                           max_ratio=float(data['max_ratio']), skipped=dict(data.get('skipped') or {}))
