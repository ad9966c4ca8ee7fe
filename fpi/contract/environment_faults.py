"""Faults of the user's machine, not of fpi: a full disk, a folder that may not be written, a path
that loops. They are the user's to mend, so they exit 2 with one line naming the path and the cause,
never 70 ("internal error"). Polars reports them in its own exceptions, as `(os error N)`."""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fpi.contract.errors import FpiError

ENVIRONMENT_ERRNOS = frozenset({
    errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS, errno.ELOOP, errno.ENAMETOOLONG,
    errno.EISDIR, errno.ENOTDIR, errno.ENOENT, errno.EMFILE, errno.ENFILE, errno.ENXIO, errno.ETXTBSY, errno.EIO,
    errno.EEXIST, errno.EXDEV, errno.EBUSY})
_OS_ERROR = re.compile(r"\(os error (\d+)\)")
_HINTS = {errno.ENOSPC: "free some space, or write elsewhere", errno.EDQUOT: "free some space, or write elsewhere",
          errno.EFBIG: "the file is larger than this system allows", errno.EACCES: "check the permissions",
          errno.EPERM: "check the permissions", errno.EROFS: "write elsewhere"}


class EnvironmentFault(FpiError):
    """The machine refused what fpi asked of it (disk full, permission, read-only, a symlink loop)."""


def fault_errno(exc: BaseException) -> int | None:
    """The operating system's error number behind `exc` (an OSError, or a polars error quoting one)."""
    number = exc.errno if isinstance(exc, OSError) else None
    if number is None:
        found = _OS_ERROR.search(str(exc))
        number = int(found.group(1)) if found else None
    return number if number in ENVIRONMENT_ERRNOS else None


def is_closed_pipe(exc: BaseException) -> bool:
    """Whether `exc` is stdout's reader going away (`fpi classify ... | head`): not an error, the end of the output."""
    number = exc.errno if isinstance(exc, OSError) else None
    found = _OS_ERROR.search(str(exc)) if number is None else None
    return (number if number is not None else int(found.group(1)) if found else None) == errno.EPIPE


def as_environment_fault(exc: BaseException, path: str | Path | None = None) -> EnvironmentFault | None:
    """`exc` said as the user's fault, naming `path` (or the file the error names); None when it is not one."""
    number = fault_errno(exc)
    if number is None:
        return None
    where = path if path is not None else getattr(exc, "filename", None)
    hint = _HINTS.get(number)
    return EnvironmentFault(f"{where if where is not None else 'a file'}: {os.strerror(number)}" + (f"; {hint}" if hint else ""))


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Name `path` in any fault of the machine met while writing it."""
    try:
        yield
    except Exception as exc:
        fault = as_environment_fault(exc, path)
        if fault is None:
            raise
        raise fault from None
