"""Progress of a long pass over a corpus: a bar with rows per second on a terminal, and one line
in the log when the pass ends (what a batch job's log keeps)."""

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

log = logging.getLogger("litlab")


class RowsColumn(ProgressColumn):
    """Rows done (of how many, when known) and rows per second."""

    def render(self, task) -> Text:
        done = f"{int(task.completed):,}" + (f"/{int(task.total):,}" if task.total else "")
        speed = task.finished_speed or task.speed
        return Text(f"{done} rows" + (f" · {speed:,.0f} rows/s" if speed else ""))


@contextmanager
def rows_progress(description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """`advance(n)` to count n more rows; the bar shows while the pass runs, on a terminal."""
    console = Console(stderr=True)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=24),
        RowsColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    done = 0
    start = time.perf_counter()
    with bar:
        task = bar.add_task(description, total=total)

        def advance(rows: int) -> None:
            nonlocal done
            done += rows
            bar.advance(task, rows)

        yield advance
    seconds = max(time.perf_counter() - start, 1e-6)
    log.info(f"{description}: {done:,} rows in {seconds:.1f} s ({done / seconds:,.0f} rows/s)")


def counted(items: Iterable, advance: Callable[[int], None], every: int = 10_000) -> Iterator:
    """`items`, calling `advance` every so many (a bar redrawn per row would cost more)."""
    n = 0
    for n, item in enumerate(items, 1):
        yield item
        if n % every == 0:
            advance(every)
    advance(n % every)
