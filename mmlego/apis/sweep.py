"""The table and plots of a budget sweep (``tools/test.py --sweep``): every estimate next to its measurement.

A row holds, for one budget, the configuration that ran and, side by side, what the scaling optimizer estimated
and what was measured: the metric on the report split (the config's test set), the latency (profiled, corrected
online, the median of timed forwards of the tensor path right after the solve, and the median over visits
interleaved with the other rows' configurations across seconds), the configuration's weight bytes and the bytes
resident on the compute device plus the process RSS.

The metric estimate of a row is the teacher's metric *measured on the report split* minus the configuration's
estimated drop (profiled on the val split): :func:`anchor_metric_estimates`. The drops are what the profile
estimates; the teacher's own level on the reported data is measured (as the latency estimate of the teacher is its
measured latency), so the val/test gap of the teacher is not passed off as an error of every configuration. The
estimate against the profiling split's teacher is kept as ``estimated_metric_profiling``.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Sequence

#: Columns of a sweep row, in order.
ROW_KEYS = ('index', 'budget_memory_mb', 'budget_latency_ms', 'status', 'metric_name', 'estimated_metric',
            'measured_metric', 'estimated_drop', 'estimated_metric_profiling', 'profiled_latency_ms',
            'estimated_latency_ms', 'corrected_latency_ms', 'measured_latency_ms', 'interleaved_latency_ms',
            'latency_ratio',
            'estimated_memory_mb', 'resident_memory_mb', 'rss_mb', 'latency_headroom', 'settle_solves',
            'settled_corrected_latency_ms',
            'settled_measured_latency_ms', 'online_resolves', 'rescaled_solves', 'rescaled_status',
            'rescaled_corrected_latency_ms', 'rescaled_measured_latency_ms')


#: Fields of a row taken from the epoch's first record (its budget's solve), not from the configuration measured last.
SOLVE_KEYS = ('latency_headroom', 'settle_solves', 'settled_corrected_latency_ms', 'settled_measured_latency_ms')


def sweep_row(record: dict[str, Any], index: int, solve_record: dict[str, Any] | None = None,
              online_resolves: int = 0) -> dict[str, Any]:
    """One row from an :class:`mmlego.OnlineScalingHook` record.

    Args:
        record: The epoch's last record (the configuration measured after it).
        index: The row's index.
        solve_record: The epoch's first record (its budget's solve, with the settling fields); default ``record``.
        online_resolves: Re-solves during the epoch (the online correction's), i.e. the epoch's records - 1.
    """
    budget = record['budget']
    row = dict(index=index, budget_memory_mb=budget.get('memory_mb'), budget_latency_ms=budget.get('latency_ms'))
    row.update({key: (solve_record or record).get(key) for key in SOLVE_KEYS})
    row['online_resolves'] = online_resolves
    row.update({key: record.get(key) for key in ROW_KEYS if key not in row})
    row['choice'] = record['choice']
    return row


def runs_teacher(row: dict[str, Any]) -> bool:
    """Whether a row's epoch ran the teacher (every block at sparsity 0.0) throughout: a row whose configuration the
    online correction switched during the epoch (``online_resolves``) measured a mixture of configurations."""
    return bool(row.get('choice')) and not any(row['choice'].values()) and not row.get('online_resolves')


def measured_one_configuration(row: dict[str, Any]) -> bool:
    """Whether a row's metric was measured on its configuration alone (no re-solve during its epoch)."""
    return row.get('measured_metric') is not None and not row.get('online_resolves')


def anchor_metric_estimates(rows: Sequence[dict[str, Any]], profiling_teacher_metric: float,
                            report_teacher_metric: float | None) -> None:
    """Re-bases the rows' metric estimates on the teacher's metric measured on the report split (in place).

    Each row's optimizer estimate (``estimated_metric``: the profiling split's teacher metric minus the summed
    estimated drops) becomes ``estimated_drop`` and ``estimated_metric_profiling``; ``estimated_metric`` becomes
    ``report_teacher_metric - estimated_drop``. Without a report-split teacher metric the rows keep the profiling
    split's estimates (``estimated_drop`` still filled).

    Args:
        rows: Sweep rows (:func:`sweep_row`).
        profiling_teacher_metric: The teacher's metric on the profiling split (the bank's ``teacher_metric``).
        report_teacher_metric: The teacher's metric measured on the report split, or None.
    """
    for row in rows:
        if row.get('estimated_metric_profiling') is None:
            row['estimated_metric_profiling'] = row['estimated_metric']
        row['estimated_drop'] = profiling_teacher_metric - row['estimated_metric_profiling']
        if report_teacher_metric is not None:
            row['estimated_metric'] = report_teacher_metric - row['estimated_drop']


def format_sweep_table(rows: Sequence[dict[str, Any]]) -> str:
    """A fixed-width text table of the rows (estimates next to measurements)."""
    columns = [('budget MB', 'budget_memory_mb', '.2f'), ('budget ms', 'budget_latency_ms', '.1f'),
               ('status', 'status', ''), ('est metric', 'estimated_metric', '.4f'),
               ('metric', 'measured_metric', '.4f'), ('weights MB', 'estimated_memory_mb', '.2f'),
               ('resident MB', 'resident_memory_mb', '.2f'), ('RSS MB', 'rss_mb', '.0f'),
               ('profiled ms', 'profiled_latency_ms', '.2f'), ('est ms', 'corrected_latency_ms', '.2f'),
               ('ms', 'measured_latency_ms', '.2f'), ('ms interleaved', 'interleaved_latency_ms', '.2f'),
               ('pruned blocks', None, '')]
    cells = [[title for title, _, _ in columns]]
    for row in rows:
        line = []
        for _, key, spec in columns:
            if key is None:
                line.append(f'{sum(1 for s in row["choice"].values() if s > 0)}/{len(row["choice"])}')
            else:
                value = row.get(key)
                line.append('-' if value is None else format(value, spec))
        cells.append(line)
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return '\n'.join('  '.join(cell.rjust(width) for cell, width in zip(line, widths)) for line in cells)


def _budget_axis(rows: Sequence[dict[str, Any]]) -> tuple[str, str, list[float]]:
    by_latency = all(row['budget_latency_ms'] is not None for row in rows) and \
        any(row['budget_memory_mb'] is None for row in rows)
    key, label = ('budget_latency_ms', 'latency budget (ms)') if by_latency else ('budget_memory_mb',
                                                                                   'memory budget (MB)')
    return key, label, [row[key] for row in rows]


def plot_sweep(rows: Sequence[dict[str, Any]], info: dict[str, Any], out: Path) -> list[Path]:
    """Writes ``sweep_budgets.png`` (metric, memory, latency per budget: estimate vs measurement, the teacher
    marked) and ``sweep_memory.png`` / ``sweep_latency.png`` (metric vs memory / latency, both curves)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    metric_name = info.get('metric_name') or 'metric'
    teacher = next((row for row in rows if not any(row['choice'].values())), None)
    key, label, budgets = _budget_axis(rows)
    estimated_label = ('estimated (report-split teacher - drops)' if info.get('report_teacher_metric') is not None
                       else 'estimated')
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    panels = [
        (axes[0], metric_name, [(estimated_label, 'estimated_metric', 'o--'), ('measured (report split)',
                                                                              'measured_metric', 's-')]),
        (axes[1], 'memory (MB)', [('weights (estimate)', 'estimated_memory_mb', 'o--'),
                                  ('resident on device (measured)', 'resident_memory_mb', 's-')]),
        (axes[2], 'latency (ms)', [('profiled estimate', 'profiled_latency_ms', 'o:'),
                                   ('estimate, corrected online', 'corrected_latency_ms', 'o--'),
                                   ('measured (median)', 'measured_latency_ms', 's-'),
                                   ('measured, interleaved over seconds', 'interleaved_latency_ms', 'd-')]),
    ]
    for ax, ylabel, curves in panels:
        for name, field, style in curves:
            points = [(b, row.get(field)) for b, row in zip(budgets, rows) if row.get(field) is not None]
            if points:
                ax.plot(*zip(*points), style, label=name)
        ax.set_xlabel(label)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    if info.get('teacher_metric') is not None:
        axes[0].axhline(info['teacher_metric'], color='grey', ls=':', label='teacher (profiling split)')
    if teacher is not None and teacher.get('measured_metric') is not None:
        axes[0].plot([teacher[key]], [teacher['measured_metric']], '*', ms=14, color='black',
                     label='teacher (report split)')
    budget_panel = axes[1] if key == 'budget_memory_mb' else axes[2]
    budget_panel.plot(budgets, budgets, '-', color='grey', alpha=0.5, label='budget')
    for ax in axes:
        ax.legend(fontsize=8)
    fig.suptitle(f'what each budget bought: estimates vs measurements ({info.get("config") or ""})', fontsize=10)
    fig.tight_layout()
    paths = [out / 'sweep_budgets.png']
    fig.savefig(paths[0], dpi=100)
    plt.close(fig)
    for what, field in (('memory', ('estimated_memory_mb', 'resident_memory_mb')),
                        ('latency', ('corrected_latency_ms', 'measured_latency_ms'))):
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, x_field, y_field, style in (('estimated', field[0], 'estimated_metric', 'o--'),
                                              ('measured', field[1], 'measured_metric', 's-')):
            points = [(r.get(x_field), r.get(y_field)) for r in rows]
            points = [p for p in points if None not in p]
            if points:
                ax.plot(*zip(*points), style, label=name)
        if teacher is not None and None not in (teacher.get(field[1]), teacher.get('measured_metric')):
            ax.plot([teacher[field[1]]], [teacher['measured_metric']], '*', ms=14, color='black', label='teacher')
        ax.set_xlabel(f'{what} ({"MB" if what == "memory" else "ms"})')
        ax.set_ylabel(metric_name)
        ax.set_title(f'{metric_name} vs {what}: estimated and measured')
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out / f'sweep_{what}.png'
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def write_sweep(rows: Sequence[dict[str, Any]], info: dict[str, Any], out: str | Path) -> list[Path]:
    """Writes ``sweep.csv``, ``sweep.json`` and the plots into ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fields = [key for key in rows[0] if key != 'choice'] + ['sparsities']
    with open(out / 'sweep.csv', 'w', newline='') as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({**{k: v for k, v in row.items() if k != 'choice'},
                             'sparsities': ';'.join(f'{name}={s:g}' for name, s in row['choice'].items())})
    (out / 'sweep.json').write_text(json.dumps(dict(info, rows=list(rows)), indent=2))
    return [out / 'sweep.csv', out / 'sweep.json'] + plot_sweep(rows, info, out)
