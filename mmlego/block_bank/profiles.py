"""Profiles stored with a bank, and their translation into the scaling optimizer's problem."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..scaling_optimizer import BlockOption, ModelProblem

if TYPE_CHECKING:  # pragma: no cover
    from .bank import BlockBank


def sparsity_key(sparsity: float) -> str:
    """The text form of a sparsity in files: short (``'0.2'``, ``'0'``) and parsing back to the same float."""
    text = f'{sparsity:g}'
    return text if float(text) == sparsity else repr(float(sparsity))


@dataclass
class DescendantProfile:
    """Measured properties of one descendant (None: not profiled yet).

    Attributes:
        accuracy_drop: Estimated drop of the task metric when this descendant replaces its block: the denoised
            drop (0.0 within the noise of zero, non-decreasing in sparsity per block), which the optimizer uses.
        memory_bytes: Bytes of its parameters and buffers.
        flops: Floating-point operations of one forward on the profiling input.
        latency_ms: Median latency of the block inside the running model, on the profiling device.
        latency_drop: ``(T_original - T) / T_original`` (portable across devices of one kind).
        accuracy_drop_raw: The raw drop: mean over the reference composites of the measured metric differences
            (see :func:`mmlego.profiling.profile_accuracy`).
    """

    accuracy_drop: float | None = None
    memory_bytes: int | None = None
    flops: int | None = None
    latency_ms: float | None = None
    latency_drop: float | None = None
    accuracy_drop_raw: float | None = None


@dataclass
class BankProfiles:
    """Model-level numbers plus one :class:`DescendantProfile` per (block, sparsity).

    Attributes:
        metric_name: Name of the task metric (e.g. ``coco/bbox_mAP_50``).
        teacher_metric: The teacher's metric on the profiling data.
        accuracy_noise: Estimated standard error of one raw accuracy drop (metric units); drops within it of
            zero were denoised to 0.0.
        accuracy_interaction: Compound-damage coefficient ``c`` of the metric estimate, ``teacher - (D + c D^2)``
            with ``D`` the sum of the chosen drops (:class:`mmlego.scaling_optimizer.ModelProblem`): least-squares
            fit to the reference composites of accuracy profiling, >= 0; None (additive, banks before it) is 0.
        model_memory_bytes: Parameters and buffers of the whole teacher.
        model_latency_ms: Median latency of the whole teacher's forward.
        model_flops: FLOPs of the teacher's traced forward.
        device: Where latencies were measured (e.g. ``cpu``, ``cuda:0``).
        num_threads: The CPU intra-op threads they were measured with (``torch.get_num_threads()``; None on a GPU
            or unknown). A CPU model served with another thread count runs at another speed.
        latency_input_shape: Input shape of the latency measurements.
        latency_method: How descendant latencies were measured (``'in-model'``: inside the running composite).
        composite_latency_ms: Sparsity (as text) -> measured latency of the composite with every block at it.
        latency_check: Sparsity (as text) -> relative error of frame + blocks (as measured, uncalibrated) against
            that composite.
        latency_calibration: Sparsity (as text) -> factor on the in-model block latencies at that sparsity that
            makes frame + blocks equal the measured all-at-that-sparsity composite, where they missed it by more than
            the timing noise (1.0 elsewhere and at 0.0): pruned blocks can change the time of the frame around them,
            which their own in-model timing misses. Mixed configurations are estimated with each block's factor;
            the raw timings stay in ``latency_ms`` (the online correction compares served block timings with them).
        descendants: Block -> sparsity -> profile.
    """

    metric_name: str | None = None
    teacher_metric: float | None = None
    accuracy_noise: float | None = None
    accuracy_interaction: float | None = None
    model_memory_bytes: int | None = None
    model_latency_ms: float | None = None
    model_flops: int | None = None
    device: str | None = None
    num_threads: int | None = None
    latency_input_shape: list[int] | None = None
    latency_method: str | None = None
    composite_latency_ms: dict[str, float] | None = None
    latency_check: dict[str, float] | None = None
    latency_calibration: dict[str, float] | None = None
    descendants: dict[str, dict[float, DescendantProfile]] = field(default_factory=dict)

    def get(self, block: str, sparsity: float) -> DescendantProfile:
        """The profile of one descendant (created empty if missing)."""
        return self.descendants.setdefault(block, {}).setdefault(float(sparsity), DescendantProfile())

    def calibration(self, sparsity: float) -> float:
        """The latency calibration factor of block latencies at ``sparsity`` (1.0 where none was fitted)."""
        return float((self.latency_calibration or {}).get(sparsity_key(sparsity), 1.0))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (sparsities as strings)."""
        data = {key: value for key, value in asdict(self).items() if key != 'descendants'}
        data['descendants'] = {block: {sparsity_key(s): asdict(p) for s, p in by_s.items()}
                               for block, by_s in self.descendants.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> 'BankProfiles':
        """Inverse of :meth:`to_dict`."""
        fields = {key: data.get(key) for key in cls.__dataclass_fields__ if key != 'descendants'}
        profiles = cls(**fields)
        for block, by_s in (data.get('descendants') or {}).items():
            for key, values in by_s.items():
                profiles.descendants.setdefault(block, {})[float(key)] = DescendantProfile(**values)
        return profiles


def problem_from_bank(bank: 'BlockBank', name: str = 'model', weight: float = 1.0, latency_scale: float = 1.0,
                      option_factors: Mapping[tuple[str, float], float] | None = None,
                      frame_factor: float = 1.0) -> ModelProblem:
    """The scaling problem of one model from its bank's profiles.

    The frame (everything outside blocks) costs the teacher's total minus its original blocks; a descendant's
    latency is its in-model latency times the calibration factor of its sparsity
    (:attr:`BankProfiles.latency_calibration`).

    Args:
        bank: A fully profiled bank.
        name: The model's name in a (shared) problem.
        weight: Objective weight in a multi-model problem.
        latency_scale: Multiplies every latency (LegoDNN's online estimation: the ratio of the latency measured
            on the device now to the profiled one).
        option_factors: ``(block, sparsity)`` -> a further factor on that descendant's latency (the online
            correction's own factor of each descendant; missing: 1.0).
        frame_factor: A further factor on the frame's latency.

    Raises:
        ValueError: A profile is missing (names the stage that fills it).
    """
    return problem_from_profiles(bank.profiles, [spec.name for spec in bank.blocks], bank.sparsities, name=name,
                                 weight=weight, latency_scale=latency_scale, option_factors=option_factors,
                                 frame_factor=frame_factor)


def problem_from_profiles(profiles: BankProfiles, blocks: Sequence[str], sparsities: Sequence[float],
                          name: str = 'model', weight: float = 1.0, latency_scale: float = 1.0,
                          option_factors: Mapping[tuple[str, float], float] | None = None,
                          frame_factor: float = 1.0) -> ModelProblem:
    """The scaling problem from profiles alone (no bank, no model): see :func:`problem_from_bank`.

    Args:
        profiles: Fully filled profiles (e.g. ``BankProfiles.from_dict(manifest['profiles'])``).
        blocks: Block names in the bank's order.
        sparsities: The bank's sparsities.

    Raises:
        ValueError: A profile is missing (names the stage that fills it).
    """
    missing = [what for what, value in (('teacher metric (accuracy profiling)', profiles.teacher_metric),
                                        ('model memory (cost profiling)', profiles.model_memory_bytes),
                                        ('model latency (latency profiling)', profiles.model_latency_ms))
               if value is None]
    options_of: dict[str, list[BlockOption]] = {}
    block_latency = block_memory = 0.0
    for block in blocks:
        options = []
        for sparsity in sparsities:
            profile = profiles.get(block, sparsity)
            if None in (profile.accuracy_drop, profile.memory_bytes, profile.latency_ms):
                missing.append(f'{block}@{sparsity:g}')
                continue
            options.append(BlockOption(sparsity=sparsity, accuracy_drop=float(profile.accuracy_drop),
                                       latency_ms=float(profile.latency_ms) * profiles.calibration(sparsity)
                                       * latency_scale * (option_factors or {}).get((block, sparsity), 1.0),
                                       memory_bytes=int(profile.memory_bytes)))
        options_of[block] = options
        original = profiles.get(block, 0.0)
        block_latency += (original.latency_ms or 0.0) * latency_scale
        block_memory += original.memory_bytes or 0
    if missing:
        raise ValueError(f'the bank is not fully profiled, missing: {", ".join(missing[:6])}'
                         f'{" ..." if len(missing) > 6 else ""}; run accuracy and cost profiling first')
    return ModelProblem(name=name, teacher_metric=float(profiles.teacher_metric), blocks=options_of,
                        drop_interaction=float(profiles.accuracy_interaction or 0.0),
                        frame_latency_ms=max(0.0, profiles.model_latency_ms * latency_scale - block_latency)
                        * frame_factor,
                        frame_memory_bytes=max(0, int(profiles.model_memory_bytes - block_memory)), weight=weight)
