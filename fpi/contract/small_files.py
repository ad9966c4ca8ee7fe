"""Files users hand fpi to configure it (rules, policies, mappings, baselines) are small: read them
whole, but only when they are regular files of a bounded size, so `--mapping /dev/zero` or a FIFO is
an error at once, not a process that eats memory or waits forever."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


class TooLarge(ValueError):
    """A file larger than what may be read of it."""


def read_small_file(path: Path, limit: int) -> bytes:
    """A regular file's bytes, refused when larger than `limit` (TooLarge) or when not a regular file
    (OSError): a device, FIFO or socket would be read forever or wait forever."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file (a device, FIFO, socket or folder)")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"{info.st_size:,} bytes")
    return data
