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

Speed: our Numba kernels note, while they write a chunk, its largest t, x and y and whether time
stepped back (`new_track`); a chunk they saw nothing wrong in skips the validator's scan. A
whole-file `read_all` decodes straight into one growing array, and sizes a file that declares no
sensor size from that same pass instead of a pre-scan.
"""

from __future__ import annotations

import bisect
import re
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
#: How much of a file `header_lines` reads at first (more, doubling, while lines go on).
_HEADER_PIECE = 1 << 16

_INT64_MIN = np.iinfo(np.int64).min
#: `reset_us` of a validator that knows no clock resets.
_NO_RESET = np.iinfo(np.int64).max
#: Smallest output space handed to a kernel (an EVT 3.0 vector word expands to 12 events).
_MIN_TAKE = 64

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
    clock_rebases: int = 0
    error: EventFileError | None = None

    @property
    def dropped(self) -> int:
        return self.dropped_out_of_sensor + self.dropped_backwards


#: Events per block of `_validate`'s read-only scan.
_SCAN_BLOCK = 4096


@njit(cache=True, nogil=True)
def _scan(events, t_last, max_x, max_y):  # pragma: no cover (compiled)
    """Branch-free look at a block: (whether something is wrong in it except coordinates,
    latest t, largest x, largest y). No early exit, so the loop runs at memory speed."""
    wrong = 0
    p_bits = 0
    for i in range(events.size):
        t = events[i].t
        wrong |= t < t_last
        t_last = t
        max_x = max(max_x, events[i].x)
        max_y = max(max_y, events[i].y)
        p_bits |= events[i].p
    return wrong | (p_bits > 1), t_last, max_x, max_y


# Slots of the validator's counters array (shared with the kernel).
_OUTSIDE_DROPS, _BACK_DROPS, _CLAMPS, _MAX_X, _MAX_Y, _REBASES, _OFFSET, _GAP = range(8)
#: `_GAP` when no reconnect is pending.
_NO_GAP = -1


@njit(cache=True, nogil=True)
def _validate(
    events, width, height, t_last, jitter_us, reset_us, drop, counters
):  # pragma: no cover (compiled)
    """Compact `events` in place; return (kept, t_last, error kind, error index).

    `drop`: bit 0 drops events outside the sensor, bit 1 events too far back (else errors).
    A step back of more than `reset_us` (a restarted clock) shifts this and every later event
    by `counters[_OFFSET]`, so that the stream goes on from where it was; after a reconnect
    (`counters[_GAP]` >= 0) any step back does so, plus the gap.

    A read-only scan first, block by block: valid chunks (the usual case) are not rewritten,
    and the first block with something wrong in it is gone through event by event."""
    size = events.size
    start = 0
    offset = counters[_OFFSET]
    gap = counters[_GAP]
    while start < size and offset == 0 and gap == _NO_GAP:
        stop = min(start + _SCAN_BLOCK, size)
        wrong, t_block, max_x, max_y = _scan(
            events[start:stop], t_last, counters[_MAX_X], counters[_MAX_Y]
        )
        if wrong or max_x >= width or max_y >= height:
            break
        t_last = t_block
        counters[_MAX_X] = max_x
        counters[_MAX_Y] = max_y
        start = stop
    if start == size:
        return size, t_last, _OK, -1
    n = start
    kind = _OK
    bad = -1
    for i in range(start, size):
        x = events[i].x
        y = events[i].y
        p = events[i].p
        if x >= width or y >= height:
            if not drop & 1:
                kind, bad = _OUTSIDE, i
                break
            counters[_OUTSIDE_DROPS] += 1
            continue
        if p > 1:
            kind, bad = _POLARITY, i
            break
        t = events[i].t + offset
        if gap != _NO_GAP:  # the first event after a reconnect
            if t < t_last:
                offset += t_last + gap - t
                t = t_last + gap
                counters[_REBASES] += 1
            gap = _NO_GAP
        if t < t_last:
            behind = t_last - t
            if behind > reset_us:
                offset += behind
                t = t_last
                counters[_REBASES] += 1
            elif behind <= jitter_us:
                t = t_last
                counters[_CLAMPS] += 1
            elif drop & 2:
                counters[_BACK_DROPS] += 1
                continue
            else:
                kind, bad = _BACKWARDS, i
                break
        t_last = t
        events[n].t = t
        events[n].x = x
        events[n].y = y
        events[n].p = p
        counters[_MAX_X] = max(counters[_MAX_X], x)
        counters[_MAX_Y] = max(counters[_MAX_Y], y)
        n += 1
    counters[_OFFSET] = offset
    counters[_GAP] = gap
    return n, t_last, kind, bad


def new_track() -> np.ndarray:
    """What a decoding kernel notes about the events it emits, for `EventValidator.accept`:
    [largest t so far, largest x, largest y, 1 if some t went below the largest t before it]."""
    return np.array([_INT64_MIN, -1, -1, 0], dtype=np.int64)


@njit(cache=True, inline="always")
def tracked(track):  # pragma: no cover (compiled)
    """A kernel's running (latest t, largest x, largest y, disorder) from `track`."""
    return track[0], track[1], track[2], track[3]


