"""The block bank: every block's descendants and their profiles, in memory and on disk.

On disk a bank is a directory with ``descendants-<sha>.safetensors`` (the tensors of every pruned descendant,
sparsity 0.0 excluded: that is the teacher's own block) and ``manifest.json`` (format version, the teacher's
fingerprint, the blocks, each descendant's pruning plan with the structure it changed, and the profiles). Loading
runs no torch-pruning and unpickles nothing: a descendant is rebuilt from a structural copy of the teacher's block
(no tensor copied), its recorded attributes, and its tensors, which stay memory-mapped from the file until used
(:mod:`mmlego.block_bank.storage`); sparsity 0.0 is the teacher's live block modules. Both files are written
atomically, the manifest last; it names the tensor file and records its SHA-256. A new tensor file never replaces
the one the current manifest names, so a save that fails at any point leaves the previous bank loadable; tensor
files no manifest names are removed after a save.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from mmengine.logging import print_log
from torch import nn

from ..block_extraction import BlockExtraction, BlockSpec, extract_blocks
from ..block_extraction.block_module import BlockModule, block_module_of
from ..descendant_generation import (DEFAULT_SPARSITIES, Descendant, PruningPlan, build_block, check_sparsities,
                                     module_tensors)
from ..utils.atomic_io import atomic_save_tensors, atomic_write_json, replace_durably
from ..version import __version__
from .profiles import BankProfiles, sparsity_key
from .storage import MappedDescendant, normalize_device, open_mapped

# 1: every descendant stored, rebuilt by torch-pruning. 2: structure recorded, sparsity 0.0 not stored.
FORMAT_VERSION = 2
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

    A built bank holds every descendant in memory. A loaded bank holds, per block, the teacher's own block modules
    at sparsity 0.0 and memory-mapped descendants (:class:`~mmlego.block_bank.storage.MappedDescendant`) at the
    others, materialized on :attr:`device` when used (by the switcher, or by ``descendant(...).module``).

    Attributes:
        fingerprint: The teacher's :func:`teacher_fingerprint`.
        extraction: The detected blocks.
        sparsities: Sparsities of every block's descendants (starting with 0.0).
        descendants: Block name -> sparsity -> descendant.
        profiles: Accuracy drops, memory, FLOPs and latency (filled by :mod:`mmlego.profiling`).
        meta: Free-form provenance (e.g. the config that built it).
        device: Where descendants are materialized (and in-memory ones kept); None: where they are.
        block_fingerprints: Block name -> fingerprint of the teacher's block when the bank was built (only in
            memory; lets :meth:`save` tell a changed sparsity-0.0 copy, which it does not store).
    """

    fingerprint: str
    extraction: BlockExtraction
    sparsities: list[float]
    descendants: dict[str, dict[float, Descendant]]
    profiles: BankProfiles = field(default_factory=BankProfiles)
    meta: dict[str, Any] = field(default_factory=dict)
    device: torch.device | None = None
    block_fingerprints: dict[str, str] = field(default_factory=dict)

    @property
    def blocks(self) -> list[BlockSpec]:
        """The blocks, in execution order."""
        return self.extraction.blocks

    @property
    def file_backed(self) -> bool:
        """Whether its descendants live in a bank file (a loaded bank) rather than in memory (a built one)."""
        return any(d.file_backed for by_s in self.descendants.values() for d in by_s.values())

    @classmethod
    def build(cls, model: nn.Module, example_inputs: Sequence[Any],
              sparsities: Sequence[float] = DEFAULT_SPARSITIES, max_ratio: float = 0.125,
              forward_fn: Callable[..., Any] | None = None, show_progress: bool = True,
              graph: Any = None) -> 'BlockBank':
        """Extracts the blocks of ``model`` and generates their descendants (stages 1 and 2); ``graph``: the path
        already traced (:func:`mmlego.models.trace_tensor_path`), so it is not traced twice."""
        extraction = extract_blocks(model, example_inputs, max_ratio=max_ratio, forward_fn=forward_fn, graph=graph)
        if not extraction.blocks:
            raise ValueError(f'no block found: the traced path has {extraction.num_convs_total} convs and no '
                             'single-input/single-output piece with 2..max convs and a prunable conv; try a larger '
                             'max_ratio or trace a larger part of the model')
        sparsities = check_sparsities(sparsities)
        from ..descendant_generation.generation import generate_descendants  # torch-pruning: creating banks only
        descendants = generate_descendants(model, extraction.blocks, sparsities, show_progress=show_progress)
        blocks = {spec.name: teacher_fingerprint(block_module_of(model, spec, copy_modules=False))
                  for spec in extraction.blocks}
        return cls(fingerprint=teacher_fingerprint(model), extraction=extraction, sparsities=sparsities,
                   descendants=descendants, block_fingerprints=blocks)

    def descendant(self, block: str, sparsity: float) -> Descendant:
        """One descendant; KeyError names the valid choices."""
        try:
            return self.descendants[block][float(sparsity)]
        except KeyError:
            raise KeyError(f'no descendant {block}@{sparsity}: blocks are {list(self.descendants)}, sparsities '
                           f'{self.sparsities}') from None

    def to(self, device: torch.device | str) -> 'BlockBank':
        """Makes ``device`` the bank's device: in-memory descendants move there, materialized file-backed ones are
        materialized there again, released ones stay mapped (they materialize there when used); the teacher's own
        modules are left alone (they follow the model)."""
        self.device = normalize_device(device)
        for by_sparsity in self.descendants.values():
            for descendant in by_sparsity.values():
                if descendant.teacher_owned:
                    continue
                if descendant.file_backed:
                    descendant.device = self.device
                    if descendant.materialized:
                        descendant.materialize(self.device)
                else:
                    descendant.materialize(self.device)
        return self

    def release(self) -> int:
        """Releases every materialized file-backed descendant (see :meth:`MappedDescendant.release`); returns how
        many were released. Do not call it while a switcher runs some of them in its model."""
        return sum(d.release() for by_s in self.descendants.values() for d in by_s.values())

    # -- disk ------------------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Writes the bank to ``directory`` (tensors, then the manifest; each atomically).

        Sparsity 0.0 is not stored: at load it is the teacher's own block (a sparsity-0.0 copy changed since
        :meth:`build`, e.g. by ``retrain_original``, is dropped with a warning). A failure at any point leaves the
        bank previously saved there loadable.
        """
        directory = Path(directory)
        tensors = {}
        for name, by_sparsity in self.descendants.items():
            for sparsity, descendant in by_sparsity.items():
                if sparsity == 0.0:
                    self._check_original(name, descendant)
                    continue
                prefix = f'{name}|{sparsity_key(sparsity)}|'
                module = descendant.get_module(materialize=False)
                tensors.update({prefix + key: t for key, t in module_tensors(module).items()})
        staging = directory / f'.{TENSORS}.staging'
        atomic_save_tensors(staging, tensors, metadata={'format_version': str(FORMAT_VERSION)})
        sha256 = _file_sha256(staging)
        tensor_file = f'descendants-{sha256[:16]}.safetensors'
        replace_durably(staging, directory / tensor_file)
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

    def _check_original(self, name: str, descendant: Descendant) -> None:
        expected = self.block_fingerprints.get(name)
        if descendant.teacher_owned or expected is None:
            return
        if teacher_fingerprint(descendant.get_module(materialize=False)) != expected:
            print_log(f'the sparsity-0.0 descendant of block {name} differs from the teacher\'s block (retrained '
                      'with retrain_original?); a bank stores no sparsity 0.0: once loaded, it is the teacher\'s '
                      'own block', logger='current', level=logging.WARNING)

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

    @staticmethod
    def verify(directory: str | Path) -> dict[str, Any]:
        """Checks a bank directory without its teacher (cheap: no model, nothing rebuilt); returns its manifest.

        Everything :meth:`load` checks but the teacher: the manifest (valid JSON, format version, every block's
        plans at every sparsity) and the tensor file (present, its SHA-256, readable as safetensors). Tools call it
        right after parsing their arguments, before any long work.

        Raises:
            BankError: Missing or corrupted files, or another format version.
        """
        return _read_verified(Path(directory))[0]

    @classmethod
    def load(cls, directory: str | Path, model: nn.Module, map_location: str | torch.device | None = None,
             check_fingerprint: bool = True) -> 'BlockBank':
        """Loads a bank saved by :meth:`save` for the teacher ``model`` (no torch-pruning, nothing unpickled).

        The pruned descendants stay memory-mapped from the tensor file (zero-copy) until materialized; sparsity 0.0
        is ``model``'s own block modules.

        Args:
            directory: The bank directory.
            model: The teacher the bank was built from.
            map_location: The bank's :attr:`device`, where descendants materialize (default: ``model``'s device).
            check_fingerprint: Refuse a bank built from another teacher.

        Raises:
            BankError: Missing or corrupted files, another format version, or another teacher.
            ValueError: ``map_location`` is not a device this machine has (checked first).
        """
        directory = Path(directory)
        device = normalize_device(map_location if map_location is not None else next(model.parameters()).device)
        manifest, extraction, sparsities, plans, profiles, views = _read_verified(directory)
        if check_fingerprint and manifest['teacher_fingerprint'] != teacher_fingerprint(model):
            raise BankError(f'{directory} was built from another teacher (fingerprint '
                            f'{manifest["teacher_fingerprint"][:12]}...); load the checkpoint the bank was built '
                            'from, or build a bank for this teacher')
        descendants: dict[str, dict[float, Descendant]] = {}
        for spec in extraction.blocks:
            descendants[spec.name] = {}
            for sparsity, plan in plans[spec.name].items():
                key = sparsity_key(sparsity)
                try:
                    if sparsity == 0.0:
                        descendants[spec.name][sparsity] = Descendant(spec, plan, _own_block(model, spec),
                                                                      teacher_owned=True)
                        continue
                    prefix = f'{spec.name}|{key}|'
                    state = {k[len(prefix):]: v for k, v in views.items() if k.startswith(prefix)}
                    module = build_block(model, spec, plan.structure, state)
                except (KeyError, AttributeError, ValueError) as error:
                    raise BankError(f'descendant {spec.name}@{key} cannot be rebuilt from this teacher and the '
                                    f'bank file ({error}); load the teacher the bank was built from, or rebuild '
                                    'the bank') from error
                descendants[spec.name][sparsity] = MappedDescendant(spec, plan, module, device)
        return cls(fingerprint=manifest['teacher_fingerprint'], extraction=extraction,
                   sparsities=sparsities, descendants=descendants, profiles=profiles, meta=manifest.get('meta') or {},
                   device=device)


def _own_block(model: nn.Module, spec: BlockSpec) -> BlockModule:
    """The teacher's live block modules in a :class:`BlockModule` (whose own mode is theirs: eval if they are)."""
    block = block_module_of(model, spec, copy_modules=False)
    block.training = block.layers.training = any(layer.training for layer in block.layers)
    return block


