"""The compiled-trees cache as a trusted store: native code is run from it, so nothing is loaded that
fpi did not write for this user. The folder is the user's own (created 0700; refused when another
user owns it or others may write it); each entry is a regular file of the user's, read with a size
bound, and loaded only when its keyed digest (a secret of the user's cache over the entry's key,
which names the model, the compiler and fpi's version, and its bytes) is the one fpi recorded when
it wrote the entry. A damaged or planted entry is rebuilt, never loaded."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import tempfile
import time
from pathlib import Path

from fpi.contract.errors import ModelError

MAX_ENTRY_BYTES = 256 * 1024 * 1024  # far above any model's object; a bound on what a read may take
SECRET_FILE = "secret"
UNUSED_DAYS = 30  # an entry no run has loaded for this long (an older fpi's, an older model's) goes when another is written


class UntrustedCache(ModelError):
    """A cache folder or entry that another user could have written: LightGBM predicts instead."""


def cache_dir() -> Path:
    """Where compiled models are kept: $FPI_CACHE_DIR, else the user's cache folder."""
    if os.environ.get("FPI_CACHE_DIR"):
        return Path(os.environ["FPI_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fpi" / "trees"


def _check_owned(path: Path, info: os.stat_result, kind: str) -> None:
    """Refuse what another user owns or may write."""
    if info.st_uid != os.geteuid():
        raise UntrustedCache(f"{path}: the compiled-trees {kind} belongs to another user (uid {info.st_uid}); "
                             "not loading native code from it")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UntrustedCache(f"{path}: the compiled-trees {kind} is writable by others (mode {stat.S_IMODE(info.st_mode):o}); "
                             "not loading native code from it (chmod go-w, or remove it)")


def _read_regular(path: Path, limit: int) -> bytes | None:
    """A regular file's bytes, at most `limit` of them, without following a symlink or waiting on a
    FIFO; None when there is no such file (or it is too large, or not a regular file: rebuilt)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        _check_owned(path, info, "entry")
        return handle.read(limit + 1)


def _write_private(path: Path, data: bytes) -> bool:
    """`data` to `path` as a file only the user may read or write (0600), renamed into place whole;
    False when the folder cannot be written."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError:
        return False
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(name, path)
    except BaseException as exc:
        Path(name).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            return False
        raise
    return True


class NativeCache:
    """One user's folder of compiled trees, checked before it is used."""

    def __init__(self, folder: Path | None = None):
        self.folder = folder or cache_dir()

    def _trusted_folder(self, create: bool) -> bool:
        """Whether the folder is there (made 0700 when `create`); UntrustedCache when it is not the user's alone."""
        try:
            if create:
                self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = os.stat(self.folder)
        except OSError:
            return False
        if not stat.S_ISDIR(info.st_mode):
            return False
        _check_owned(self.folder, info, "cache folder")
        return True

    def _secret(self, create: bool) -> bytes | None:
        """The user's key for entry digests, made on first write (0600)."""
        path = self.folder / SECRET_FILE
        found = _read_regular(path, 64)
        if found is not None and len(found) == 32:
            return found
        if not create:
            return None
        made = secrets.token_bytes(32)
        return made if _write_private(path, made) else None

    @staticmethod
    def _digest(secret: bytes, key: str, data: bytes) -> str:
        return hmac.new(secret, key.encode("utf-8") + b"\0" + data, hashlib.sha256).hexdigest()

    def get(self, key: str) -> bytes | None:
        """The entry fpi wrote under `key`, or None (missing, damaged, or not fpi's: then it is rebuilt)."""
        if not self._trusted_folder(create=False):
            return None
        secret = self._secret(create=False)
        data = _read_regular(self.folder / f"{key}.o", MAX_ENTRY_BYTES)
        recorded = _read_regular(self.folder / f"{key}.digest", 128)
        if secret is None or data is None or recorded is None:
            return None
        if not hmac.compare_digest(recorded.strip(), self._digest(secret, key, data).encode("ascii")):
            return None
        try:
            os.utime(self.folder / f"{key}.o")  # its last use: what `put` keeps
        except OSError:
            pass
        return data

    def put(self, key: str, data: bytes) -> None:
        """Keep `data` under `key` with its digest; a folder that cannot be written keeps nothing (the trees
        are compiled for this run only)."""
        if not self._trusted_folder(create=True):
            return
        secret = self._secret(create=True)
        if secret is not None:
            _write_private(self.folder / f"{key}.o", data)
            _write_private(self.folder / f"{key}.digest", self._digest(secret, key, data).encode("ascii"))
            self._forget_unused()

    def _forget_unused(self) -> None:
        """Remove the entries no run has loaded for UNUSED_DAYS: each fpi version and model has its own, ~10 MB."""
        oldest = time.time() - UNUSED_DAYS * 86400
        for entry in self.folder.glob("*.o"):
            try:
                if entry.lstat().st_mtime < oldest:
                    entry.unlink()
                    entry.with_suffix(".digest").unlink(missing_ok=True)
            except OSError:
                pass  # another run's, or gone already: the next write tries again
