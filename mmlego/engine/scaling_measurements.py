"""How ``mmlego.OnlineScalingHook`` measures a running configuration, apart from the estimates it checks: resident
bytes on the compute device, and timed tensor-path forwards on one example batch of the run's data."""
from __future__ import annotations

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
