"""``mmlego.LegoDNN``: wraps any OpenMMLab task model and makes it scalable with a block bank."""
from __future__ import annotations

import copy
import logging
import math
from pathlib import Path
from typing import Any

import torch
from mmengine.logging import print_log
from mmengine.model import BaseModel
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import DefaultScope

from ..block_bank import BlockBank
from ..block_bank.bank import MANIFEST, BankError
from ..block_switcher import BlockSwitcher
from ..latency_estimation import BlockTimer, LatencyCorrection, LatencyHeadroom, solve_under_headroom
from ..profiling.latency import check_thread_count
from ..registry import MODELS
from ..scaling_optimizer import ModelProblem, ScalingResult, solve
from ..scaling_optimizer.budget import is_relative, parse_budget, resolve_budget
from .latency_estimates import LatencyEstimates
from .tensor_path import TENSOR_PATHS, contiguous_inputs, image_samples

_OWN_PREFIXES = ('architecture.', 'data_preprocessor.')
#: What ``bank`` may hold in place of the run's work dir (filled in by ``mmlego.LegoRunner`` or the scaling hook).
WORK_DIR_PLACEHOLDER = '{work_dir}'


def resolve_bank_placeholder(model_cfg: Any, work_dir: str) -> Any:
    """``model_cfg`` with ``{work_dir}`` in its ``bank`` replaced (a copy; other configs are returned as given)."""
    if isinstance(model_cfg, dict) and isinstance(model_cfg.get('bank'), str) \
            and WORK_DIR_PLACEHOLDER in model_cfg['bank']:
        model_cfg = copy.copy(model_cfg)
        model_cfg['bank'] = model_cfg['bank'].replace(WORK_DIR_PLACEHOLDER, str(work_dir))
    return model_cfg


