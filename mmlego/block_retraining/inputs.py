"""What descendants are fed in retraining: their block's input in the teacher, or in the composites.

LegoDNN trains every descendant on its block's input in the *teacher* (:class:`FeatureCapture`). A configuration
runs descendants after descendants, so each one meets inputs already off the teacher's by the errors upstream, and
those errors stack (SimpleBaseline's all-at-0.8 configuration lost 0.10 AP after 6 retraining epochs and 0.48 after 2,
where no block alone loses more than 0.06: README, "How long to retrain"). :class:`CompositeInputs` runs the all-at-``s`` composite of the teacher (every block at its descendant
of sparsity ``s``) on the same batch and lets each descendant of sparsity ``s`` learn its block's *teacher* output
from the input it gets there. The input is detached at every block, so each descendant still learns alone (no
gradient crosses blocks) and one composite forward per sparsity serves every block: LegoDNN's economics, plus the
frame's forward once per sparsity.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from ..block_extraction import BlockSpec
from ..block_extraction.block_module import block_module_of, put_block
from ..descendant_generation import Descendant

INPUTS = ('teacher', 'composite', 'mixed')
TeacherForward = Callable[[nn.Module, Any], Any]


class RetrainingError(RuntimeError):
    """A descendant's training step failed; the run stops (state of the last completed epoch is kept)."""


class FeatureCapture:
    """Forward hooks on the teacher that record each block's input and output for one forward.

    Args:
        model: The teacher.
        blocks: Blocks to capture.
    """

    def __init__(self, model: nn.Module, blocks: Sequence[BlockSpec]) -> None:
        self.model = model
        self.blocks = list(blocks)
        self.features: dict[str, list[torch.Tensor]] = {}
        self.outputs: Any = None

    @contextlib.contextmanager
    def capturing(self) -> Iterator[dict[str, list[torch.Tensor]]]:
        """Hooks installed inside the context; ``features[name] == [input, output]`` after a forward (a block the
        model runs several times: every call's input and output, concatenated along the batch dimension)."""
        self.features = {}
        calls: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        handles = []
        for spec in self.blocks:
            first = self.model.get_submodule(spec.members[0])
            last = self.model.get_submodule(spec.members[-1])

            # Copies: the teacher may later modify these tensors in place (e.g. an in-place ReLU after a block).
            def pre_hook(module, args, name=spec.name):
                calls.setdefault(name, ([], []))[0].append(args[0].detach().clone())

            def post_hook(module, args, output, name=spec.name):
                calls.setdefault(name, ([], []))[1].append(output.detach().clone())

            handles.append(first.register_forward_pre_hook(pre_hook))
            handles.append(last.register_forward_hook(post_hook))
        try:
            yield self.features
        finally:
            for handle in handles:
                handle.remove()
            for name, (inputs, outputs) in calls.items():
                if inputs and len(inputs) == len(outputs):
                    self.features[name] = [join_calls(inputs), join_calls(outputs)]

    def run(self, teacher_forward: TeacherForward, batch: Any) -> dict[str, list[torch.Tensor]]:
        """One teacher forward on ``batch``; returns block name -> [input, output]."""
        with self.capturing() as features, torch.no_grad():
            self.outputs = teacher_forward(self.model, batch)  # the model's outputs, for losses through the model
        missing = [spec.name for spec in self.blocks if len(features.get(spec.name, ())) != 2]
        if missing:
            raise RetrainingError(f'the teacher forward did not run blocks {missing}; teacher_forward must run '
                                  'the same tensor path the blocks were extracted from')
        return dict(features)


