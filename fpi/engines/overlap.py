"""Work done on a thread beside the caller's, so the streamed engine keeps both cores busy: the next chunk of the
input parsed while the last one spills (`read_ahead`), and files written while the next rows are computed
(`one_behind`). Arrow's reader and writer and polars release the interpreter while they work."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")
_END = object()


def read_ahead(items: Iterator[T]) -> Generator[T, None, None]:
    """`items`, one item made ahead: the same items in the same order, the same exceptions where they came. A
    caller that stops early waits for the item being made, then `items` is closed."""
    with ThreadPoolExecutor(1, thread_name_prefix="fpi-read-ahead") as maker:
        coming = maker.submit(next, items, _END)
        try:
            while (item := coming.result()) is not _END:
                coming = maker.submit(next, items, _END)
                yield item  # type: ignore[misc]
        finally:
            coming.cancel() or coming.exception()  # made, or never started: `items` is idle before it is closed
            close = getattr(items, "close", None)
            if close is not None:
                close()


class OneBehind:
    """Calls run on a thread in the order they came, one at a time, while the caller goes on: a call waits for
    the one before it, so one at most is pending (and what it holds). Its error is raised by the next call or
    by `wait`."""

    def __init__(self, worker: ThreadPoolExecutor):
        self._worker = worker
        self._pending: Future[Any] | None = None

    def submit(self, work: Callable[..., Any], *args: Any) -> None:
        self.wait()
        self._pending = self._worker.submit(work, *args)

    def wait(self) -> None:
        """The pending call finished (its error raised here)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()


@contextmanager
def one_behind(name: str) -> Iterator[OneBehind]:
    """A `OneBehind` on a thread of its own, waited for at the end of the block (on an error too, before the
    files it writes are cleaned up)."""
    with ThreadPoolExecutor(1, thread_name_prefix=name) as worker:
        behind = OneBehind(worker)
        yield behind
        behind.wait()
