"""A large text file as blocks of whole lines, so readers parse it a block at a time in bounded memory
and still name every line by its number in the file."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path

from fpi.errors import TraceError

BLOCK_BYTES = 64 << 20


def line_blocks(path: str | Path, block_bytes: int = BLOCK_BYTES) -> Iterator[tuple[int, bytes]]:
    """(number of the block's first line, the block) for a plain or gzipped file; every block but the
    last ends with a newline, and a line longer than `block_bytes` makes its block longer."""
    with open(path, "rb") as probe:
        opener = gzip.open if probe.read(2) == b"\x1f\x8b" else open
    first_line, carry = 1, b""
    with opener(path, "rb") as handle:
        while True:
            try:
                block = handle.read(block_bytes)
            except (OSError, EOFError, zlib.error) as exc:  # a damaged or truncated gzip file
                raise TraceError([f"{path}: not a readable gzip file ({exc})"]) from exc
            data = carry + block
            cut = data.rfind(b"\n") + 1 if block else len(data)  # whole lines; at the end, what is left
            if cut == 0 or (not block and not data.strip()):
                if not block:
                    return
                carry = data
                continue
            chunk, carry = data[:cut], data[cut:]
            yield first_line, chunk
            first_line += chunk.count(b"\n")
            if not block:
                return