def join_calls(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """One call's tensor, or the calls' tensors of a block run several times per forward concatenated along the
    batch dimension (a descendant maps each sample alone, so it learns all calls at once)."""
    return tensors[0] if len(tensors) == 1 else torch.cat(list(tensors), 0)


class CompositeInputs:
    """A copy of the teacher whose blocks are switched to one sparsity at a time, run to feed descendants.

    Args:
        teacher: The frozen teacher (copied once; the copy's own weights never train).
        descendants: Block name -> sparsity -> descendant; their modules are put into the copy (not copied), so
            what trains there is the descendant itself.
    """

    def __init__(self, teacher: nn.Module, descendants: Mapping[str, Mapping[float, Descendant]]) -> None:
        self.model = copy.deepcopy(teacher).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.descendants = descendants
        # The copy's own (frozen) blocks, for configurations that run a block at sparsity 0.0 untrained.
        self.originals = {name: block_module_of(self.model, next(iter(by_s.values())).spec, copy_modules=False)
                          for name, by_s in descendants.items()}
        self.modules: dict[str, nn.Module] = {}  # block name -> the module the copy runs now

    @contextlib.contextmanager
    def _capturing(self, modules: Mapping[str, nn.Module], outputs: dict[str, torch.Tensor],
                   detach: bool = True) -> Iterator[None]:
        handles = []
        calls: dict[str, list[torch.Tensor]] = {}
        for name, block in modules.items():
            def detach_input(module, args):  # each descendant learns alone: no gradient into the blocks upstream
                return (args[0].detach(),) + tuple(args[1:])

            def record_output(module, args, output, name=name):
                calls.setdefault(name, []).append(output)
                return output.clone()  # the frame may modify its input in place; the loss keeps the original

            if detach:
                handles.append(block.layers[0].register_forward_pre_hook(detach_input))
            handles.append(block.layers[-1].register_forward_hook(record_output))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
            outputs.update({name: join_calls(tensors) for name, tensors in calls.items()})

    def configure(self, config: Mapping[str, float], originals_at_zero: bool = True) -> dict[str, nn.Module]:
        """Puts block ``name`` at its descendant of sparsity ``config[name]`` into the copy (at 0.0 the copy's own
        frozen block unless ``originals_at_zero`` is False); returns block name -> the module put there."""
        modules = {}
        for name, sparsity in config.items():
            by_sparsity = self.descendants[name]
            if sparsity not in by_sparsity:
                raise RetrainingError(f'block {name} has no descendant of sparsity {sparsity:g} '
                                      f'(it has {sorted(by_sparsity)})')
            modules[name] = self.originals[name] if sparsity == 0 and originals_at_zero \
                else by_sparsity[sparsity].module
            put_block(self.model, modules[name])
        self.modules.update(modules)
        return modules

    def run(self, config: Mapping[str, float], forward: TeacherForward, batch: Any, detach: bool = True,
            originals_at_zero: bool = True) -> tuple[dict[str, torch.Tensor], Any]:
        """Runs the composite of ``config`` (block -> sparsity) on ``batch``; returns block name -> its output there,
        and the model's outputs. ``detach``: no gradient crosses blocks (each descendant learns alone)."""
        modules = self.configure(config, originals_at_zero)
        outputs: dict[str, torch.Tensor] = {}
        with self._capturing(modules, outputs, detach):
            result = forward(self.model, batch)
        missing = sorted(set(modules) - set(outputs))
        if missing:
            raise RetrainingError(f'the composite forward did not run blocks {missing}; teacher_forward must run '
                                  'the tensor path the blocks were extracted from')
        return outputs, result

    def outputs(self, sparsity: float, forward: TeacherForward, batch: Any) -> dict[str, torch.Tensor]:
        """Runs the all-at-``sparsity`` composite on ``batch`` (with gradients, if enabled, into the descendants
        only); returns block name -> the output of its descendant there."""
        return self.run(dict.fromkeys(self.descendants, sparsity), forward, batch, originals_at_zero=False)[0]


def check_inputs(inputs: str) -> str:
    """Validates ``RetrainingConfig.inputs``."""
    if inputs not in INPUTS:
        raise ValueError(f'unknown retraining inputs {inputs!r}; choose one of {INPUTS} (teacher: LegoDNN, each '
                         "descendant on its block's input in the teacher; composite: on the input the descendants "
                         'upstream at its sparsity give it; mixed: the two alternating by batch)')
    return inputs


def uses_composite(inputs: str, batch_index: int) -> bool:
    """Whether batch ``batch_index`` of an epoch trains on composite inputs (``'mixed'``: the odd batches)."""
    return inputs == 'composite' or (inputs == 'mixed' and batch_index % 2 == 1)


def descendant_optimizer(module: nn.Module, lr: float, weight_decay: float) -> torch.optim.Adam:
    """The Adam optimizer of one descendant: fused where torch has the kernel (float parameters on CPU or CUDA).

    A bank retrains dozens of small descendants per batch; the unfused Adam steps each of their tensors with
    several small ops (on CPU torch does not default to ``foreach``), a few percent of a retraining step at a
    quarter width (B3, ``bench/offline_cost.py``). Fused and unfused state dicts load into each other.
    """
    params = list(module.parameters())  # all of them, as the saved optimizer states index them
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ('cpu', 'cuda') for p in params)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused or None)