@njit(cache=True, inline="always")
def noted(running, t, x, y):  # pragma: no cover (compiled)
    """`running` with one more emitted event; branch-free, as it runs per event."""
    t_hi, max_x, max_y, disorder = running
    return max(t_hi, t), max(max_x, x), max(max_y, y), disorder | (t < t_hi)


@njit(cache=True, inline="always")
def keep_track(track, running):  # pragma: no cover (compiled)
    track[0], track[1], track[2], track[3] = running


class EventValidator:
    """Checks a stream chunk by chunk against the sensor size and the arrow of time.

    Call it on each decoded chunk in order; it returns the chunk (compacted, or retimed, in place:
    pass arrays you own). File readers and live sources use it alike:

    - An event outside the sensor is an `EventDataError`, or with `drop_outside` dropped and
      counted (`stats.dropped_out_of_sensor`). A polarity other than 0/1 is always an error.
    - An event at most `jitter_us` behind the latest one moves forward to it
      (`stats.clamped_backwards`); further back it is an error, or with `drop_backwards`
      dropped and counted (`stats.dropped_backwards`).
    - With `clock_reset_us`, a step back of more than that is the device's clock restarting:
      it and every later event are shifted so that the stream goes on from where it was
      (`stats.clock_rebases`). `rebase_after(gap_us)` announces a reconnect: if the next event
      steps back at all, the stream goes on `gap_us` after where it was.

    `lenient` is the default of both drop options.
    """

    def __init__(
        self,
        width: int,
        height: int,
        *,
        lenient: bool = False,
        jitter_us: int = 0,
        source: str = "events",
        drop_outside: bool | None = None,
        drop_backwards: bool | None = None,
        clock_reset_us: int | None = None,
    ) -> None:
        self.width = int(width)
        self.height = int(height)
        self.lenient = lenient
        self.drop_outside = lenient if drop_outside is None else drop_outside
        self.drop_backwards = lenient if drop_backwards is None else drop_backwards
        self.jitter_us = int(jitter_us)
        self.clock_reset_us = clock_reset_us
        self.source = source
        self.stats = ReadStats()
        self._t_last = _INT64_MIN
        self._counters = np.array([0, 0, 0, -1, -1, 0, 0, _NO_GAP], dtype=np.int64)
        #: Kept up to date by decoding kernels while they write a chunk (see `accept`).
        self.track = new_track()

    @property
    def t_last(self) -> int | None:
        return None if self._t_last == _INT64_MIN else int(self._t_last)

    @property
    def maxima(self) -> tuple[int, int] | None:
        """Largest x and y among the events kept so far (None before any)."""
        if self._counters[_MAX_X] < 0:
            return None
        return int(self._counters[_MAX_X]), int(self._counters[_MAX_Y])

    def rebase_after(self, gap_us: int) -> None:
        """The stream reconnected after `gap_us`: a next event behind the latest one continues
        the stream `gap_us` after it (the peer's clock restarted with the connection)."""
        self._counters[_GAP] = max(int(gap_us), 0)

    def accept(self, events: np.ndarray) -> np.ndarray:
        """Validate a chunk whose decoding kernel noted its events in `self.track`.

        When the kernel saw time never go back and every coordinate inside the sensor, the
        chunk is valid without a second look at its events (the usual case, and a memory pass
        saved); otherwise it is checked event by event like `__call__`."""
        track = self.track
        counters = self._counters
        n = events.size
        if (
            track[3] == 0
            and track[1] < self.width
            and track[2] < self.height
            and counters[_OFFSET] == 0
            and counters[_GAP] == _NO_GAP
            and (n == 0 or events[n - 1]["t"] == track[0])
        ):
            self.stats.decoded += n
            self.stats.events += n
            if n:
                self._t_last = int(track[0])
                counters[_MAX_X] = track[1]
                counters[_MAX_Y] = track[2]
            return events
        try:
            return self(events)
        finally:
            track[:] = (self._t_last, counters[_MAX_X], counters[_MAX_Y], 0)

    def __call__(self, events: np.ndarray) -> np.ndarray:
        if events.dtype != EVENT_DTYPE:
            raise EventDataError(f"{self.source}: dtype {events.dtype} is not EVENT_DTYPE")
        start = self.stats.decoded
        self.stats.decoded += events.size
        if events.size == 0:
            return events
        counters = self._counters
        kept, t_last, kind, i = _validate(
            events,
            self.width,
            self.height,
            self._t_last,
            self.jitter_us,
            _NO_RESET if self.clock_reset_us is None else self.clock_reset_us,
            self.drop_outside | self.drop_backwards << 1,
            counters,
        )
        self._t_last = t_last
        stats = self.stats
        stats.dropped_out_of_sensor = int(counters[_OUTSIDE_DROPS])
        stats.dropped_backwards = int(counters[_BACK_DROPS])
        stats.clamped_backwards = int(counters[_CLAMPS])
        stats.clock_rebases = int(counters[_REBASES])
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
        raise EventDataError(
            self._backwards_message(index, int(t_last), int(e["t"]) + int(counters[_OFFSET]))
        )

    def _backwards_message(self, index: int, previous: int, t: int) -> str:
        return (
            f"{self.source}: timestamps go backwards at event index {index} ({previous} us -> "
            f"{t} us); pass lenient=True to drop events that step back in time"
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
    #: File bytes per event, roughly: sizes read_all's array up front.
    typical_event_bytes: ClassVar[int] = 8
    #: Whether decoding works before the sensor size is known (so that a file declaring no size
    #: can be sized by the events themselves; False where decoding needs the size).
    decode_before_size: ClassVar[bool] = True
    #: Whether `_decode` writes into `_new_chunk()` space (else read_all concatenates chunks).
    decodes_in_place: ClassVar[bool] = True
    #: Whether `_decode`'s kernels keep `self._track` up to date (see `EventValidator.accept`).
    kernel_tracks: ClassVar[bool] = False

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
        self._arena: _Arena | _Scratch | None = None
        self._track = new_track()
        try:
            self._file: BinaryIO = open(self.path, "rb")  # noqa: SIM115 (closed in close())
        except FileNotFoundError as exc:
            raise EventFileError("no such file", path=self.path) from exc
        except IsADirectoryError as exc:
            raise EventFileError("is a directory, not an event file", path=self.path) from exc
        self._info: StreamInfo | None = None
        try:
            self.file_size = self.path.stat().st_size
            declared = self._open()
            size = sensor_size if sensor_size is not None else declared
            if size is not None:
                self._set_size(size)
            elif not self.decode_before_size:
                self._set_size(self._prescan_size())
        except BaseException:
            self.close()
            raise

    @property
    def info(self) -> StreamInfo:
        """The stream's metadata. For a file that declares no sensor size, the first access
        pre-scans the file (read_all instead sizes it from the events it decodes anyway)."""
        if self._info is None:
            self._set_size(self._prescan_size())
        return self._info

    def _set_size(self, size: tuple[int, int]) -> None:
        width, height = (int(v) for v in size)
        try:
            self._info = StreamInfo(
                width=width,
                height=height,
                source=str(self.path),
                time_origin=self._time_origin(),
                format=self.format,
            )
        except EventDataError as exc:
            raise EventDataError(f"{self.path}: sensor size {width}x{height}: {exc}") from None

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

    def _size_rule(self, max_x: int, max_y: int) -> tuple[int, int]:
        """Sensor size of a file that declares none, from its largest coordinates."""
        return (max_x + 1, max_y + 1)

    # --- shared machinery ------------------------------------------------------------------

    def _size_from(self, maxima: tuple[int, int] | None) -> tuple[int, int]:
        return self._default_size() if maxima is None else self._size_rule(*maxima)

    def _prescan_size(self) -> tuple[int, int]:
        """Size a file that declares none with a decoding pass into one scratch chunk."""
        maxima = np.full(2, -1, dtype=np.int64)
        scratch = _Scratch(self.chunk_events)
        self._arena = scratch
        self._track = new_track()
        try:
            for chunk in self._decode():
                _max_xy(chunk, maxima)
        except (TruncatedFileError, CorruptFileError):
            if not self.lenient:
                raise
        finally:
            self._arena = None
        return self._size_from(None if maxima[0] < 0 else (int(maxima[0]), int(maxima[1])))

    def read_all(self) -> np.ndarray:
        """Every event of the file in one array (the whole-file convenience).

        Decoders write straight into that array where they can (no per-chunk arrays to join).
        A file that declares no sensor size is sized by this same pass instead of a pre-scan:
        until the end any coordinate fits, and the validator notes the largest ones.
        """
        collected: _Arena | _Chunks
        if self.decodes_in_place:
            collected = self._arena = _Arena(self._capacity_hint())
        else:
            collected = _Chunks()
        known = self._info
        try:
            for chunk in self._validated(1 << 16, 1 << 16) if known is None else self:
                collected.commit(chunk)
            chunk = None  # drop the last view so the array can shrink in place
        finally:
            self._arena = None
        if known is None:
            self._set_size(self._size_from(self._validator.maxima))
            self._validator.width, self._validator.height = self._info.width, self._info.height
        return collected.finish()

    def __iter__(self) -> Iterator[np.ndarray]:
        return self._validated()

    def _validated(
        self, width: int | None = None, height: int | None = None
    ) -> Iterator[np.ndarray]:
        validator = self._new_validator(width, height)
        check = validator.accept if self.kernel_tracks else validator
        try:
            for chunk in self._decode():
                events = check(chunk)
                if events.size:
                    yield events
        except (TruncatedFileError, CorruptFileError) as exc:
            if not self.lenient:
                raise
            self.stats.error = exc

    def _new_validator(self, width: int | None = None, height: int | None = None) -> EventValidator:
        validator = EventValidator(
            self.info.width if width is None else width,
            self.info.height if height is None else height,
            lenient=self.lenient,
            jitter_us=self.jitter_us,
            source=str(self.path),
        )
        self._validator = validator
        self._track = validator.track
        self.stats = validator.stats
        return validator

    def close(self) -> None:
        file = getattr(self, "_file", None)
        if file is not None:
            file.close()

    def __enter__(self) -> EventReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        info = getattr(self, "_info", None)
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

    def _blocks(self, start: int, record_bytes: int = 1) -> Iterator[tuple[int, np.ndarray]]:
        """(offset, bytes) blocks from `start` to the end of the file, each a whole number of
        `record_bytes` except possibly the last one (the caller reports a partial record).

        Every block is a read-only uint8 view of one buffer that the next block overwrites
        (no new object per block): copy what must outlive the iteration step."""
        block = max(record_bytes, BLOCK_BYTES - BLOCK_BYTES % record_bytes)
        left = self.file_size - start  # a small file needs no full-size buffer
        block = min(block, max(record_bytes, left + record_bytes - left % record_bytes))
        buffer = np.empty(block, dtype=np.uint8)
        self._file.seek(start)
        offset = start
        while True:
            size = self._file.readinto(buffer)
            if not size:
                return
            data = buffer[:size]
            data.flags.writeable = False
            yield offset, data
            offset += size

    def _new_chunk(self, size: int | None = None) -> np.ndarray:
        """Output space for the next decoded chunk (inside the whole-file array in read_all)."""
        size = self.chunk_events if size is None else size
        if self._arena is not None:
            return self._arena.take(size)
        return np.empty(size, dtype=EVENT_DTYPE)

    def _capacity_hint(self) -> int:
        """Expected event count, to size read_all's array (it grows if the guess is short)."""
        return max(self.file_size // self.typical_event_bytes, 1)


@njit(cache=True, nogil=True)
def _max_xy(events, maxima):  # pragma: no cover (compiled)
    for i in range(events.size):
        if events[i].x > maxima[0]:
            maxima[0] = events[i].x
        if events[i].y > maxima[1]:
            maxima[1] = events[i].y


class _Scratch:
    """The same output space for every chunk: for passes that look at events and drop them."""

    def __init__(self, size: int) -> None:
        self.buf = np.empty(size, dtype=EVENT_DTYPE)

    def take(self, n: int) -> np.ndarray:
        if n > self.buf.size:
            self.buf = np.empty(n, dtype=EVENT_DTYPE)
        return self.buf[:n]


class _Arena:
    """One growing EVENT_DTYPE array that chunks are decoded into, back to back."""

    def __init__(self, capacity: int) -> None:
        self.buf = np.empty(max(capacity, 1024), dtype=EVENT_DTYPE)
        self.size = 0

    def take(self, n: int) -> np.ndarray:
        """All the space the array has left (chunk sizes do not matter here, and bigger ones
        mean fewer calls), growing it by at least n events when less than a little is left:
        kernels stop and ask again when their output is full, so a good size guess never
        grows the array."""
        if self.buf.size - self.size < min(n, _MIN_TAKE):
            self._reserve(n)
        return self.buf[self.size :]

    def _reserve(self, n: int) -> None:
        if self.size + n > self.buf.size:
            grown = np.empty(max(self.size + n, 2 * self.buf.size), dtype=EVENT_DTYPE)
            as_records(grown)[: self.size] = as_records(self.buf)[: self.size]
            self.buf = grown

    def commit(self, chunk: np.ndarray) -> None:
        n = chunk.size
        if n == 0:
            return
        here = self.buf.ctypes.data + self.size * EVENT_DTYPE.itemsize
        if chunk.ctypes.data != here or self.size + n > self.buf.size:
            # Not decoded in place (e.g. aedat's own arrays): copy it in.
            self._reserve(n)
            as_records(self.buf)[self.size : self.size + n] = as_records(chunk)
        self.size += n

    def finish(self) -> np.ndarray:
        buf, self.buf = self.buf, None
        if self.size == 0:
            return empty_events()
        try:
            buf.resize(self.size, refcheck=True)  # realloc: usually no copy
        except ValueError:  # something still refers to it: copy instead
            return as_records(buf)[: self.size].copy().view(EVENT_DTYPE)
        return buf


class _Chunks:
    """Chunks decoded elsewhere (e.g. by aedat), joined once at the end."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []

    def commit(self, chunk: np.ndarray) -> None:
        if chunk.size:
            self.chunks.append(chunk)

    def finish(self) -> np.ndarray:
        return concat_chunks(self.chunks)


#: Bytes no header line holds: control characters other than tab and CR (LF ends a line).
_CONTROL = bytes(b for b in range(0x20) if b not in b"\t\n\r") + b"\x7f"
_CONTROL_BYTE = re.compile(b"[" + b"".join(b"\\x%02x" % b for b in _CONTROL) + b"]")


def is_header_text(line: bytes) -> bool:
    """Whether a line that starts with a header's prefix byte is header text, not binary data.

    Binary data that happens to start with the prefix byte (one headerless Prophesee stream in
    256 starts with 0x25, `%`) holds control bytes before its next 0x0A; header lines, in
    whatever 8-bit encoding, hold none but tab and CR."""
    return len(line.translate(None, _CONTROL)) == len(line)


def header_lines(
    file: BinaryIO, prefix: bytes, *, end: bytes | None = None, path: Path | None = None
) -> tuple[list[str], int]:
    """Read the text header lines that start with `prefix` (LF or CRLF endings).

    Stops before the first line that does not start with `prefix` or is not text (see
    `is_header_text`), or after a line equal to `end`. Returns the decoded lines (without line
    endings) and the byte offset where data starts (where the file is left).

    The file is read in pieces, not a line at a time, and the text rule is checked once over
    all the lines: jAER headers run to thousands of lines.
    """
    file.seek(0)
    data = file.read(_HEADER_PIECE)
    eof = len(data) < _HEADER_PIECE
    lines: list[str] = []
    starts: list[int] = []  # where each line starts, and an unfinished last one
    offset = 0
    error: EventFileError | None = None
    while True:
        newline = data.find(b"\n", offset)
        if newline < 0 and not eof and len(data) - offset <= MAX_HEADER_BYTES:
            piece = file.read(max(len(data), _HEADER_PIECE))
            eof = not piece
            data += piece
            continue
        if not data.startswith(prefix, offset):
            break
        starts.append(offset)
        if newline < 0:
            error = (
                CorruptFileError(
                    f"header line longer than {MAX_HEADER_BYTES} bytes", path=path, offset=offset
                )
                if len(data) - offset > MAX_HEADER_BYTES
                else TruncatedFileError("file ends inside a header line", path=path, offset=offset)
            )
            break
        text = data[offset:newline].rstrip(b"\r")
        offset = newline + 1
        lines.append(text.decode("latin-1"))
        if offset > MAX_HEADER_BYTES:
            error = CorruptFileError(
                f"header longer than {MAX_HEADER_BYTES} bytes", path=path, offset=offset
            )
            break
        if text == end:
            break
    taken = data[: len(data) if error is not None else offset]
    if not is_header_text(taken):
        # Binary data from the line holding the first control byte on.
        first = _CONTROL_BYTE.search(taken).start()
        k = bisect.bisect_right(starts, first) - 1
        lines, offset, error = lines[:k], starts[k], None
    if error is not None:
        raise error
    file.seek(offset)
    return lines, offset


#: Events as opaque 13-byte records: numpy copies these an order of magnitude faster than
#: structured arrays (which it copies field by field).
_RECORD = np.dtype((np.void, EVENT_DTYPE.itemsize))


def as_records(events: np.ndarray) -> np.ndarray:
    return events.view(_RECORD)


def concat_chunks(chunks: list[np.ndarray]) -> np.ndarray:
    if not chunks:
        return empty_events()
    if len(chunks) == 1:
        return chunks[0]
    return np.concatenate([as_records(c) for c in chunks]).view(EVENT_DTYPE)


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
    "is_header_text",
]
