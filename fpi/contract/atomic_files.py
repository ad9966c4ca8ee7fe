"""Atomic file output: a reader never sees half a file, and a failed run leaves none."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from fpi.contract.environment_faults import writing
from fpi.contract.errors import UsageError


class AtomicFile:
    """A file filled beside `path` (as `tmp`) and renamed over it by `commit`; `discard` leaves no trace.
    A reader never sees half a file, and a failed run leaves the old one."""

    def __init__(self, path: str | Path):
        self.target = Path(path)
        if self.target.is_dir():
            raise UsageError(f"{path} is a folder; give the name of a file to write")
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{self.target.name}.", suffix=".tmp", dir=self.target.parent)
        except OSError as exc:
            raise UsageError(f"{path}: cannot write there ({exc.strerror})") from None
        os.close(fd)
        self.tmp = Path(tmp_name)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o666 & ~umask)  # mkstemp's 0600 would make outputs private

    def commit(self) -> None:
        os.replace(self.tmp, self.target)

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it over `path`."""
    file = AtomicFile(path)
    try:
        with writing(path):
            write(file.tmp)
            file.commit()
    except BaseException:
        file.discard()
        raise


def atomic_write_dir(path: str | Path, files: dict[str, bytes]) -> None:
    """A folder of files written as a whole: filled beside `path`, then renamed over it, so a reader
    sees the old folder or the new one, never a mix (a model's booster and metadata belong together)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)
    old = target.with_name(f".{target.name}.{os.getpid()}.old")
    try:
        with writing(path):
            for name, data in files.items():
                (staging / name).write_bytes(data)
                os.chmod(staging / name, 0o666 & ~umask)
            if target.exists():
                os.replace(target, old)
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old.exists() and not target.exists():
            os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
