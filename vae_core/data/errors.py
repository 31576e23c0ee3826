"""Error types of the data layer: every failure is a one-line message saying which file, where, and how to fix."""

from __future__ import annotations


class DataError(Exception):
    """A dataset could not be found, read, verified or downloaded."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class MissingDataError(DataError):
    """A required file is in none of the searched folders."""


class CorruptDataError(DataError):
    """A file was found but is truncated, garbled or fails its checksum."""


class ChecksumError(CorruptDataError):
    """A file decodes cleanly but its content digest differs from the published one."""


class DownloadError(DataError):
    """Every mirror of a file failed (unreachable, HTTP error or corrupt payload)."""
