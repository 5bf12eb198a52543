"""``mmlego.LegoDNN``: wraps any OpenMMLab task model and makes it scalable with a block bank."""
from __future__ import annotations

import logging
from typing import Any

import torch
from mmengine.model import BaseModel
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import DefaultScope

from ..block_bank import BlockBank, problem_from_bank
from ..block_switcher import BlockSwitcher
from ..registry import MODELS
from ..scaling_optimizer import ScalingResult, solve
from .tensor_path import TENSOR_PATHS

logger = logging.getLogger(__name__)

_OWN_PREFIXES = ('architecture.', 'data_preprocessor.')


@MODELS.register_module()
class LegoDNN(BaseModel):
    """A task model (the teacher) plus its block bank; forwards run the current composite.

    ``loss``/``predict``/``tensor`` modes are delegated to the architecture, whose blocks the switcher swaps in
    place, so the task package's own heads and post-processing run unchanged. A teacher checkpoint (keys without
    the ``architecture.`` prefix) loads directly through ``load_from``.

    Args:
        architecture: The teacher's model config (with ``_scope_``, e.g. ``'mmdet'``, or in the default scope).
        bank: A bank directory to load at construction (optional; the pipeline loops build one).
        tensor_path: The traced path, ``'tensor'`` or ``'extract_feat'``; None tries both in that order.
        latency_scale: Multiplies profiled latencies (online estimation on a device that is faster or slower).
        init_cfg: Weight initialization (usually none: the teacher comes from ``load_from``).
        data_preprocessor: Used by the architecture if its own config has none (the Runner passes a config's
            top-level ``data_preprocessor`` here, as mmseg configs have one).
    """

    def __init__(self, architecture: dict | torch.nn.Module, bank: str | None = None,
                 tensor_path: str | None = None, latency_scale: float = 1.0, init_cfg: dict | None = None,
                 data_preprocessor: dict | None = None) -> None:
        if isinstance(architecture, dict):
            architecture = dict(architecture)
            if data_preprocessor is not None:  # mmengine's Runner passes a config's top-level data_preprocessor
                architecture.setdefault('data_preprocessor', data_preprocessor)
            scope = DefaultScope.get_current_instance()
            if '_scope_' not in architecture and scope is not None and scope.scope_name != 'mmlego':
                architecture['_scope_'] = scope.scope_name  # the teacher config's default_scope
            architecture = MMENGINE_MODELS.build(architecture)
        super().__init__(data_preprocessor=architecture.data_preprocessor, init_cfg=init_cfg)
        self.architecture = architecture
        if tensor_path is not None and tensor_path not in TENSOR_PATHS:
            raise ValueError(f'tensor_path must be one of {list(TENSOR_PATHS)} or None, got {tensor_path!r}')
        self.tensor_path = tensor_path
        self.latency_scale = latency_scale
        self.bank: BlockBank | None = None
        self.switcher: BlockSwitcher | None = None
        self.last_result: ScalingResult | None = None
        self._bank_dir = bank
        self._register_load_state_dict_pre_hook(self._accept_teacher_checkpoint)

    # -- checkpoints -----------------------------------------------------------------------------------------
    @staticmethod
    def _accept_teacher_checkpoint(state_dict, prefix, *args) -> None:
        """Maps a teacher checkpoint's keys (``backbone.*``) onto ``architecture.*``."""
        keys = [key for key in state_dict if key.startswith(prefix)]
        if keys and not any(key[len(prefix):].startswith(_OWN_PREFIXES) for key in keys):
            for key in keys:
                state_dict[f'{prefix}architecture.{key[len(prefix):]}'] = state_dict.pop(key)

    # -- forward ---------------------------------------------------------------------------------------------
    def forward(self, inputs: torch.Tensor, data_samples: Any = None, mode: str = 'tensor') -> Any:
        """Delegates to the architecture (which holds the current composite)."""
        return self.architecture(inputs, data_samples, mode=mode)

    # -- bank and scaling ------------------------------------------------------------------------------------
    def attach_bank(self, bank: BlockBank | str) -> BlockBank:
        """Loads (or takes) a bank of this teacher and prepares switching (all blocks at sparsity 0.0)."""
        if self.switcher is not None:
            self.switcher.reset()
            self.switcher.detach()
        if not isinstance(bank, BlockBank):
            bank = BlockBank.load(bank, self.architecture)
        self.bank = bank
        self.tensor_path = bank.meta.get('tensor_path', self.tensor_path)
        self.switcher = BlockSwitcher(self.architecture, bank)
        return bank

    def load_configured_bank(self) -> None:
        """Loads the bank given as ``bank=`` in the config (after the teacher weights are in place)."""
        if self._bank_dir and self.bank is None:
            self.attach_bank(self._bank_dir)

    @property
    def selection(self) -> dict[str, float]:
        """The sparsity running in every block ({} without a bank)."""
        return self.switcher.selection if self.switcher else {}

    def _require_bank(self) -> BlockBank:
        if self.bank is None:
            self.load_configured_bank()
        if self.bank is None:
            raise RuntimeError('this LegoDNN model has no block bank yet: run the pipeline (tools/train.py on the '
                               'legodnn config) or pass bank=... / call attach_bank()')
        return self.bank

    def scale(self, latency_ms: float | None = None, memory_mb: float | None = None,
              solver: str = 'pulp') -> ScalingResult:
        """Chooses descendants for a budget and switches them in; returns the optimizer's result.

        An infeasible budget switches to the smallest configuration and says so in ``result.status``.
        """
        bank = self._require_bank()
        problem = problem_from_bank(bank, latency_scale=self.latency_scale)
        memory = None if memory_mb is None else memory_mb * 2 ** 20
        result = solve(problem, latency_ms=latency_ms, memory_bytes=memory, solver=solver)
        if result.status == 'infeasible':
            logger.warning('budget latency=%s ms, memory=%s MB is below the smallest configuration '
                           '(%.2f ms, %.2f MB): running that', latency_ms, memory_mb,
                           result.latency_ms['model'], result.memory_bytes['model'] / 2 ** 20)
        self.switcher.switch(result.choice())
        self.last_result = result
        return result

    def switch(self, selection: dict[str, float]) -> list[str]:
        """Switches to an explicit selection (block -> sparsity)."""
        self._require_bank()
        return self.switcher.switch(selection)
