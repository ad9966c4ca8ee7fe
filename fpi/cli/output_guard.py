"""The one guard on what a command writes, run before any work: no output may be an input, hold one
(a model folder replaced with --force around its own traces, the compiled-trees cache around the
logs) or lie inside one, and no two outputs may be one file, so that no run, failed or not, changes
a byte of what it reads."""

from __future__ import annotations

from pathlib import Path

from fpi.contract.errors import UsageError

Paths = list[str | Path | None]


def _resolved(path: str | Path) -> Path:
    """Where `path` really is; a symlink loop is the user's to mend, said as such."""
    try:
        return Path(path).expanduser().resolve()
    except (RuntimeError, OSError) as exc:
        raise UsageError(f"{path}: cannot be resolved ({getattr(exc, 'strerror', None) or exc}); "
                         "a symlink loop or a broken path") from None


def _overlap(output: str | Path, where: Path, read: dict[Path, str]) -> str | None:
    """Why writing `output` (at `where`) would touch an input, or None when it would not."""
    for source, name in read.items():
        if where == source:
            return f"{output} is also an input ({name}); writing it would replace what is being read"
        if where in source.parents:
            return f"{output} holds the input {name}; writing it would replace what is being read"
        if source in where.parents:
            return f"{output} lies inside the input {name}; write it elsewhere"
    return None


def guard_paths(inputs: Paths, outputs: Paths, folders: tuple[Path, ...] = ()) -> None:
    """Before anything is read or written: refuse (UsageError, exit 2) an output that is, holds or lies
    inside an input, one given for two outputs, or a folder where a file goes (`folders` are outputs
    that are folders). Stdin and stdout (`-`) are not files."""
    read = {_resolved(p): str(p) for p in inputs if p is not None and str(p) != "-"}
    _guard_cache(read)
    written: dict[Path, str] = {}
    for path in outputs:
        if path is None or str(path) == "-":
            continue
        where = _resolved(path)
        problem = _overlap(path, where, read)
        if problem:
            raise UsageError(problem)
        if where in written:
            raise UsageError(f"{path} is given for two outputs ({written[where]} and {path})")
        if where.is_dir() and Path(path) not in folders:
            raise UsageError(f"{path} is a folder; give the name of a file to write")
        written[where] = str(path)


def _guard_cache(read: dict[Path, str]) -> None:
    """Any run may write compiled trees to the cache folder: it may not be, hold or lie inside an input either."""
    from fpi.pipeline.native_cache import cache_dir

    folder = cache_dir()
    problem = _overlap(f"the compiled-trees cache {folder}", _resolved(folder), read)
    if problem:
        raise UsageError(f"{problem} (set FPI_CACHE_DIR to a folder of its own)")