@MODELS.register_module()
class LegoDNN(LatencyEstimates, BaseModel):
    """A task model (the teacher) plus its block bank; forwards run the current composite.

    ``loss``/``predict``/``tensor`` modes are delegated to the architecture, whose blocks the switcher swaps in
    place, so the task package's own heads and post-processing run unchanged. A teacher checkpoint (keys without
    the ``architecture.`` prefix) loads directly through ``load_from``.

    Args:
        architecture: The teacher's model config (with ``_scope_``, e.g. ``'mmdet'``, or in the default scope).
        bank: A bank directory to load at construction (optional; the pipeline loops build one).
        tensor_path: The traced path, ``'tensor'``, ``'tensor_with_samples'`` or ``'extract_feat'``; None tries
            them in that order.
        latency_scale: Multiplies profiled latencies (a fixed, known speed ratio of this device to the profiling
            one); the online correction comes on top of it.
        latency_correction: Online latency estimation (LegoDNN's): every forward at the profiled input size is
            timed block by block (hooks, no extra runs) and the median ratio of measured to profiled time over the
            last ``window`` such forwards scales every latency estimate (forwards of other sizes, e.g. batched
            evaluation, are not comparable and are ignored). ``dict(window=5, min_observations=3)`` (the
            defaults), or False to use the profiles as they are.
        latency_threads: CPU intra-op threads (``torch.set_num_threads``) the latencies are profiled with (the
            pipeline's profiling stage, ``tools/profile_latency.py``) and the model is served with: set for the
            whole process when a bank is attached. None (default): as the process runs. A CPU latency is only valid
            for the thread count it was measured with; with every core busy in intra-op work, anything else on the
            machine stalls the forwards (on 2 vCPUs with 2 threads, a profile and a measurement seconds apart
            differed by up to 62%; with 1 thread mostly within 5%: ``bench/latency_phases.py``).
        latency_headroom: How far under a latency budget :meth:`scale` aims (it solves for ``budget / (1 +
            headroom)``, and for the budget itself when nothing fits under that): ``'auto'`` (default) learns it
            (:class:`mmlego.latency_estimation.LatencyHeadroom`) from how far the online correction's predictions
            of the configurations it switched in missed what their own forwards then showed (0 until three were
            seen, at most 0.1); a dict sets ``LatencyHeadroom``'s arguments, e.g. ``dict(spread_horizon_s=30)``
            adds the phase spread (how much slower than now the device ran in the last 30 s: for devices whose
            speed moves in phases longer than the correction's window); a fraction >= 0 fixes it (0: aim at the
            budget itself).
        init_cfg: Weight initialization (usually none: the teacher comes from ``load_from``).
        data_preprocessor: Used by the architecture if its own config has none (the Runner passes a config's
            top-level ``data_preprocessor`` here, as mmseg configs have one).
    """

    def __init__(self, architecture: dict | torch.nn.Module, bank: str | None = None,
                 tensor_path: str | None = None, latency_scale: float = 1.0,
                 latency_correction: dict | bool = True, latency_threads: int | None = None,
                 latency_headroom: float | str | dict = 'auto', init_cfg: dict | None = None,
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
        check_thread_count(latency_threads, 'latency_threads')
        self.latency_threads = latency_threads
        if latency_correction is True:
            latency_correction = {}
        self.correction = LatencyCorrection(**latency_correction) if latency_correction is not False else None
        self.headroom = (LatencyHeadroom(**latency_headroom) if isinstance(latency_headroom, dict)
                         else LatencyHeadroom(latency_headroom))
        self.bank: BlockBank | None = None
        self.switcher: BlockSwitcher | None = None
        self.timer: BlockTimer | None = None
        self.last_result: ScalingResult | None = None
        self._budget: dict[str, Any] | None = None  # the budget of the last scale(), for rescale_if_needed
        self._solved_load = 1.0
        self.last_headroom = 0.0  # the latency headroom the last scale() aimed under its budget with
        self._problem: ModelProblem | None = None  # the bank's problem, latencies x the options' own factors
        self._problem_factors: dict = {}  # the factors it was built with
        self._problem_observations = 0  # the correction's observation count then
        self._profiled_problem: ModelProblem | None = None  # the bank's problem, latencies as profiled
        self._unobserved_forwards: dict[str, int] = {}  # block -> forwards after its switch not learned from
        self._observed_timing = None  # the last block timing it learned from
        self._forwards_learned = 0  # forwards learned from whole since the last switch (for the headroom)
        self._bank_dir = bank
        self._register_load_state_dict_pre_hook(self._accept_teacher_checkpoint)

    # -- checkpoints -----------------------------------------------------------------------------------------
    @staticmethod
    def is_teacher_state_dict(keys) -> bool:
        """Whether checkpoint keys are the teacher's own (``backbone.*``), not this wrapper's (``architecture.*``)."""
        keys = list(keys)
        return bool(keys) and not any(key.startswith(_OWN_PREFIXES) for key in keys)

    @staticmethod
    def _accept_teacher_checkpoint(state_dict, prefix, *args) -> None:
        """Maps a teacher checkpoint's keys (``backbone.*``) onto ``architecture.*``."""
        keys = [key for key in state_dict if key.startswith(prefix)]
        if LegoDNN.is_teacher_state_dict(key[len(prefix):] for key in keys):
            for key in keys:
                state_dict[f'{prefix}architecture.{key[len(prefix):]}'] = state_dict.pop(key)

    def _apply(self, fn, *args, **kwargs):
        """``to`` / ``cuda`` / ``cpu``: the bank follows the model to its new device, the running selection stays.

        The teacher's own blocks go back into the model first (so the move takes them along, offloaded or not),
        then the switcher is rebuilt on the moved model and the selection switched in again from the bank.
        """
        switcher = self.__dict__.get('switcher')
        if switcher is None:
            return super()._apply(fn, *args, **kwargs)
        selection, bank = dict(switcher.selection), self.bank
        switcher.reset()
        switcher.detach()
        if self.timer is not None:
            self.timer.detach()
        self.switcher = self.timer = None
        result = super()._apply(fn, *args, **kwargs)
        self.attach_bank(bank)  # the new switcher moves the bank to the model's device
        if any(selection.values()):
            self.switch(selection)
        return result

    # -- forward ---------------------------------------------------------------------------------------------
    def forward(self, inputs: torch.Tensor, data_samples: Any = None, mode: str = 'tensor') -> Any:
        """Delegates to the architecture (which holds the current composite), the inputs made contiguous (the
        layout the latencies were profiled in: see :func:`mmlego.models.tensor_path.contiguous_inputs`). On the
        ``tensor_with_samples`` path (two-stage detectors), ``mode='tensor'`` without samples gets samples carrying
        the image shape, as profiling ran it (the architecture alone would need them)."""
        if self.timer is not None:
            self.timer.begin_forward()  # a forward that raised half-way leaves nothing in this one's timing
        inputs = contiguous_inputs(inputs)
        if mode == 'tensor' and data_samples is None and self.tensor_path == 'tensor_with_samples':
            data_samples = image_samples(inputs)
        return self.architecture(inputs, data_samples, mode=mode)

    # -- bank and scaling ------------------------------------------------------------------------------------
    def attach_bank(self, bank: BlockBank | str) -> BlockBank:
        """Loads (or takes) a bank of this teacher and prepares switching (all blocks at sparsity 0.0)."""
        if self.switcher is not None:
            self.switcher.reset()
            self.switcher.detach()
        if self.timer is not None:
            self.timer.detach()
        if not isinstance(bank, BlockBank):
            bank = BlockBank.load(bank, self.architecture)
        self.bank = bank
        self._problem = self._profiled_problem = None
        self.tensor_path = bank.meta.get('tensor_path', self.tensor_path)
        self.switcher = BlockSwitcher(self.architecture, bank)
        profiled_on = bank.profiles.device
        self._check_threads(bank)
        if profiled_on and profiled_on.split(':')[0] != self.switcher.device.type:
            print_log(f'the bank\'s latencies were measured on {profiled_on}, this model runs on '
                      f'{self.switcher.device}: its latency estimates start off (the online correction adapts them); '
                      f'measure them here with tools/profile_latency.py CONFIG BANK --device '
                      f'{self.switcher.device.type} --out table.json and put them in with --apply table.json BANK',
                      logger='current', level=logging.WARNING)
        self.timer = None
        self.headroom.reset()
        if self.correction is not None:
            self.correction.reset()
            if all(bank.profiles.get(spec.name, s).latency_ms is not None
                   for spec in bank.blocks for s in bank.sparsities):
                self.timer = BlockTimer(self.architecture, bank.blocks).attach()
                self.timer.listeners.append(self._observe_forward)
        return bank

    def _check_threads(self, bank: BlockBank) -> None:
        """Serves with ``latency_threads``; warns when a CPU bank was profiled with another thread count."""
        if self.switcher.device.type != 'cpu':
            return
        if self.latency_threads is not None:
            torch.set_num_threads(self.latency_threads)
        profiled = bank.profiles.num_threads
        if profiled is not None and profiled != torch.get_num_threads():
            print_log(f'the bank\'s latencies were measured with {profiled} CPU threads, this process runs '
                      f'{torch.get_num_threads()}: its latency estimates start off (the online correction adapts '
                      f'them); set model.latency_threads={profiled} in the config, or re-profile with this count '
                      f'(tools/profile_latency.py CONFIG BANK --threads {torch.get_num_threads()})',
                      logger='current', level=logging.WARNING)

    def fill_work_dir(self, work_dir: str) -> None:
        """Replaces ``{work_dir}`` in the configured ``bank`` with the run's work dir."""
        if isinstance(self._bank_dir, str):
            self._bank_dir = self._bank_dir.replace(WORK_DIR_PLACEHOLDER, str(work_dir))

    def load_configured_bank(self) -> None:
        """Loads the bank given as ``bank=`` in the config (after the teacher weights are in place).

        Raises:
            BankError: ``bank`` still holds ``{work_dir}`` (the model was not built by ``mmlego.LegoRunner``), or
                the directory holds no bank yet, or it is not this teacher's.
        """
        if not self._bank_dir or self.bank is not None:
            return
        if WORK_DIR_PLACEHOLDER in self._bank_dir:
            raise BankError(f'model.bank={self._bank_dir!r} names the run\'s work dir, which only mmlego.LegoRunner '
                            "fills in: set runner_type='mmlego.LegoRunner' in the config, or give the bank's path")
        if not (Path(self._bank_dir) / MANIFEST).is_file():
            raise BankError(f'model.bank {self._bank_dir} holds no block bank yet: build it with tools/train.py on '
                            'this legodnn config (the pipeline writes work_dir/bank), or pass the bank directory')
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

    # -- scaling ---------------------------------------------------------------------------------------------
    @property
    def budget(self) -> dict[str, float | None] | None:
        """The absolute budget of the last :meth:`scale` (``latency_ms``, ``memory_mb``; shares resolved)."""
        return None if self._budget is None else {k: self._budget[k] for k in ('latency_ms', 'memory_mb')}

    def budget_range(self) -> dict[str, float]:
        """The smallest and largest achievable estimates (latency with the online correction), e.g. to sweep.

        Returns:
            :func:`mmlego.scaling_optimizer.budget_range` of this model's bank.
        """
        from ..scaling_optimizer import budget_range
        return budget_range(self.problem())

    def full_model_estimate(self) -> dict[str, float]:
        """The teacher's (every block at sparsity 0.0) estimates, latency as profiled times ``latency_scale``."""
        bank = self._require_bank()
        return self.estimate({spec.name: 0.0 for spec in bank.blocks}, corrected=False)

    def absolute_budget(self, budget: dict[str, Any]) -> dict[str, float | None]:
        """``budget`` parsed, shares of the full model (``'60%'``) resolved against :meth:`full_model_estimate`."""
        budget = parse_budget(budget)
        if is_relative(budget):
            full = self.full_model_estimate()
            budget = resolve_budget(budget, full['latency_ms'], full['memory_bytes'] / 2 ** 20)
        return budget

    def scale(self, latency_ms: float | str | None = None, memory_mb: float | str | None = None,
              solver: str = 'exact') -> ScalingResult:
        """Chooses descendants for a budget and switches them in; returns the optimizer's result.

        Latencies are the profiled ones times ``latency_scale`` times the online correction (:meth:`problem`).
        A latency budget is aimed at under ``latency_headroom`` (:attr:`last_headroom` says with which; the budget
        itself when nothing fits under it). An infeasible budget switches to the smallest configuration and says
        so in ``result.status``. The budget is remembered for :meth:`rescale_if_needed`.

        Args:
            latency_ms: Latency limit: ms, a string with a unit (``'30ms'``), a share of the full model (``'60%'``,
                of its profiled latency times ``latency_scale``) or None (no limit).
            memory_mb: Memory limit (weight bytes): MB, ``'20MB'``, ``'60%'`` or None.
            solver: ``'exact'`` (default), ``'pulp'`` (LegoDNN's ILP through CBC) or ``'brute_force'``.

        Raises:
            ValueError: A limit that is not one (negative, NaN, boolean, unknown unit); see
                :mod:`mmlego.scaling_optimizer.budget`.
        """
        self._require_bank()
        budget = self.absolute_budget(dict(latency_ms=latency_ms, memory_mb=memory_mb))
        latency_ms, memory_mb = budget['latency_ms'], budget['memory_mb']
        memory = None if memory_mb is None else memory_mb * 2 ** 20
        result, headroom = solve_under_headroom(lambda target: self._solve(target, memory, solver), latency_ms,
                                                self.headroom.value)
        if result.status == 'infeasible':
            print_log(f'budget latency={latency_ms} ms, memory={memory_mb} MB is below the smallest configuration '
                      f'({result.latency_ms["model"]:.2f} ms, {result.memory_bytes["model"] / 2 ** 20:.2f} MB): '
                      'running that', logger='current', level=logging.WARNING)
        if self.switch(result.choice()) and self.correction is not None:
            self.headroom.predicted(result.latency_ms['model'])
        self.last_result = result
        self.last_headroom = headroom
        self._budget = dict(latency_ms=latency_ms, memory_mb=memory_mb, solver=solver)
        self._solved_load = self.latency_load
        return result

    def _solve(self, latency_ms: float | None, memory: float | None, solver: str) -> ScalingResult:
        """Solves the cached relative problem for a latency limit; the result's latencies are the corrected
        estimates (under the factors of now when the cache is behind the correction)."""
        # The cached problem leaves out the load, latency_scale and the frame's factor: they move the budget
        # instead, and the result's latencies are moved back.
        scale, offset = self._latency_factor(corrected=True), self._frame_offset_ms()  # the frame's: in every config
        relative_budget = None if latency_ms is None else max(0.0, latency_ms / scale - offset)
        result = solve(self._relative_problem(), latency_ms=relative_budget, memory_bytes=memory, solver=solver)
        corrected = None
        if not self._problem_is_current():  # the answer under the options' factors of now, not as cached
            corrected = self.estimate(result.choice())['latency_ms']
            if latency_ms is not None and result.status != 'infeasible' and corrected > latency_ms * (1 + 1e-9):
                result = solve(self._relative_problem(rebuild=True), latency_ms=relative_budget,
                               memory_bytes=memory, solver=solver)
                corrected = None  # solved on the factors of now
        result.latency_ms = {name: (value + offset) * scale if corrected is None else corrected
                             for name, value in result.latency_ms.items()}
        return result

    def rescale_if_needed(self, tolerance: float = 0.02, drift: float = 0.1) -> ScalingResult | None:
        """Re-solves the last budget when the online latency correction made the running choice wrong.

        That is when the corrected estimate of the running configuration exceeds the latency budget by more than
        ``tolerance`` (relative), or when the correction's load factor moved by more than ``drift`` since the last
        solve (the device got faster: a larger configuration may fit again; what a new configuration's options
        turn out to cost does not move it back up, so configurations do not alternate). Cheap when nothing
        changed (no solve).

        Returns:
            The new result, or None if the running configuration still holds (or no latency budget was set).
        """
        if self._budget is None or self._budget['latency_ms'] is None or self.correction is None:
            return None
        over = self.estimate()['latency_ms'] > self._budget['latency_ms'] * (1 + tolerance)
        moved = not math.isclose(self.latency_load, self._solved_load, rel_tol=drift)
        infeasible_already = self.last_result is not None and self.last_result.status == 'infeasible'
        if not moved and (not over or infeasible_already):  # an infeasible budget already runs the smallest
            return None
        budget = dict(self._budget)
        return self.scale(latency_ms=budget['latency_ms'], memory_mb=budget['memory_mb'], solver=budget['solver'])

    def switch(self, selection: dict[str, float]) -> list[str]:
        """Switches to an explicit selection (block -> sparsity)."""
        self._require_bank()
        changed = self.switcher.switch(selection)
        self._unobserved_forwards.update({name: self.FORWARDS_UNOBSERVED_AFTER_SWITCH for name in changed})
        if changed:
            self._forwards_learned = 0
            self.headroom.discard()  # scale() predicts the configuration it switched to; a switch by hand has none
        if changed and self.timer is not None:
            self.timer.attach(changed)  # the hooks follow the changed blocks' new member modules
        return changed
