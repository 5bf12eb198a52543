"""How ``mmlego.OnlineScalingHook`` measures a running configuration, apart from the estimates it checks: resident
bytes on the compute device, and timed tensor-path forwards on one example batch of the run's data; and how it
settles a configuration under a latency budget from those forwards."""
from __future__ import annotations

from typing import Any, Callable

_MB = 2 ** 20


def measure_memory_mb(model) -> tuple[float, float]:
    """Resident bytes of tensors on the compute device, and the process RSS, in MB."""
    from ..profiling.memory import process_rss_bytes, resident_device_bytes
    held = model.switcher.held_modules() if model.switcher is not None else ()
    return resident_device_bytes(model.architecture, held) / _MB, process_rss_bytes() / _MB


def example_inputs(runner, model):
    """One sample of the val split (the test split's if there is no val loader), as model inputs."""
    from ..models.tensor_path import example_batch
    split = 'val' if runner.cfg.get('val_dataloader') else 'test'
    return example_batch(runner.cfg, model.architecture, batch_size=1, split=split)


def warm_up(model, inputs, latency_warmup: int, max_extra_windows: int = 2, stable: float = 0.05) -> None:
    """Untimed forwards before a latency measurement, served like any other: they feed the online correction.

    The test epoch's forwards ran beside the data loader's workers; the measurement runs without them. After
    ``latency_warmup`` forwards (the first ones on a new input are slow: allocations, kernel choices) and the ones a
    switch leaves unobserved, a whole correction window of forwards runs, so the corrected estimate read next is
    learned in the measurement's conditions only (and none of the timed forwards feed it). The load and the options'
    own factors are medians learned from each other: after a change that hit some blocks only (factors learned under
    another load), they need more than one window to agree again, so up to ``max_extra_windows`` more windows run
    while the running configuration's corrected estimate still moves by more than ``stable`` (relative) per window.
    """
    correction = model.correction
    count = latency_warmup + (correction.window + model.FORWARDS_UNOBSERVED_AFTER_SWITCH
                              if correction is not None else 0)
    if count:
        model.measure_latency_ms(inputs, warmup=0, repeats=count)
    if correction is None:
        return
    for _ in range(max_extra_windows):
        before = model.estimate()['latency_ms']
        model.measure_latency_ms(inputs, warmup=0, repeats=correction.window)
        if abs(model.estimate()['latency_ms'] / before - 1.0) <= stable:
            break


def settle_latency(model, warm: Callable[[], None], measure_ms: Callable[[], float] | None, budget_ms: float,
                   max_solves: int, drift: float) -> tuple[dict[str, Any], Any]:
    """Teaches the online correction on the running configuration and re-solves while its corrected estimate exceeds
    ``budget_ms`` at all, at most ``max_solves`` times (a bounded loop, so no tolerance against alternating as in
    serving). With ``measure_ms``, each configuration is measured before that check (its timed forwards teach the
    correction too, so one measured over its budget is re-solved).

    Returns the fields ``settle_solves`` and (measured) ``settled_corrected_latency_ms`` /
    ``settled_measured_latency_ms`` of the configuration left running, and the last solve's result (None: none).
    When the re-solves run out on a configuration measured over the budget, the best one (highest estimated metric)
    measured within it runs instead, measured again (``settle_fallback``): the correction's load and per-option
    factors are fitted from each other and can take more windows to agree than allowed.
    """
    fields: dict[str, Any] = dict(settle_solves=0)
    last_result = None
    within = []  # (estimated metric, selection) of the configurations measured within the budget
    while True:
        warm()  # the configuration the epoch runs has always been served a window
        if measure_ms is not None:
            fields['settled_corrected_latency_ms'] = model.estimate()['latency_ms']
            fields['settled_measured_latency_ms'] = measure_ms()
            if fields['settled_measured_latency_ms'] <= budget_ms:
                within.append((model.estimate()['metric'], dict(model.selection)))
        if fields['settle_solves'] == max_solves:
            break
        result = model.rescale_if_needed(0.0, drift)
        if result is None:
            break
        fields['settle_solves'] += 1
        last_result = result
    if within and fields['settle_solves'] == max_solves and fields['settled_measured_latency_ms'] > budget_ms:
        model.switch(max(within, key=lambda entry: entry[0])[1])
        warm()
        fields.update(settled_corrected_latency_ms=model.estimate()['latency_ms'],
                      settled_measured_latency_ms=measure_ms(), settle_fallback=True)
    return fields, last_result


def interleaved_latency_ms(model, inputs, selections, min_seconds: float, min_rounds: int = 4,
                           warmup: int = 2, repeats: int = 5, show_progress: bool = True) -> list[float]:
    """The latency of each configuration measured in visits interleaved over at least ``min_seconds``.

    A latency profile spans seconds (``profile_latency(min_seconds=...)``); one stretch of forwards falls in one
    of a machine's speed phases (shared VMs change speed for half a second to seconds). Visiting the
    configurations in turn, ``repeats`` timed forwards after ``warmup`` untimed ones per visit, round after round
    (alternately forward and in reverse) until ``min_rounds`` rounds and ``min_seconds`` have passed, measures
    each across the same phases: the median of its visits' medians (>= 20 timed forwards by default).

    Args:
        model: A :class:`mmlego.LegoDNN` with a bank; its selection is restored afterwards.
        inputs: The tensor-path input (batch of one, the profiled size).
        selections: Configurations (block -> sparsity).
        min_seconds: Least time the visits span.
        min_rounds: Least visits per configuration.
        warmup: Untimed forwards per visit (after the switch).
        repeats: Timed forwards per visit.
        show_progress: Show a progress bar.

    Returns:
        Per configuration, in order, the median latency in ms.
    """
    import statistics
    import time

    from ..utils.progress import progress
    running = dict(model.selection)
    visits: list[list[float]] = [[] for _ in selections]
    order = list(range(len(selections)))
    start = time.perf_counter()

    def rounds():
        done = 0
        while done < min_rounds or time.perf_counter() - start < min_seconds:
            yield done
            done += 1
    try:
        for done in progress(rounds(), f'latency of {len(selections)} configurations, interleaved over '
                             f'>= {min_seconds:g} s (rounds)', enabled=show_progress):
            for index in (order if done % 2 == 0 else order[::-1]):
                model.switch(selections[index])
                visits[index].append(model.measure_latency_ms(inputs, warmup=warmup, repeats=repeats))
    finally:
        model.switch(running)
    return [float(statistics.median(values)) for values in visits]
