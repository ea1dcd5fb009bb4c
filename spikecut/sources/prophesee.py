"""Prophesee RAW (EVT 2.0, EVT 3.0) and DAT v2: incremental decoders, readers, writers.

Timestamps follow OpenEB, Prophesee's reference decoder:

- Words before the first TIME_HIGH are skipped (there is no time base yet).
- EVT 3.0: t = (time_high << 12) + time_low. A TIME_HIGH sets t to its base (time_low 0) and
  a TIME_LOW sets the low 12 bits. The 24-bit base loops every 16,777,216 µs; a loop is
  detected on TIME_HIGH only, when the new base is below the previous one by at least
  (4095 - 10) << 12 µs. TIME_LOW going down without a TIME_HIGH change is *not* a loop:
  the sensor emits events a few µs out of order.
- EVT 2.0: t = (time_high << 6) + the 6 low bits of each CD word. The 34-bit time loops after
  about 4 h 46 min; the same loop rule applies to TIME_HIGH.

So decoded timestamps can step back by a few µs. Readers fix that with the `jitter_us` rule of
`spikecut.sources.reader` (moving such events to the previous t); the decoders themselves return
the reference timestamps untouched.

Orientation: Prophesee coordinates already have the origin at the top-left, x to the right,
y down, like our event model. Polarity: CD_ON / bit set = 1.

The decoders are incremental, for files and live byte streams alike: `Evt3Decoder().decode(b)`
accepts any split of the byte stream (odd bytes, half words, one byte at a time) and returns the
events completed so far; all state (partial word, time base and loop count, current y, vector
base x and polarity) lives in the decoder between calls. On a live stream::

    header = None
    buffered = b""
    decoder = Evt3Decoder(source="raw+tcp://camera:5000")
    validator = EventValidator(1280, 720, jitter_us=PROPHESEE_JITTER_US, lenient=True)
    while data := await stream.read(65536):
        if header is None:  # a RAW stream may start with the file's `%` header
            buffered += data
            header = parse_raw_header(buffered)
            if header is None:
                continue  # the header may go on
            data = buffered[header.length :]
        try:
            events = decoder.decode(data)  # a new array, owned by the caller
        except CorruptFileError as exc:  # an undefined word; nothing is lost:
            log(exc)  # the events before it come with the next call, which goes on after it
            continue
        yield validator(events)  # sensor bounds and time order, jitter clamped
    decoder.finish()  # TruncatedFileError if the peer stopped in the middle of a word

`decoder.chunks(data, max_events)` yields bounded chunks instead of one array; `reset()`
starts over (e.g. after a reconnect, since the time base must be re-learnt from a TIME_HIGH).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numba import njit

from spikecut.errors import CorruptFileError, TruncatedFileError
from spikecut.sources.events import EVENT_DTYPE
from spikecut.sources.reader import (
    DEFAULT_CHUNK_EVENTS,
    MAX_HEADER_BYTES,
    EventReader,
    as_binary,
    concat_chunks,
    header_lines,
    is_header_text,
    keep_track,
    new_track,
    noted,
    tracked,
)
from spikecut.sources.writer import EventWriter

# Kernel return status.
_DONE, _FULL, _BAD = 0, 1, 2
#: Unsigned 1, to count with unsigned indices in kernels (uint64 + int64 is float64 in Numba).
_ONE = np.uint64(1)

# EVT 3.0 time-base loop constants (OpenEB).
_EVT3_MAX_BASE = ((1 << 12) - 1) << 12
_EVT3_LOOP = _EVT3_MAX_BASE + (1 << 12)
_EVT3_THRESHOLD = 10 << 12
#: A TIME_HIGH base this far below the previous one means the 24-bit time looped.
_EVT3_LOOP_DROP = _EVT3_MAX_BASE - _EVT3_THRESHOLD
# EVT 2.0 equivalents (28-bit TIME_HIGH holding t bits 33..6).
_EVT2_MAX_BASE = ((1 << 28) - 1) << 6
_EVT2_LOOP = _EVT2_MAX_BASE + (1 << 6)
_EVT2_THRESHOLD = 10 << 6
_EVT2_LOOP_DROP = _EVT2_MAX_BASE - _EVT2_THRESHOLD

#: Sensor sizes of Prophesee camera plugins, for RAW headers that carry no geometry.
PLUGIN_SIZES = (
    ("gen41", (1280, 720)),
    ("imx636", (1280, 720)),
    ("gen31", (640, 480)),
    ("gen3", (640, 480)),
    ("imx8", (320, 320)),
    ("genx320", (320, 320)),
)

#: How far back (µs) a Prophesee timestamp may step before a reader calls it an error.
PROPHESEE_JITTER_US = 1000


# --- kernels ---------------------------------------------------------------------------------
# State layouts (int64 arrays) are private to each kernel; see the decoder classes.


@njit(cache=True, inline="always")
def _next_base(raw, base, have_base, loops, loop, drop):  # pragma: no cover (compiled)
    """(time base, loops) after a TIME_HIGH word worth `raw` µs: a base `drop` or more below the
    previous one means the counter wrapped around once more (EVT 2.0 and 3.0 alike)."""
    new_base = raw + loops * loop
    if have_base and base > new_base and base - new_base >= drop:
        new_base += loop
        loops += 1
    return new_base, loops


@njit(cache=True, nogil=True)
def _evt2_kernel(words, pos, state, out, track):  # pragma: no cover (compiled)
    """Indices are unsigned: Numba then leaves out negative-index wraparound, whose extra
    registers made LLVM spill the loop's state to the stack (a third of the time)."""
    running = tracked(track)
    base = state[0]
    have_base = state[1]
    loops = state[2]
    i = np.uint64(pos)
    n = np.uint64(0)
    cap = np.uint64(out.size)
    size = np.uint64(words.size)
    status = _DONE
    while not have_base and i < size:  # no time base yet: skip what precedes the first TIME_HIGH
        kind = np.int64(words[i]) >> 28
        if kind == 0x8 or (kind > 1 and kind != 0xA and kind != 0xE and kind != 0xF):
            break  # TIME_HIGH, or an undefined word: for the loop below
        i += _ONE
    while i < size and status == _DONE:
        if n == cap:
            status = _FULL
            break
        # A word makes at most one event: up to `stop` the output cannot fill up.
        stop = min(size, i + (cap - n))
        while i < stop:
            w = np.int64(words[i])
            kind = w >> 28
            if kind <= 1:
                t = base + ((w >> 22) & 0x3F)
                x = (w >> 11) & 0x7FF
                y = w & 0x7FF
                out[n].t = t
                out[n].x = x
                out[n].y = y
                out[n].p = kind
                n += _ONE
                running = noted(running, t, x, y)
            elif kind == 0x8:
                base, loops = _next_base(
                    (w & 0x0FFFFFFF) << 6, base, have_base, loops, _EVT2_LOOP, _EVT2_LOOP_DROP
                )
                have_base = 1
            elif kind != 0xA and kind != 0xE and kind != 0xF:
                status = _BAD
                break
            i += _ONE
    state[0] = base
    state[1] = have_base
    state[2] = loops
    keep_track(track, running)
    return np.int64(i), np.int64(n), status


