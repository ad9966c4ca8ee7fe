"""Ctrl-C and SIGTERM as an exception that unwinds every `with` and `finally`, so temporary files go
(outputs, spills, staged folders) and the command exits 130 or 143 with one line. While polars calls
back into Python (writing into a Python file), an exception there would be a Rust panic with its text
on stderr: there the signal is held, and raised as soon as the call returns."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_HELD = {"depth": 0, "signal": 0}


class Interrupted(KeyboardInterrupt):
    """The run was stopped by SIGINT or SIGTERM; `exit_code` is the shell's 128 + the signal's number."""

    def __init__(self, signum: int):
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}; temporary files removed, nothing written")


def _raise(signum: int, frame: FrameType | None) -> None:
    if _HELD["depth"]:
        _HELD["signal"] = _HELD["signal"] or signum
        return
    raise Interrupted(signum)


@contextmanager
def handling_interrupts() -> Iterator[None]:
    """SIGINT and SIGTERM raise `Interrupted` while in this block (in the main thread; elsewhere, nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _raise) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def held() -> Iterator[None]:
    """Hold an interrupt while polars runs Python code of ours, and raise it when the block is done."""
    _HELD["depth"] += 1
    try:
        yield
    finally:
        _HELD["depth"] -= 1
        if not _HELD["depth"] and _HELD["signal"]:
            signum, _HELD["signal"] = _HELD["signal"], 0
            raise Interrupted(signum)
