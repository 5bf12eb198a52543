"""Per-epoch retraining state on disk, so an interrupted run resumes after its last completed epoch.

Each completed epoch writes ``epoch_<n>.safetensors`` (current and best weights of every descendant),
``epoch_<n>_optim.pth`` (optimizer states, plain tensors and numbers: loaded with ``weights_only=True``) and then
``state.json``, which names the epoch; files of older epochs are removed afterwards. A crash at any point leaves
``state.json`` pointing at a complete epoch. ``state.json`` also records the held-out losses of the untrained
weights (epoch 0) and the epoch each descendant's best weights come from.
"""
from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from ..utils.atomic_io import atomic_save_tensors, atomic_write, atomic_write_json, read_json
from ..utils.checkpoint import refusal_reason

STATE_VERSION = 2  # 2: the untrained weights (epoch 0) compete for the best epoch


def completed_epochs(state_dir: str | os.PathLike) -> int:
    """Epochs saved in ``state_dir`` (0 without a readable state: :meth:`RetrainingState.load` reports why)."""
    try:
        return int(read_json(Path(state_dir) / 'state.json', '')['epoch'])
    except (ValueError, KeyError, TypeError):
        return 0


class RetrainingState:
    """Best-epoch tracking in memory plus optional resumable state in ``state_dir``.

    Args:
        state_dir: Directory of the state files (None: nothing is written).
        keys: Descendant keys being trained.
        config: Retraining settings (``RetrainingConfig.recorded()``); a resume with other settings is refused.
    """

    def __init__(self, state_dir: str | None, keys: list[str], config: dict[str, Any]) -> None:
        self.dir = Path(state_dir) if state_dir else None
        self.keys = keys
        # More epochs may resume a constant-rate run; a decaying schedule depends on the total, so it must match.
        # A constant run leaves the schedule's keys out: states written before they existed still resume.
        constant = config.get('lr_schedule', 'constant') == 'constant'
        ignored = ('epochs', 'lr_schedule', 'min_lr_ratio') if constant else ()
        self.config = {k: v for k, v in config.items() if k not in ignored}
        self.best_val: dict[str, float] = {key: math.inf for key in keys}
        self.best_state: dict[str, dict[str, torch.Tensor]] = {}
        self.best_epoch: dict[str, int] = {}
        self.initial_val: dict[str, float] = {}

    def set_initial(self, trainees: dict, val: dict[str, float]) -> None:
        """Makes the untrained weights (epoch 0), with held-out losses ``val``, the best so far."""
        for key, descendant in trainees.items():
            self.best_val[key] = self.initial_val[key] = val[key]
            self.best_state[key] = copy.deepcopy(descendant.module.state_dict())
            self.best_epoch[key] = 0

    def load(self, trainees: dict, optimizers: dict, report: Any) -> int:
        """Restores the last completed epoch, if any; returns the epoch to start from."""
        if self.dir is None or not (self.dir / 'state.json').exists():
            return 0
        from safetensors.torch import load_file
        meta = read_json(self.dir / 'state.json', 'the retraining state is corrupted: remove the directory to start '
                         'retraining over')
        if meta.get('version') != STATE_VERSION:
            raise ValueError(f'{self.dir} holds retraining state of format {meta.get("version")}, this version '
                             f'writes {STATE_VERSION}; remove the directory to start over')
        if meta.get('keys') != self.keys or meta.get('config') != self.config:
            raise ValueError(f'{self.dir} holds retraining state of another run (different descendants or '
                             'settings); remove it or choose another state directory to start over')
        epoch = int(meta['epoch'])
        try:
            tensors = load_file(str(self.dir / f'epoch_{epoch}.safetensors'))
            optim_states = torch.load(self.dir / f'epoch_{epoch}_optim.pth', weights_only=True)
        except Exception as error:
            raise ValueError(f'retraining state in {self.dir} is unreadable ({refusal_reason(error)}); remove the '
                             'directory to start over') from error
        for key, descendant in trainees.items():
            descendant.module.load_state_dict(_subset(tensors, f'current|{key}|'))
            self.best_state[key] = _subset(tensors, f'best|{key}|')
        for key, optimizer in optimizers.items():  # the descendants' own, and those of training through the model
            optimizer.load_state_dict(optim_states[key])
        self.best_val = {key: (math.inf if value is None else value) for key, value in meta['best_val'].items()}
        self.best_epoch = {key: int(value) for key, value in meta['best_epoch'].items()}
        self.initial_val = dict(meta['initial_val'])
        report.history.extend(meta['history'])
        return epoch

    def save_epoch(self, epoch: int, trainees: dict, optimizers: dict, record: dict[str, Any],
                   use_val: bool) -> None:
        """Updates the best weights with this epoch's held-out losses and writes the state."""
        for key, descendant in trainees.items():
            value = record['val'][key]
            if not use_val or value < self.best_val[key]:  # epoch 0 stays unless strictly beaten
                self.best_val[key] = value if use_val else math.inf
                self.best_state[key] = copy.deepcopy(descendant.module.state_dict())
                self.best_epoch[key] = epoch
        if self.dir is None:
            return
        tensors = {}
        for key, descendant in trainees.items():
            tensors.update({f'current|{key}|{name}': t for name, t in descendant.module.state_dict().items()})
            tensors.update({f'best|{key}|{name}': t for name, t in self.best_state[key].items()})
        atomic_save_tensors(self.dir / f'epoch_{epoch}.safetensors', tensors)
        optim_states = {key: optimizer.state_dict() for key, optimizer in optimizers.items()}
        atomic_write(self.dir / f'epoch_{epoch}_optim.pth', lambda tmp: torch.save(optim_states, tmp))
        history = self._read_history() + [record]
        atomic_write_json(self.dir / 'state.json', dict(
            version=STATE_VERSION, epoch=epoch, keys=self.keys, config=self.config,
            best_val={k: (v if math.isfinite(v) else None) for k, v in self.best_val.items()},
            best_epoch=self.best_epoch, initial_val=self.initial_val, history=history))
        for old in self.dir.glob('epoch_*'):
            if not old.name.startswith(f'epoch_{epoch}.') and not old.name.startswith(f'epoch_{epoch}_'):
                os.unlink(old)

    def _read_history(self) -> list[dict[str, Any]]:
        path = self.dir / 'state.json' if self.dir else None
        return json.loads(path.read_text())['history'] if path and path.exists() else []

    def restore_best(self, trainees: dict) -> None:
        """Loads each descendant's best weights."""
        for key, descendant in trainees.items():
            if key in self.best_state:
                descendant.module.load_state_dict(self.best_state[key])


def _subset(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {name[len(prefix):]: t for name, t in tensors.items() if name.startswith(prefix)}
