"""The records ``mmlego.OnlineScalingHook`` keeps of every configuration it runs, and the log lines it writes of
them: what was chosen, and after the epoch its measurements next to its estimates."""
from __future__ import annotations

from typing import Any, Mapping

from ..scaling_optimizer.budget import format_budget

_MB = 2 ** 20
#: The record fields written to the message hub (``{mode}/legodnn_<key>``) after every val/test epoch, so that
#: LoggerHook puts them in the run's log, ``scalars.json`` and any configured visualizer backend.
SCALAR_KEYS = ('estimated_metric', 'measured_metric', 'corrected_latency_ms', 'measured_latency_ms', 'latency_ratio',
               'estimated_memory_mb', 'resident_memory_mb', 'rss_mb')


def _fmt(value: float | None, unit: str = '', digits: int = 2) -> str:
    return 'none' if value is None else f'{value:.{digits}f}{unit}'


def new_record(model, result, epoch: int, mode: str, budget: Mapping[str, Any], resolved: bool, reason: str,
               settled: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A record of the configuration ``model`` runs now, chosen by ``result`` (fields: the hook's ``records``)."""
    profiled, estimated = model.estimate(corrected=False)['latency_ms'], float(result.latency_ms['model'])
    record = dict(
        epoch=epoch, mode=mode, budget=dict(budget), status=result.status, choice=dict(model.selection),
        metric_name=model.bank.profiles.metric_name, estimated_metric=float(result.estimated_metric['model']),
        measured_metric=None, profiled_latency_ms=profiled, estimated_latency_ms=estimated, corrected_latency_ms=None,
        latency_ratio=estimated / profiled, measured_latency_ms=None,
        estimated_memory_mb=result.memory_bytes['model'] / _MB, resident_memory_mb=None, rss_mb=None,
        resolved=resolved, reason=reason, settle_solves=0, settled_corrected_latency_ms=None,
        settled_measured_latency_ms=None, latency_headroom=float(getattr(model, 'last_headroom', 0.0)))
    record.update(settled or {})
    return record


def chosen_lines(record: Mapping[str, Any]) -> list[str]:
    """The log lines of a configuration just solved for."""
    sparsities = ', '.join(f'{name}={s:g}' for name, s in record['choice'].items())
    note = ''
    if record['status'] == 'infeasible':
        note = (' (INFEASIBLE: the budget is below the smallest configuration; running the smallest, '
                'raise the budget to at least its estimates)')
    reason = record['reason']
    why = f' [{reason}]' if reason != 'budget' else ''
    if reason == 'latency correction':
        why = f' [latency x{record["latency_ratio"]:.2f} measured online]'
    if record['latency_headroom']:
        why += f' [aimed {record["latency_headroom"]:.1%} under it: latency headroom]'
    if record['settle_solves']:
        why += (f' [re-solved {record["settle_solves"]}x on the latencies measured on the configurations '
                f'chosen first]')
    head = f'OnlineScalingHook [{record["mode"]} epoch {record["epoch"]}]: '
    lines = [f'{head}budget {format_budget(record["budget"])}{why} -> {record["status"]}{note}; sparsities '
             f'{{{sparsities}}}; estimated {record["metric_name"]} {record["estimated_metric"]:.4f}, latency '
             f'{record["estimated_latency_ms"]:.2f} ms, memory {record["estimated_memory_mb"]:.2f} MB']
    if record['settled_measured_latency_ms'] is not None:
        lines.append(f'{head}settled latency measured {record["settled_measured_latency_ms"]:.2f} ms vs corrected '
                     f'estimate {record["settled_corrected_latency_ms"]:.2f} ms, before the epoch')
    return lines


def measured_line(last: Mapping[str, Any], metric_name: str, configurations: int) -> str:
    """The log line of an epoch's measurements next to the estimates of its last configuration."""
    mixed = f' (over {configurations} configurations switched during the epoch)' if configurations > 1 else ''
    return (f'OnlineScalingHook [{last["mode"]} epoch {last["epoch"]}]: measured {metric_name} '
            f'{_fmt(last["measured_metric"], "", 4)}{mixed} vs estimated {last["estimated_metric"]:.4f} (the profiling '
            f'split\'s teacher - drops); resident {last["resident_memory_mb"]:.2f} MB (RSS {last["rss_mb"]:.0f} MB) vs '
            f'weights {last["estimated_memory_mb"]:.2f} MB; latency measured {_fmt(last["measured_latency_ms"], " ms")} '
            f'vs estimated {last["corrected_latency_ms"]:.2f} ms (profiled {last["profiled_latency_ms"]:.2f} ms '
            f'x{last["latency_ratio"]:.2f} online)')
