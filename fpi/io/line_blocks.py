"""A large text file as blocks of whole lines, so readers parse it a block at a time in bounded memory
and still name every line by its number in the file."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path

from fpi.contract.errors import TraceError

BLOCK_BYTES = 64 << 20


def line_blocks(path: str | Path, block_bytes: int = BLOCK_BYTES) -> Iterator[tuple[int, bytes]]:
    """(number of the block's first line, the block) for a plain or gzipped file; every block but the
    last ends with a newline, a line longer than `block_bytes` makes its block longer, and blocks of
    blank lines only are left out."""
    with open(path, "rb") as probe:
        opener = gzip.open if probe.read(2) == b"\x1f\x8b" else open
    first_line = 1
    with opener(path, "rb") as handle:
        while True:
            try:
                block = handle.read(block_bytes)
                if block and not block.endswith(b"\n"):
                    block += handle.readline()  # the rest of the last line
            except (OSError, EOFError, zlib.error) as exc:  # a damaged or truncated gzip file
                raise TraceError([f"{path}: not a readable gzip file ({exc})"]) from exc
            if not block:
                return
            if not block.isspace():
                yield first_line, block
            first_line += block.count(b"\n")