@njit(cache=True, nogil=True)
def _evt3_kernel(words, pos, state, out, track):  # pragma: no cover (compiled)
    """Unsigned indices, as in `_evt2_kernel`."""
    running = tracked(track)
    base = state[0]
    t = state[1]
    have_base = state[2]
    loops = state[3]
    y = state[4]
    x_base = state[5]
    polarity = state[6]
    is_em = state[7]
    i = np.uint64(pos)
    n = np.uint64(0)
    cap = np.uint64(out.size)
    size = np.uint64(words.size)
    status = _DONE
    while not have_base and i < size:  # no time base yet: skip what precedes the first TIME_HIGH
        kind = np.int64(words[i]) >> 12
        if kind == 0x8 or kind == 0x9 or kind == 0xB or kind == 0xC or kind == 0xD:
            break  # TIME_HIGH, or an undefined word: for the loop below
        i += _ONE
    while i < size:
        w = np.int64(words[i])
        kind = w >> 12
        if kind == 0x2:
            if not is_em:
                if n >= cap:
                    status = _FULL
                    break
                x = w & 0x7FF
                out[n].t = t
                out[n].x = x
                out[n].y = y
                out[n].p = (w >> 11) & 1
                n += _ONE
                running = noted(running, t, x, y)
        elif kind == 0x4 or kind == 0x5:
            width = 12 if kind == 0x4 else 8
            if not is_em:
                if n + np.uint64(width) > cap:
                    status = _FULL
                    break
                mask = w & ((1 << width) - 1)
                if mask:
                    for bit in range(width):
                        if (mask >> bit) & 1:
                            out[n].t = t
                            out[n].x = x_base + bit
                            out[n].y = y
                            out[n].p = polarity
                            n += _ONE
                            x = x_base + bit  # the largest x of the vector, in the end
                    running = noted(running, t, x, y)
            x_base += width
        elif kind == 0x0:
            y = w & 0x7FF
            is_em = 0
        elif kind == 0x6:
            t = base + (w & 0xFFF)
        elif kind == 0x8:
            base, loops = _next_base(
                (w & 0xFFF) << 12, base, have_base, loops, _EVT3_LOOP, _EVT3_LOOP_DROP
            )
            t = base
            have_base = 1
        elif kind == 0x3:
            x_base = w & 0x7FF
            polarity = (w >> 11) & 1
        elif kind == 0x1:
            is_em = 1
        elif kind == 0x9 or kind == 0xB or kind == 0xC or kind == 0xD:
            status = _BAD
            break
        # 0x7 CONTINUED_4, 0xA EXT_TRIGGER, 0xE OTHERS, 0xF CONTINUED_12: nothing for CD events.
        i += _ONE
    state[0] = base
    state[1] = t
    state[2] = have_base
    state[3] = loops
    state[4] = y
    state[5] = x_base
    state[6] = polarity
    state[7] = is_em
    keep_track(track, running)
    return np.int64(i), np.int64(n), status


