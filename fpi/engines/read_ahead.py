"""An iterator whose next item is made on a thread while the caller works on the one it has: the streamed
engine parses its next chunk of the input while it spills the last, so reading and spilling share the cores
(Arrow's reader and polars release the interpreter while they work)."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

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
