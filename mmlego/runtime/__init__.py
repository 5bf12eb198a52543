"""The online half of LegoDNN, for serving: load, solve, switch, profile latency; several models under one budget.

Everything here imports without the offline stack: no retraining, no accuracy profiling, no pulp, no torch-pruning
(checked by ``tests/test_lean_runtime.py``). A bank is loaded onto its teacher with :func:`init_lego_model`, an
exported configuration without bank or teacher with :func:`load_configuration` (a bare teacher takes its bank
with :meth:`BlockBank.load`); :func:`scale_model` (one model) and
:class:`MultiModelRuntime` / :func:`scale_models` (several under a shared budget) solve with the exact solver and
switch only the changed blocks; :func:`profile_latency` and :class:`LatencyTable` measure a bank's latencies on the
device it serves on.
"""
from ..apis.init import init_lego_model, scale_model, scale_models
from ..block_bank import BlockBank
from ..block_switcher import BlockSwitcher
from ..export.artifact import load_configuration
from ..profiling.cost import LatencyTable
from ..profiling.latency import profile_latency
from ..scaling_optimizer import solve
from .multi_model import MultiModelRuntime, model_names

__all__ = ['BlockBank', 'BlockSwitcher', 'LatencyTable', 'MultiModelRuntime', 'init_lego_model', 'load_configuration',
           'model_names', 'profile_latency', 'scale_model', 'scale_models', 'solve']
