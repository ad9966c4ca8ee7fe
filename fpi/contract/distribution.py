"""Who fpi is on the package index: the distribution `fpi-voice` (the name `fpi` there belongs to an
unrelated project), installing the command and the import package `fpi`."""

from __future__ import annotations

from importlib import metadata

DISTRIBUTION = "fpi-voice"


def version(package: str = DISTRIBUTION) -> str:
    """The installed version of `package` (fpi itself by default); "unknown" when it is not installed."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"
