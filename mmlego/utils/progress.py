"""Progress of the offline stages: a rich bar on a terminal, and lines with ETA in the run's log everywhere.

The log lines (through mmengine's current logger, so they land in the run's log file) make long stages readable
in non-TTY logs (CI, ``nohup``, cluster jobs), where a bar leaves no trace.
"""
from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar('T')


def _is_main_process() -> bool:
    try:
        import torch.distributed as dist
        return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
    except Exception:  # pragma: no cover - torch without distributed support
        return True


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


def progress(items: Iterable[T], description: str, enabled: bool = True, total: int | None = None,
             log_steps: int = 10) -> Iterator[T]:
    """Iterates ``items`` with a rich bar on a terminal and ``log_steps`` log lines (done, elapsed, ETA).

    Only on the main process, and only when ``enabled``.
    """
    if not enabled or not _is_main_process():
        yield from items
        return
    from mmengine.logging import print_log
    if total is None and hasattr(items, '__len__'):
        total = len(items)  # type: ignore[arg-type]
    every = max(1, -(-total // log_steps)) if total else 50
    start = time.monotonic()

    def log(done: int) -> None:
        elapsed = time.monotonic() - start
        eta = f', eta {_duration(elapsed / done * (total - done))}' if total and done else ''
        print_log(f'{description}: {done}/{total or "?"}, elapsed {_duration(elapsed)}{eta}', logger='current')

    if not sys.stdout.isatty():
        done = 0
        for done, item in enumerate(items, 1):
            yield item
            if done % every == 0 or done == total:
                log(done)
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)
    columns = (TextColumn('[bold]{task.description}'), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(description, total=total)
        for done, item in enumerate(items, 1):
            yield item
            bar.advance(task)
            if done % every == 0 or done == total:
                log(done)
