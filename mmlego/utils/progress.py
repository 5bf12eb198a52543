"""Progress bars for the offline stages (rich), quiet when disabled or not on rank 0."""
from __future__ import annotations

from typing import Iterable, Iterator, TypeVar

T = TypeVar('T')


def _is_main_process() -> bool:
    try:
        import torch.distributed as dist
        return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
    except Exception:  # pragma: no cover - torch without distributed support
        return True


def progress(items: Iterable[T], description: str, enabled: bool = True, total: int | None = None) -> Iterator[T]:
    """Iterates ``items`` with a rich progress bar (on the main process only)."""
    if not enabled or not _is_main_process():
        yield from items
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)
    if total is None and hasattr(items, '__len__'):
        total = len(items)  # type: ignore[arg-type]
    columns = (TextColumn('[bold]{task.description}'), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)
