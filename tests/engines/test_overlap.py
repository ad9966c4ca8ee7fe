"""Work on a thread beside the caller's: reading ahead hands over the same items, errors and endings as the
iterator itself; writing one behind runs the calls in order and raises their errors."""

from __future__ import annotations

import threading
from contextlib import closing

import pytest

from fpi.engines.overlap import one_behind, read_ahead


def test_same_items_in_the_same_order_made_off_the_callers_thread():
    makers = []

    def numbers():
        for n in range(5):
            makers.append(threading.current_thread())
            yield n

    assert list(read_ahead(numbers())) == [0, 1, 2, 3, 4]
    assert threading.current_thread() not in makers


def test_an_error_comes_after_the_items_before_it():
    def failing():
        yield "a"
        yield "b"
        raise ValueError("line 3: bad field")

    got = []
    with pytest.raises(ValueError, match="line 3: bad field"):
        for item in read_ahead(failing()):
            got.append(item)
    assert got == ["a", "b"]


def test_a_caller_that_stops_early_closes_the_source_with_at_most_one_item_made_ahead():
    made, closed = [], []

    def source():
        try:
            for n in range(100):
                made.append(n)
                yield n
        finally:
            closed.append(True)

    with closing(read_ahead(source())) as items:
        for n in items:
            if n == 2:
                break
    assert closed == [True]
    assert made in ([0, 1, 2], [0, 1, 2, 3])  # the next one cancelled before it started, or made


def test_an_empty_source_gives_nothing():
    assert list(read_ahead(iter([]))) == []


def test_one_behind_runs_calls_in_order_off_the_callers_thread_and_waits_at_the_end():
    done, threads = [], set()

    def note(n):
        threads.add(threading.current_thread())
        done.append(n)

    with one_behind("test") as behind:
        for n in range(5):
            behind.submit(note, n)
    assert done == [0, 1, 2, 3, 4]
    assert threading.current_thread() not in threads


def test_one_behind_raises_a_failed_call_at_the_next_one():
    def fail():
        raise OSError("disk full")

    ran = []
    with pytest.raises(OSError, match="disk full"), one_behind("test") as behind:
        behind.submit(fail)
        behind.submit(ran.append, "after")
    assert ran == []