@njit(cache=True, nogil=True)
def _dat_kernel(words, pos, state, out, track):  # pragma: no cover (compiled)
    """`words` holds (t, data) uint32 pairs; pos counts records. 32-bit t wraps are unrolled.

    Kept lean on registers (with one more live value LLVM spills a running maximum to the
    stack, a store-to-load chain per event that costs a quarter of the time): time order is
    noted by counting the steps back, wraps included, rather than with a running maximum."""
    mx = track[1]
    my = track[2]
    last = state[0]
    wraps = state[1]
    wraps_before = wraps
    backs = 0
    left = words.size // 2 - pos
    count = min(left, out.size)
    records = words[2 * pos : 2 * (pos + count)]
    n = count
    status = _FULL if count < left else _DONE
    for i in range(count):
        t_raw = np.int64(records[2 * i])
        data = np.int64(records[2 * i + 1])
        p = data >> 28
        if p > 1:
            n = i
            status = _BAD
            break
        step = last - t_raw
        backs += step > 0
        wraps += step > (1 << 31)  # a drop of more than half the range: a wrap
        last = t_raw
        x = data & 0x3FFF
        y = (data >> 14) & 0x3FFF
        out[i].t = t_raw + (wraps << 32)
        out[i].x = x
        out[i].y = y
        out[i].p = p
        mx = max(mx, x)
        my = max(my, y)
    # A step back that was no wrap breaks the order; otherwise the chunk is in order, so only
    # its first event can be behind what came before, and its last one is its latest.
    disorder = track[3] | (backs > wraps - wraps_before)
    if n:
        disorder |= out[0].t < track[0]
        track[0] = out[n - 1].t
    state[0] = last
    state[1] = wraps
    track[1] = mx
    track[2] = my
    track[3] = disorder
    return pos + n, n, status


