"""What every file writer shares: streaming writes of validated, time-ordered chunks.

A writer is opened with the stream's `StreamInfo`, takes chunks in time order through `write`,
and finishes the file in `close` (headers that need totals are patched then). Events outside
the declared sensor, timestamps going backwards or values the format cannot represent raise
`EventDataError` before anything of that chunk is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, ClassVar

import numpy as np

from spikecut.errors import EventDataError
from spikecut.sources.events import StreamInfo, as_events
from spikecut.sources.reader import EventValidator


class EventWriter:
    format: ClassVar[str] = ""
    #: Largest coordinate + 1 the format can store.
    max_coordinate: ClassVar[int] = 1 << 16

    def __init__(self, path: str | Path, info: StreamInfo) -> None:
        self.path = Path(path)
        self.info = info
        for name in ("width", "height"):
            if getattr(info, name) > self.max_coordinate:
                raise EventDataError(
                    f"{self.path}: {self.format} stores coordinates below {self.max_coordinate}; "
                    f"the sensor {name} is {getattr(info, name)}"
                )
        self._validator = EventValidator(info.width, info.height, source=str(self.path))
        self.events_written = 0
        self._closed = False
        self._file: BinaryIO | None = None
        try:
            self._open()
        except BaseException:
            self._abort()
            raise

    def _open(self) -> None:
        self._file = open(self.path, "wb")  # noqa: SIM115 (closed in close())

    def _write(self, events: np.ndarray) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        """Write trailers and patch headers; the file is still open."""

    def write(self, events: np.ndarray) -> None:
        if self._closed:
            raise ValueError(f"{self.path}: writer is closed")
        events = as_events(np.asarray(events))
        if events.size:
            self._check(events)
            # Strict validation with no jitter never modifies the array; it needs a writable one.
            self._validator(events if events.flags.writeable else events.copy())
            self._write(np.ascontiguousarray(events))
            self.events_written += events.size

    def _check(self, events: np.ndarray) -> None:
        """Format-specific limits (timestamps range, ...); raise EventDataError."""
        if int(events["t"].min()) < 0:
            i = int(np.flatnonzero(events["t"] < 0)[0])
            raise EventDataError(
                f"{self.path}: event index {self.events_written + i} has t={events['t'][i]} us; "
                f"{self.format} files store non-negative timestamps"
            )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._finish()
        finally:
            if self._file is not None:
                self._file.close()

    def _abort(self) -> None:
        """Close and remove the unfinished file (a half-written file would look valid)."""
        self._closed = True
        if self._file is not None:
            self._file.close()
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort()

    def _check_t_below(self, events: np.ndarray, limit: int, why: str) -> None:
        bad = np.flatnonzero(events["t"] >= limit)
        if bad.size:
            i = int(bad[0])
            raise EventDataError(
                f"{self.path}: event index {self.events_written + i} has t={events['t'][i]} us; "
                f"{why}"
            )
