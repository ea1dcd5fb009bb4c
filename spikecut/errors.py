"""Every exception spikecut raises on purpose derives from `SpikecutError`.

File and stream errors carry where the problem is (path, byte offset, event index) so a user can
find it with a hex editor or a slice, and the message always names the field and the bad value.
"""

from __future__ import annotations

from os import PathLike


class SpikecutError(Exception):
    """Base class of all spikecut errors."""


class EventFileError(SpikecutError, ValueError):
    """A recording could not be decoded.

    `path`, `offset` (byte offset in the file) and `index` (event index) are kept as attributes
    and are part of the message when known.
    """

    def __init__(
        self,
        reason: str,
        *,
        path: str | PathLike[str] | None = None,
        offset: int | None = None,
        index: int | None = None,
    ) -> None:
        self.reason = reason
        self.path = None if path is None else str(path)
        self.offset = offset
        self.index = index
        where = []
        if self.path is not None:
            where.append(self.path)
        if offset is not None:
            where.append(f"byte offset {offset}")
        if index is not None:
            where.append(f"event index {index}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {reason}" if prefix else reason)


class UnknownFormatError(EventFileError):
    """Neither the magic bytes nor the extension identify a supported format."""


class TruncatedFileError(EventFileError):
    """The file ends in the middle of a header, packet or event."""


class CorruptFileError(EventFileError):
    """The bytes contradict the format (bad magic, impossible sizes, undecodable payload)."""


class EventDataError(SpikecutError, ValueError):
    """Decoded events are unusable: coordinates outside the sensor, time going backwards."""


class SourceUnavailableError(SpikecutError, RuntimeError):
    """A live source cannot be opened: no camera found, peer unreachable, optional extra missing."""


class CheckpointError(SpikecutError, ValueError):
    """A checkpoint is malformed, or does not match the model or pipeline it is loaded into."""


class ConfigError(SpikecutError, ValueError):
    """An option or URI is invalid; the message names the option and the value."""


class SchemaError(SpikecutError, ValueError):
    """A decision or stats record does not match its schema; the message names the field."""


class SinkError(SpikecutError, RuntimeError):
    """A sink cannot deliver: broker unreachable or refusing us, file or stdout not writable."""


class ModelInputError(SpikecutError, ValueError):
    """Frames or a state handed to a network do not match it (shape, sensor size, batch)."""