# --- incremental decoders --------------------------------------------------------------------


class _WordDecoder:
    word_dtype: ClassVar[np.dtype]
    name: ClassVar[str]
    state_size: ClassVar[int] = 8

    def __init__(self, *, strict: bool = True, source: str = "stream", offset: int = 0) -> None:
        self.strict = strict
        self.source = source
        #: Byte offset (in the stream or file) of the first byte not yet decoded.
        self.offset = offset
        #: Undefined words skipped (strict=False only).
        self.bad_words = 0
        self._state = np.zeros(self.state_size, dtype=np.int64)
        self._track = new_track()
        self._pending = b""
        self._carry: list[np.ndarray] = []

    @staticmethod
    def _kernel(
        words: np.ndarray, pos: int, state: np.ndarray, out: np.ndarray, track: np.ndarray
    ) -> tuple[int, int, int]:
        raise NotImplementedError

    @property
    def pending_bytes(self) -> int:
        """Bytes received but not decoded yet (an incomplete word)."""
        return len(self._pending)

    def reset(self) -> None:
        """Forget all state, as for a new stream (e.g. after a reconnect)."""
        self._state[:] = 0
        self._pending = b""
        self._carry = []

    def decode(self, data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
        """All events completed by `data` (plus those held back by a previous error).

        With `strict=True`, an undefined word raises `CorruptFileError` naming its byte offset.
        Nothing is lost: events decoded before the bad word are returned by the next call, and
        the next call carries on after the bad word. With `strict=False` undefined words are
        skipped and counted in `bad_words`.
        """
        parts = self._carry
        self._carry = []
        try:
            parts.extend(self.chunks(data))
        except CorruptFileError:
            self._carry = parts
            raise
        return concat_chunks(parts)

    def chunks(
        self,
        data: bytes | bytearray | memoryview | np.ndarray,
        max_events: int = DEFAULT_CHUNK_EVENTS,
        allocate: Callable[[int], np.ndarray] | None = None,
        track: np.ndarray | None = None,
    ) -> Iterator[np.ndarray]:
        """Decode `data`, yielding chunks of at most `max_events` events (bounded memory).

        `allocate(n)` provides the output space of each chunk (default: a new array); `track`
        is an `EventValidator.track` to keep up to date (see `EventValidator.accept`)."""
        track = self._track if track is None else track
        wb = self.word_dtype.itemsize
        view = as_binary(data)
        if self._pending:
            buf: bytes | memoryview = self._pending + bytes(view)
        else:
            buf = view
        n_words = len(buf) // wb
        words = np.frombuffer(buf, dtype=self.word_dtype, count=n_words)
        if not words.flags.aligned:
            words = words.copy()
        if words.flags.writeable:
            words = words.view()
            words.flags.writeable = False
        self._pending = bytes(buf[n_words * wb :])
        pos = 0
        while pos < n_words:
            size = max(max_events, 16)
            out = np.empty(size, dtype=EVENT_DTYPE) if allocate is None else allocate(size)
            new_pos, n, status = self._kernel(words, pos, self._state, out, track)
            self.offset += (new_pos - pos) * wb
            pos = new_pos
            if n:
                yield out[:n] if allocate is not None or n > size // 2 else out[:n].copy()
            if status == _BAD:
                bad = int(words[pos])
                bad_offset = self.offset
                pos += 1
                self.offset += wb
                if self.strict:
                    self._pending = words[pos:].tobytes() + self._pending
                    raise CorruptFileError(
                        f"undefined {self.name} word 0x{bad:0{2 * wb}X} "
                        f"(type 0x{self._word_type(bad):X})",
                        path=self.source,
                        offset=bad_offset,
                    )
                self.bad_words += 1

    def finish(self) -> None:
        """Declare the end of the stream: a partial word left over is a truncation."""
        if self._pending:
            raise TruncatedFileError(
                f"stream ends inside a {self.word_dtype.itemsize}-byte {self.name} word "
                f"({len(self._pending)} byte(s) left over)",
                path=self.source,
                offset=self.offset,
            )

    def _word_type(self, word: int) -> int:
        raise NotImplementedError


class Evt2Decoder(_WordDecoder):
    """Incremental EVT 2.0 decoder: 32-bit little-endian words, `type = word >> 28`.

    Keeps between calls: the partial word, the TIME_HIGH base and its loop count. Defined word
    types: CD_OFF 0x0, CD_ON 0x1, TIME_HIGH 0x8, EXT_TRIGGER 0xA, OTHERS 0xE, CONTINUED 0xF.
    """

    word_dtype = np.dtype("<u4")
    name = "EVT 2.0"

    @staticmethod
    def _kernel(words, pos, state, out, track):
        return _evt2_kernel(words, pos, state, out, track)

    def _word_type(self, word: int) -> int:
        return word >> 28


class Evt3Decoder(_WordDecoder):
    """Incremental EVT 3.0 decoder: 16-bit little-endian words, `type = word >> 12`.

    Keeps between calls: the partial word, time base (TIME_HIGH) with its loop count, current
    time (TIME_LOW), y (EVT_ADDR_Y), vector base x and polarity (VECT_BASE_X), and whether the
    current row holds CD or exposure-measurement (type 0x1) events. Vector words VECT_12/VECT_8
    expand to up to 12/8 events and advance the base x. Undefined types: 0x9, 0xB, 0xC, 0xD.
    """

    word_dtype = np.dtype("<u2")
    name = "EVT 3.0"

    @staticmethod
    def _kernel(words, pos, state, out, track):
        return _evt3_kernel(words, pos, state, out, track)

    def _word_type(self, word: int) -> int:
        return word >> 12


# --- encoders (writers, tests, stream emulation) ----------------------------------------------


@njit(cache=True, nogil=True)
def _time_high(out, n, base, new_base, kind, low_bits, loop_bits):  # pragma: no cover
    """Write the TIME_HIGH word of `new_base` at out[n] (its type bits in `kind`, the time above
    `low_bits` below them), after crossing each loop boundary (every 2**loop_bits µs) from
    `base` (0 before the first word) explicitly, so that a decoder counts it; return the next
    free index."""
    high = (1 << (loop_bits - low_bits)) - 1
    while (base >> loop_bits) < (new_base >> loop_bits):
        out[n] = kind | high
        out[n + 1] = kind
        n += 2
        base = ((base >> loop_bits) + 1) << loop_bits
    out[n] = kind | ((new_base >> low_bits) & high)
    return n + 1


@njit(cache=True, nogil=True)
def _evt3_encode(events, state, out):  # pragma: no cover (compiled)
    """state: [0] have time high, [1] current base, [2] current t, [3] have y, [4] y."""
    n = 0
    have = state[0]
    base = state[1]
    t_cur = state[2]
    have_y = state[3]
    y_cur = state[4]
    for i in range(events.size):
        t = events[i].t
        new_base = t - (t & 0xFFF)
        if not have or new_base != base:
            n = _time_high(out, n, base, new_base, 0x8000, 12, 24)
            base = new_base
            have = 1
            # Always follow TIME_HIGH with TIME_LOW, as sensors do (some decoders keep the
            # previous TIME_LOW across a TIME_HIGH).
            out[n] = 0x6000 | (t & 0xFFF)
            n += 1
            t_cur = t
        if t != t_cur:
            out[n] = 0x6000 | (t & 0xFFF)
            n += 1
            t_cur = t
        y = events[i].y
        if not have_y or y != y_cur:
            out[n] = y
            n += 1
            y_cur = y
            have_y = 1
        out[n] = 0x2000 | (events[i].p << 11) | events[i].x
        n += 1
    state[0] = have
    state[1] = base
    state[2] = t_cur
    state[3] = have_y
    state[4] = y_cur
    return n


@njit(cache=True, nogil=True)
def _evt2_encode(events, state, out):  # pragma: no cover (compiled)
    """state: [0] have time high, [1] current base (t without its 6 low bits)."""
    n = 0
    have = state[0]
    base = state[1]
    for i in range(events.size):
        t = events[i].t
        new_base = t - (t & 0x3F)
        if not have or new_base != base:
            n = _time_high(out, n, base, new_base, 0x80000000, 6, 34)
            base = new_base
            have = 1
        out[n] = (
            (np.int64(events[i].p) << 28)
            | ((t & 0x3F) << 22)
            | (np.int64(events[i].x) << 11)
            | events[i].y
        )
        n += 1
    state[0] = have
    state[1] = base
    return n


class _WordEncoder:
    word_dtype: ClassVar[np.dtype]
    loop_bits: ClassVar[int]
    words_per_event: ClassVar[int]

    def __init__(self) -> None:
        self._state = np.zeros(8, dtype=np.int64)
        self._t_last = 0

    def encode(self, events: np.ndarray) -> bytes:
        """Words for time-ordered `events` (coordinates below 2048), continuing the stream."""
        if events.size == 0:
            return b""
        t_last = int(events["t"][-1])
        previous = self._t_last if self._state[0] else 0  # loops are crossed from 0 at first
        loops = (t_last >> self.loop_bits) - (previous >> self.loop_bits) + 1
        out = np.empty(events.size * self.words_per_event + 2 * loops + 4, dtype=self.word_dtype)
        n = self._encode(np.ascontiguousarray(events), self._state, out)
        self._t_last = t_last
        return out[:n].tobytes()


class Evt3Encoder(_WordEncoder):
    """Encodes events as EVT 3.0 words (TIME_HIGH/TIME_LOW/ADDR_Y/ADDR_X, no vector words)."""

    word_dtype = np.dtype("<u2")
    loop_bits = 24
    words_per_event = 5

    @staticmethod
    def _encode(events, state, out):
        return _evt3_encode(events, state, out)


class Evt2Encoder(_WordEncoder):
    """Encodes events as EVT 2.0 words (TIME_HIGH, CD_OFF/CD_ON)."""

    word_dtype = np.dtype("<u4")
    loop_bits = 34
    words_per_event = 2

    @staticmethod
    def _encode(events, state, out):
        return _evt2_encode(events, state, out)


# --- headers ---------------------------------------------------------------------------------


def _parse_geometry(lines: list[str]) -> tuple[int, int] | None:
    width = height = None
    for line in lines:
        body = line[1:].strip()
        m = re.match(r"geometry\s+(\d+)\s*x\s*(\d+)", body, re.IGNORECASE)
        if m:
            return int(m.group(1)), int(m.group(2))
        m = re.match(r"format\s+\S+", body, re.IGNORECASE)
        if m:
            w = re.search(r"width=(\d+)", body)
            h = re.search(r"height=(\d+)", body)
            if w and h:
                return int(w.group(1)), int(h.group(1))
        m = re.match(r"(width|height)\s+(\d+)$", body, re.IGNORECASE)
        if m:
            if m.group(1).lower() == "width":
                width = int(m.group(2))
            else:
                height = int(m.group(2))
    if width and height:
        return width, height
    return None


def raw_header_version(lines: list[str]) -> str | None:
    """'evt2', 'evt3', 'evt21' or None, from `% evt X.Y` or `% format EVTx` lines."""
    for line in lines:
        body = line[1:].strip().lower()
        m = re.match(r"evt\s+(\d)\.(\d)", body)
        if m:
            return f"evt{m.group(1)}" if m.group(2) == "0" else f"evt{m.group(1)}{m.group(2)}"
        m = re.match(r"format\s+evt(\d)(?:\.(\d))?", body)
        if m:
            minor = m.group(2) or "0"
            return f"evt{m.group(1)}" if minor == "0" else f"evt{m.group(1)}{minor}"
    return None


@dataclass(frozen=True)
class RawHeader:
    """The `%` header of a RAW file or stream."""

    lines: list[str]
    #: Bytes the header takes, i.e. where the event words start.
    length: int
    #: 'evt2', 'evt3', 'evt21', ... as declared, or None.
    version: str | None
    #: (width, height) from the geometry lines or the camera plugin, or None.
    sensor_size: tuple[int, int] | None


def parse_raw_header(data: bytes, *, max_line: int = MAX_HEADER_BYTES) -> RawHeader | None:
    """The header at the start of RAW bytes, or None while more bytes could still extend it.

    The header is the leading text lines that start with `%` (up to and including `% end` when
    present); without `% end` it is only known to be complete once the next byte has arrived.
    Bytes that do not start with `%`, or a `%` line that is not text (`is_header_text`: binary
    data starting with 0x25), are not header. An unfinished line longer than `max_line` bytes
    is a `CorruptFileError`.
    """
    lines: list[str] = []
    pos = 0
    while True:
        if pos == len(data):
            return None
        if data[pos : pos + 1] != b"%":
            break
        end = data.find(b"\n", pos)
        line = data[pos : len(data) if end < 0 else end]
        if not is_header_text(line):
            break
        if end < 0:
            if len(line) > max_line:
                raise CorruptFileError(f"header line longer than {max_line} bytes", offset=pos)
            return None
        text = line.rstrip(b"\r").decode("latin-1")
        lines.append(text)
        pos = end + 1
        if text == "% end":
            break
    return RawHeader(
        lines=lines,
        length=pos,
        version=raw_header_version(lines),
        sensor_size=_parse_geometry(lines) or _plugin_size(lines),
    )


def _plugin_size(lines: list[str]) -> tuple[int, int] | None:
    for line in lines:
        body = line[1:].strip().lower()
        if body.startswith(("plugin_name", "sensor_generation", "camera_integrator_name")):
            for key, size in PLUGIN_SIZES:
                if key in body.replace(".", ""):
                    return size
    return None


# --- readers ---------------------------------------------------------------------------------


class _RawReader(EventReader):
    """Prophesee RAW. Sensor size: `% geometry`, `% format ...;width=;height=`, `% Width/Height`,
    else the camera plugin named in the header (gen3 → 640x480, gen4.1/IMX636 → 1280x720), else
    1 + the largest coordinate found by a pre-scan."""

    decoder: ClassVar[type[_WordDecoder]]
    jitter_us = PROPHESEE_JITTER_US
    kernel_tracks = True

    def _open(self) -> tuple[int, int] | None:
        lines, self._data_offset = header_lines(self._file, b"%", end=b"% end", path=self.path)
        version = raw_header_version(lines)
        if version is not None and version != self.format:
            raise self._error(
                CorruptFileError,
                f"header declares {version.upper()} but the file was opened as "
                f"{self.format.upper()}",
            )
        self.header = lines
        return _parse_geometry(lines) or _plugin_size(lines)

    def _decode(self) -> Iterator[np.ndarray]:
        decoder = self.decoder(source=str(self.path), offset=self._data_offset)
        for _, block in self._blocks(self._data_offset, decoder.word_dtype.itemsize):
            yield from decoder.chunks(block, self.chunk_events, self._new_chunk, self._track)
        decoder.finish()


class Evt2Reader(_RawReader):
    format = "evt2"
    typical_event_bytes = 4
    decoder = Evt2Decoder


class Evt3Reader(_RawReader):
    format = "evt3"
    typical_event_bytes = 2
    decoder = Evt3Decoder


class DatReader(EventReader):
    """Prophesee DAT v2: `%` header, event type and size bytes, then 8-byte records
    (<u4 t, <u4 data: x bits 0-13, y bits 14-27, p bits 28-31). Sensor size from `% Width` /
    `% Height` or `% geometry`, else 1 + the largest coordinate (N-CARS headers carry none)."""

    format = "dat"
    jitter_us = PROPHESEE_JITTER_US
    kernel_tracks = True

    def _open(self) -> tuple[int, int] | None:
        lines, offset = header_lines(self._file, b"%", end=b"% end", path=self.path)
        type_size = self._read_exact(offset, 2, "event type and size bytes")
        ev_type, ev_size = type_size[0], type_size[1]
        if ev_type not in (0, 12) or ev_size != 8:
            raise self._error(
                CorruptFileError,
                f"DAT event type {ev_type} with size {ev_size} is not a CD event layout "
                "(expected type 0 or 12, size 8)",
                offset=offset,
            )
        self._data_offset = offset + 2
        self.header = lines
        return _parse_geometry(lines)

    def _capacity_hint(self) -> int:
        return max((self.file_size - self._data_offset) // 8, 1)

    def _decode(self) -> Iterator[np.ndarray]:
        state = np.zeros(4, dtype=np.int64)
        index = 0
        for offset, block in self._blocks(self._data_offset, 8):
            n_records = block.size // 8
            words = block[: 8 * n_records].view("<u4")
            pos = 0
            while pos < n_records:
                out = self._new_chunk()
                pos, n, status = _dat_kernel(words, pos, state, out, self._track)
                if n:
                    yield out[:n]
                if status == _BAD:
                    data = int(words[2 * pos + 1])
                    raise self._error(
                        CorruptFileError,
                        f"DAT record has polarity field {data >> 28} (word 0x{data:08X}); "
                        "CD events have 0 or 1",
                        offset=offset + 8 * pos,
                        index=index + pos,
                    )
            if block.size % 8:
                # Only the last block can be partial: report where the cut record starts.
                raise self._error(
                    TruncatedFileError,
                    f"file ends inside an 8-byte DAT record ({block.size % 8} byte(s) left over)",
                    offset=offset + n_records * 8,
                )
            index += n_records


# --- writers ---------------------------------------------------------------------------------


class _RawWriter(EventWriter):
    encoder: ClassVar[type[_WordEncoder]]
    version: ClassVar[str]
    max_coordinate = 2048

    def _open(self) -> None:
        super()._open()
        w, h = self.info.width, self.info.height
        header = (
            f"% evt {self.version}\n"
            f"% format {self.format.upper()};height={h};width={w}\n"
            f"% geometry {w}x{h}\n"
            "% integrator_name spikecut\n"
            "% end\n"
        )
        self._file.write(header.encode("ascii"))
        self._encoder = self.encoder()

    def _write(self, events: np.ndarray) -> None:
        self._file.write(self._encoder.encode(events))


class Evt3Writer(_RawWriter):
    format = "evt3"
    version = "3.0"
    encoder = Evt3Encoder


class Evt2Writer(_RawWriter):
    format = "evt2"
    version = "2.0"
    encoder = Evt2Encoder


class DatWriter(EventWriter):
    """DAT v2 with `% Width`/`% Height`; timestamps must stay below 2**32 µs (no wrap marker)."""

    format = "dat"
    max_coordinate = 1 << 14

    def _open(self) -> None:
        super()._open()
        header = (
            "% Data file containing CD events.\n"
            "% Version 2\n"
            f"% Width {self.info.width}\n"
            f"% Height {self.info.height}\n"
        )
        self._file.write(header.encode("ascii") + bytes([0, 8]))

    def _check(self, events: np.ndarray) -> None:
        super()._check(events)
        self._check_t_below(events, 1 << 32, "DAT stores 32-bit timestamps")

    def _write(self, events: np.ndarray) -> None:
        records = np.empty((events.size, 2), dtype="<u4")
        records[:, 0] = events["t"]
        records[:, 1] = (
            events["x"].astype(np.uint32)
            | (events["y"].astype(np.uint32) << 14)
            | (events["p"].astype(np.uint32) << 28)
        )
        self._file.write(records.tobytes())


__all__ = [
    "PROPHESEE_JITTER_US",
    "DatReader",
    "DatWriter",
    "Evt2Decoder",
    "Evt2Encoder",
    "Evt2Reader",
    "Evt2Writer",
    "Evt3Decoder",
    "Evt3Encoder",
    "Evt3Reader",
    "Evt3Writer",
    "RawHeader",
    "parse_raw_header",
    "raw_header_version",
]
