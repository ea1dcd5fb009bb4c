"""What every file reader shares: chunked iteration, the validation policy, header helpers.

A reader decodes its file in blocks (`BLOCK_BYTES` at a time) into chunks of at most
`chunk_events` events, so memory stays bounded whatever the file size. Each decoded chunk then
passes through one `EventValidator`, which enforces the two promises of our event model:

- coordinates lie inside the declared sensor (`x < width`, `y < height`);
- timestamps never decrease.

Strict reads (the default) raise `EventDataError` naming the file and the event index of the
first violation. Lenient reads drop such events and count them in `reader.stats`. A format whose
sensors are known to emit events a few microseconds out of order (Prophesee EVT 2.0/3.0) declares
a `jitter_us` tolerance: an event at most that far behind its predecessor is moved forward to the
previous timestamp (counted in `stats.clamped_backwards`) instead of being an error.

Structural damage (truncation, impossible sizes, undecodable words) raises a `TruncatedFileError`
or `CorruptFileError` naming the byte offset. A strict read delivers every chunk decoded before
the damage and then raises; a lenient read stops there quietly and keeps the exception in
`stats.error`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, ClassVar

import numpy as np
from numba import njit

from spikecut.errors import CorruptFileError, EventDataError, EventFileError, TruncatedFileError
from spikecut.sources.events import EVENT_DTYPE, StreamInfo, empty_events

#: Default upper bound on the number of events in one chunk.
DEFAULT_CHUNK_EVENTS = 1 << 16
#: How many bytes a reader reads from its file at a time.
BLOCK_BYTES = 1 << 20
#: Longest header we accept before calling a file corrupt (jAER headers reach ~175 KB).
MAX_HEADER_BYTES = 16 << 20

_INT64_MIN = np.iinfo(np.int64).min

# Error kinds returned by the validation kernel.
_OK, _OUTSIDE, _BACKWARDS, _POLARITY = 0, 1, 2, 3


@dataclass
class ReadStats:
    """Counters of one pass over a file (reset when iteration starts again)."""

    decoded: int = 0
    events: int = 0
    dropped_out_of_sensor: int = 0
    dropped_backwards: int = 0
    clamped_backwards: int = 0
    error: EventFileError | None = None

    @property
    def dropped(self) -> int:
        return self.dropped_out_of_sensor + self.dropped_backwards


@njit(cache=True, nogil=True)
def _validate(events, width, height, t_last, jitter_us, lenient, counters):  # pragma: no cover
    """Compact `events` in place; return (kept, t_last, error kind, error index)."""
    n = 0
    for i in range(events.size):
        x = events[i].x
        y = events[i].y
        p = events[i].p
        t = events[i].t
        if x >= width or y >= height:
            if not lenient:
                return n, t_last, _OUTSIDE, i
            counters[0] += 1
            continue
        if p > 1:
            return n, t_last, _POLARITY, i
        if t < t_last:
            if t_last - t <= jitter_us:
                t = t_last
                counters[2] += 1
            elif not lenient:
                return n, t_last, _BACKWARDS, i
            else:
                counters[1] += 1
                continue
        t_last = t
        events[n].t = t
        events[n].x = x
        events[n].y = y
        events[n].p = p
        n += 1
    return n, t_last, _OK, -1


class EventValidator:
    """Checks a stream chunk by chunk against the sensor size and the arrow of time.

    Call it on each decoded chunk in order; it returns the chunk (compacted in place when lenient
    drops events, so pass arrays you own). Live sources use it the same way readers do.
    """

    def __init__(
        self,
        width: int,
        height: int,
        *,
        lenient: bool = False,
        jitter_us: int = 0,
        source: str = "events",
    ) -> None:
        self.width = int(width)
        self.height = int(height)
        self.lenient = lenient
        self.jitter_us = int(jitter_us)
        self.source = source
        self.stats = ReadStats()
        self._t_last = _INT64_MIN
        self._counters = np.zeros(3, dtype=np.int64)

    @property
    def t_last(self) -> int | None:
        return None if self._t_last == _INT64_MIN else int(self._t_last)

    def __call__(self, events: np.ndarray) -> np.ndarray:
        if events.dtype != EVENT_DTYPE:
            raise EventDataError(f"{self.source}: dtype {events.dtype} is not EVENT_DTYPE")
        start = self.stats.decoded
        self.stats.decoded += events.size
        if events.size == 0:
            return events
        t_before = self._t_last
        kept, t_last, kind, i = _validate(
            events,
            self.width,
            self.height,
            self._t_last,
            self.jitter_us,
            self.lenient,
            self._counters,
        )
        self._t_last = t_last
        stats = self.stats
        stats.dropped_out_of_sensor = int(self._counters[0])
        stats.dropped_backwards = int(self._counters[1])
        stats.clamped_backwards = int(self._counters[2])
        stats.events += kept
        if kind == _OK:
            return events[:kept]
        index = start + int(i)
        e = events[i]
        if kind == _OUTSIDE:
            raise EventDataError(
                f"{self.source}: event index {index} at (x={e['x']}, y={e['y']}) is outside the "
                f"{self.width}x{self.height} sensor; pass sensor_size=(width, height) to declare a "
                "larger sensor, or lenient=True to drop such events"
            )
        if kind == _POLARITY:
            raise EventDataError(
                f"{self.source}: event index {index} has polarity {e['p']}, not 0/1"
            )
        previous = t_last if kept else t_before
        raise EventDataError(
            f"{self.source}: timestamps go backwards at event index {index} ({previous} us -> "
            f"{e['t']} us); pass lenient=True to drop events that step back in time"
        )


class EventReader:
    """Base class of file readers: a context manager and a re-iterable source of event chunks.

    Each `iter(reader)` starts a fresh pass from the beginning of the file (so a replay can loop)
    and resets `stats`. Subclasses parse their header in `_open` and decode in `_decode`; both
    raise only `EventFileError` subclasses for bad bytes.
    """

    #: Short format name, as returned by `detect_format`.
    format: ClassVar[str] = ""
    #: How far (µs) a timestamp may step back before it is an error (see module docstring).
    jitter_us: ClassVar[int] = 0
    #: What t == 0 means for this format (see `StreamInfo`).
    time_origin: ClassVar[str] = "sensor"

    def __init__(
        self,
        path: str | Path,
        *,
        chunk_events: int = DEFAULT_CHUNK_EVENTS,
        lenient: bool = False,
        sensor_size: tuple[int, int] | None = None,
    ) -> None:
        if int(chunk_events) < 16:
            raise ValueError(f"chunk_events must be at least 16, got {chunk_events}")
        self.path = Path(path)
        self.chunk_events = int(chunk_events)
        self.lenient = lenient
        self.stats = ReadStats()
        self._validator: EventValidator | None = None
        try:
            self._file: BinaryIO = open(self.path, "rb")  # noqa: SIM115 (closed in close())
        except FileNotFoundError as exc:
            raise EventFileError("no such file", path=self.path) from exc
        except IsADirectoryError as exc:
            raise EventFileError("is a directory, not an event file", path=self.path) from exc
        try:
            self.file_size = self.path.stat().st_size
            declared = self._open()
            size = sensor_size if sensor_size is not None else declared
            if size is None:
                size = self._prescan_size()
            width, height = (int(v) for v in size)
            self.info = StreamInfo(
                width=width,
                height=height,
                source=str(self.path),
                time_origin=self._time_origin(),
                format=self.format,
            )
        except BaseException:
            self.close()
            raise

    # --- to be provided by each format -----------------------------------------------------

    def _open(self) -> tuple[int, int] | None:
        """Parse the header; return the sensor size the file declares, if any."""
        raise NotImplementedError

    def _decode(self) -> Iterator[np.ndarray]:
        """Yield decoded, unvalidated EVENT_DTYPE chunks of at most `chunk_events` events."""
        raise NotImplementedError

    def _time_origin(self) -> str:
        return self.time_origin

    def _default_size(self) -> tuple[int, int]:
        """Sensor size used when the file declares none and holds no events."""
        return (1, 1)

    # --- shared machinery ------------------------------------------------------------------

    def _prescan_size(self) -> tuple[int, int]:
        """1 + the largest coordinate found by a decoding pass (files that declare no size)."""
        max_x = max_y = -1
        try:
            for chunk in self._decode():
                if chunk.size:
                    max_x = max(max_x, int(chunk["x"].max()))
                    max_y = max(max_y, int(chunk["y"].max()))
        except (TruncatedFileError, CorruptFileError):
            if not self.lenient:
                raise
        if max_x < 0:
            return self._default_size()
        return (max_x + 1, max_y + 1)

    def __iter__(self) -> Iterator[np.ndarray]:
        validator = EventValidator(
            self.info.width,
            self.info.height,
            lenient=self.lenient,
            jitter_us=self.jitter_us,
            source=str(self.path),
        )
        self._validator = validator
        self.stats = validator.stats
        try:
            for chunk in self._decode():
                events = validator(chunk)
                if events.size:
                    yield events
        except (TruncatedFileError, CorruptFileError) as exc:
            if not self.lenient:
                raise
            self.stats.error = exc

    def read_all(self) -> np.ndarray:
        """Every event of the file in one array (the whole-file convenience)."""
        chunks = list(self)
        if not chunks:
            return empty_events()
        return chunks[0].copy() if len(chunks) == 1 else np.concatenate(chunks)

    def close(self) -> None:
        file = getattr(self, "_file", None)
        if file is not None:
            file.close()

    def __enter__(self) -> EventReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        info = getattr(self, "info", None)
        size = f" {info.width}x{info.height}" if info else ""
        return f"<{type(self).__name__} {self.format}{size} {str(self.path)!r}>"

    # --- helpers for subclasses ------------------------------------------------------------

    def _error(
        self,
        kind: type[EventFileError],
        reason: str,
        offset: int | None = None,
        index: int | None = None,
    ) -> EventFileError:
        return kind(reason, path=self.path, offset=offset, index=index)

    def _read_exact(self, offset: int, size: int, what: str) -> bytes:
        """`size` bytes at `offset`, or a TruncatedFileError saying which structure was cut."""
        self._file.seek(offset)
        data = self._file.read(size)
        if len(data) != size:
            raise self._error(
                TruncatedFileError,
                f"file ends inside the {what} ({len(data)} of {size} bytes present)",
                offset=offset,
            )
        return data

    def _blocks(self, start: int, record_bytes: int = 1) -> Iterator[tuple[int, bytes]]:
        """(offset, bytes) blocks from `start` to the end of the file, each a whole number of
        `record_bytes` except possibly the last one (the caller reports a partial record)."""
        block = max(record_bytes, BLOCK_BYTES - BLOCK_BYTES % record_bytes)
        self._file.seek(start)
        offset = start
        while True:
            data = self._file.read(block)
            if not data:
                return
            yield offset, data
            offset += len(data)

    def _new_chunk(self) -> np.ndarray:
        return np.empty(self.chunk_events, dtype=EVENT_DTYPE)


def header_lines(
    file: BinaryIO, prefix: bytes, *, end: bytes | None = None, path: Path | None = None
) -> tuple[list[str], int]:
    """Read the ASCII header lines that start with `prefix` (LF or CRLF endings).

    Stops before the first line that does not start with `prefix`, or after a line equal to `end`.
    Returns the decoded lines (without line endings) and the byte offset where data starts.
    """
    file.seek(0)
    lines: list[str] = []
    offset = 0
    while True:
        if file.read(len(prefix)) != prefix:
            break
        file.seek(offset)
        line = file.readline(MAX_HEADER_BYTES)
        if not line.endswith(b"\n"):
            if len(line) >= MAX_HEADER_BYTES:
                raise CorruptFileError(
                    f"header line longer than {MAX_HEADER_BYTES} bytes", path=path, offset=offset
                )
            raise TruncatedFileError("file ends inside a header line", path=path, offset=offset)
        offset += len(line)
        if offset > MAX_HEADER_BYTES:
            raise CorruptFileError(
                f"header longer than {MAX_HEADER_BYTES} bytes", path=path, offset=offset
            )
        text = line.rstrip(b"\r\n").decode("latin-1")
        lines.append(text)
        if end is not None and line.rstrip(b"\r\n") == end:
            break
    file.seek(offset)
    return lines, offset


def concat_chunks(chunks: list[np.ndarray]) -> np.ndarray:
    if not chunks:
        return empty_events()
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


def as_binary(data: bytes | bytearray | memoryview | np.ndarray) -> memoryview:
    """A byte view of `data` without copying."""
    if isinstance(data, np.ndarray):
        return memoryview(np.ascontiguousarray(data)).cast("B")
    return memoryview(data).cast("B")


__all__ = [
    "BLOCK_BYTES",
    "DEFAULT_CHUNK_EVENTS",
    "EventReader",
    "EventValidator",
    "ReadStats",
    "as_binary",
    "concat_chunks",
    "header_lines",
]
