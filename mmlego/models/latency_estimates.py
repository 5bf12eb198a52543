"""The latency estimates of :class:`mmlego.LegoDNN`: the bank's profiles with the online correction.

The wrapper's block timer feeds every served forward at the profiled input size to its
:class:`~mmlego.latency_estimation.LatencyCorrection`; the scaling problem the optimizer sees carries each
descendant's own factor (cached, rebuilt when one moves by more than ``REBUILD_TOLERANCE`` or an answer does not fit
under the factors of now), while the load, ``latency_scale`` and the frame's factor move the latency budget.
:meth:`LatencyEstimates.measure_latency_ms` is the measurement the estimates are checked against (timed forwards, not
the estimate's arithmetic).
"""
from __future__ import annotations

import math

import torch

from ..block_bank import problem_from_bank
from ..latency_estimation import BlockTiming
from ..scaling_optimizer import ModelProblem
from .tensor_path import TENSOR_PATHS, contiguous_inputs


class LatencyEstimates:
    """Latency estimation for :class:`mmlego.LegoDNN` (a mixin: it uses the wrapper's bank, switcher, timer,
    correction and ``latency_scale``)."""

    #: An option's own online latency factor must move by more than this (relative) before the cached scaling
    #: problem is rebuilt (and the exact solver prepares it again, milliseconds). Each factor is a median of a few
    #: noisy forwards and every newly served option moves from its prior: at 2% and at 5% most budget changes in
    #: serving re-prepared (``bench/end_to_end.py``). Estimates, :meth:`problem` and the check of every answer of
    #: :meth:`scale` use the factors of now, so a stale cached problem costs optimality, never the budget.
    REBUILD_TOLERANCE = 0.25
    #: Forwards after a switch whose timings of the blocks it changed the online correction does not learn from (the
    #: other blocks' still teach it the load; the frame waits for a forward seen whole): the
    #: first use of a descendant in a process pays one-time costs a steady configuration never pays again (the first
    #: forward 1.09-1.25x a steady one in the median, ``bench/end_to_end.py``); the second is skipped as a margin.
    FORWARDS_UNOBSERVED_AFTER_SWITCH = 2

    @property
    def latency_ratio(self) -> float:
        """Measured / profiled latency of the running configuration on the forwards served lately (1.0 without
        online correction); options of other configurations have factors of their own once they ran
        (:class:`mmlego.latency_estimation.LatencyCorrection`)."""
        return self.correction.ratio if self.correction is not None else 1.0

    @property
    def latency_load(self) -> float:
        """The online correction's load factor: how much slower the device runs now than when the options' own
        factors were learned (1.0 without online correction)."""
        return self.correction.load if self.correction is not None else 1.0

    def _observe_forward(self, timing: BlockTiming) -> None:
        # Only forwards at the profiled input size describe the profiled latencies: a batch of 8 costs less
        # than 8 forwards of one (and a larger image more than its pixel count says), so no rescaling is sound.
        if timing.input_numel != self.timer.reference_numel:
            return
        # Blocks switched in lately are left out (their one-time costs); the others keep teaching the load.
        skipped = {name for name, count in self._unobserved_forwards.items() if count > 0}
        self._unobserved_forwards = {name: count - 1 for name, count in self._unobserved_forwards.items() if count > 1}
        self._observed_timing = None if skipped else timing  # the frame only from forwards seen whole
        profiles, selection = self.bank.profiles, self.switcher.selection
        self.correction.observe_blocks({
            (name, selection[name]): (ms, (profiles.get(name, selection[name]).latency_ms or 0.0) * self.latency_scale)
            for name, ms in timing.ms.items() if name not in skipped})
        if self.correction.observations >= self.correction.min_observations:
            self.headroom.observe_load(self.correction.load)  # the phase spread's
        if not skipped and self.headroom.pending:
            self._forwards_learned += 1
            if self._forwards_learned >= self.correction.min_observations:  # the new options' own factors known
                self.headroom.learned(self.estimate()['latency_ms'])

    def _factors(self) -> dict[tuple[str, float], float]:
        """Every option's own online factor now ({} before any observation)."""
        if self.correction is None or not self.correction.observations:
            return {}
        bank = self._require_bank()
        return self.correction.relatives((spec.name, s) for spec in bank.blocks for s in bank.sparsities)

    def _relative_problem(self, rebuild: bool = False) -> ModelProblem:
        """The problem the solver path uses: latencies as profiled times each option's own online factor (no
        load, no ``latency_scale``, no frame factor). Cached, so the 'exact' solver prepares it once: rebuilt when
        ``rebuild`` or a factor moved by more than ``REBUILD_TOLERANCE`` since (:meth:`scale` checks its answer
        against the factors of now and rebuilds when it does not fit under them)."""
        factors, built = self._factors(), self._problem_factors
        if rebuild or self._problem is None or factors.keys() != built.keys() or any(
                not math.isclose(factor, built[key], rel_tol=self.REBUILD_TOLERANCE)
                for key, factor in factors.items()):
            # A new object, not an edited one: the exact solver caches what it prepares per problem object.
            self._problem, self._problem_factors = problem_from_bank(self.bank, option_factors=factors), factors
            self._problem_observations = self.correction.observations if self.correction is not None else 0
        return self._problem

    def _problem_is_current(self) -> bool:
        """Whether the cached problem carries the factors of now (no forward was learned from since it was built)."""
        return self.correction is None or self.correction.observations == self._problem_observations

    def _profiled(self) -> ModelProblem:
        """The bank's problem as profiled (no factors, no scale; cached)."""
        if self._profiled_problem is None:
            self._profiled_problem = problem_from_bank(self._require_bank())
        return self._profiled_problem

    def _latency_factor(self, corrected: bool) -> float:
        return self.latency_scale * (self.latency_load if corrected else 1.0)

    def _observe_frame(self, forward_ms: float, timing: BlockTiming | None) -> None:
        """Teaches the correction the frame's time in a timed tensor-path forward: the forward minus its blocks,
        each as the estimate counts it (its timing times its sparsity's calibration)."""
        if timing is None or timing is not self._observed_timing:  # its blocks were not learned from either
            return
        profiles, selection = self.bank.profiles, self.switcher.selection
        blocks_ms = math.fsum(ms * profiles.calibration(selection[name]) for name, ms in timing.ms.items())
        # The profiled frame (teacher minus its blocks) does not depend on the options' factors: read it from the
        # uncorrected problem, so observing a forward never rebuilds the cached one.
        self.correction.observe_frame(forward_ms - blocks_ms, self._profiled().frame_latency_ms * self.latency_scale)

    def _frame_factor(self) -> float:
        """The frame's own factor over the load: as measured in timed tensor-path forwards
        (:meth:`measure_latency_ms`) once there were enough, else taken to run like the blocks served last
        (LegoDNN's one ratio for the whole model)."""
        if self.correction is None or not self.correction.observations:
            return 1.0
        frame = self.correction.frame
        return frame if frame is not None else self.latency_ratio / self.latency_load

    def _frame_offset_ms(self) -> float:
        """What the frame's own factor adds to the relative problem's latencies (before load and scale)."""
        return self._profiled().frame_latency_ms * (self._frame_factor() - 1.0)

    def problem(self, name: str = 'model', weight: float = 1.0, corrected: bool = True) -> ModelProblem:
        """This model's scaling problem: latencies as profiled times ``latency_scale`` and, unless
        ``corrected=False``, the online correction of now (each option by the load times its own factor, see
        :class:`mmlego.latency_estimation.LatencyCorrection`; the frame by the load times its own factor, see
        :meth:`_frame_factor`): what :meth:`estimate` says of every selection.

        Args:
            name: The model's name in the problem (unique among problems solved together).
            weight: Its objective weight in a shared budget.
            corrected: Whether to apply the online correction.
        """
        if not corrected:
            return problem_from_bank(self._require_bank(), name=name, weight=weight, latency_scale=self.latency_scale)
        return problem_from_bank(self._require_bank(), name=name, weight=weight,
                                 latency_scale=self._latency_factor(True), option_factors=self._factors(),
                                 frame_factor=self._frame_factor())

    def estimate(self, selection: dict[str, float] | None = None, corrected: bool = True) -> dict[str, float]:
        """The estimates of a selection (default: the running one).

        Returns:
            ``metric``, ``latency_ms`` (with the online correction unless ``corrected=False``) and ``memory_bytes``
            (the configuration's weight bytes: frame + chosen descendants).
        """
        self._require_bank()
        selection = self.switcher.validate(selection or {})
        profiled = self._profiled()
        estimate = dict(profiled.estimate(selection))
        if corrected and self.correction is not None and self.correction.observations:
            factors = self.correction.relatives(selection.items())
            latency = profiled.frame_latency_ms * self._frame_factor()
            for name, sparsity in selection.items():
                option = next(o for o in profiled.blocks[name] if o.sparsity == sparsity)
                latency += option.latency_ms * factors[(name, sparsity)]
            estimate['latency_ms'] = latency
        estimate['latency_ms'] *= self._latency_factor(corrected)
        return estimate

    def measure_latency_ms(self, inputs: torch.Tensor, warmup: int = 3, repeats: int = 10) -> float:
        """Median wall time (ms) of one tensor-path forward of the running configuration on ``inputs``: the
        measurement the latency estimates are checked against (eval mode meanwhile, no gradients).

        Like every served forward, these feed the online correction; being whole tensor-path forwards (what the
        profiles describe), they also teach it the frame's time (the forward minus its blocks)."""
        from ..profiling.cost import measure_latency
        architecture = self.architecture
        device = next(architecture.parameters()).device
        inputs = contiguous_inputs(inputs.to(device))
        path = (self.bank.meta.get('tensor_path') if self.bank is not None else None) or self.tensor_path or 'tensor'
        forward = TENSOR_PATHS[path]
        was_training = architecture.training
        architecture.eval()
        timer, seen = self.timer, [None]

        def run() -> None:
            seen[0] = timer.last if timer is not None else None
            forward(architecture, inputs)

        def observe(forward_ms: float) -> None:
            if timer is None or self.correction is None:
                return
            timer.flush()  # CUDA: the block events of this forward
            if timer.last is not seen[0]:  # every block of this forward was timed
                self._observe_frame(forward_ms, timer.last)

        try:
            return measure_latency(run, device, warmup, repeats, after=observe)
        finally:
            architecture.train(was_training)