def _read_verified(directory: Path) -> tuple[dict[str, Any], BlockExtraction, list[float],
                                            dict[str, dict[float, PruningPlan]], BankProfiles, dict[str, torch.Tensor]]:
    """The checked contents of a bank directory: manifest, blocks, sparsities, plans, profiles, mapped tensors."""
    manifest = _read_manifest(directory / MANIFEST)
    if manifest.get('format_version') != FORMAT_VERSION:
        raise BankError(f'{directory} has bank format {manifest.get("format_version")}, this mmlego reads '
                        f'{FORMAT_VERSION}; rebuild the bank with this version')
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
    if incomplete or not sparsities or sparsities[0] != 0.0:
        raise BankError(f'{directory / MANIFEST} is malformed: blocks {incomplete} lack descendants at some '
                        f'of the sparsities {sparsities}; the bank is corrupted, rebuild it')
    if not tensor_path.exists():
        raise BankError(f'{tensor_path} is missing; the bank directory is incomplete, rebuild or re-copy it')
    if _file_sha256(tensor_path) != expected_sha:
        raise BankError(f'{tensor_path} is corrupted (its SHA-256 differs from the manifest); re-copy or '
                        'rebuild the bank')
    try:
        views = open_mapped(tensor_path)
    except Exception as error:
        raise BankError(f'{tensor_path} cannot be read as safetensors ({error}); rebuild the bank') from error
    return manifest, extraction, sparsities, plans, profiles, views


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
