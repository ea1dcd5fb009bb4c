"""AEDAT 4.0 (iniVation DV): reader with our own event decoder, and a writer.

The file is `#!AER-DAT4.0\\r\\n`, a uint32 length, a size-prefixed `IOHE` flatbuffer (compression,
data-table position, XML stream description), then packets `int32 stream_id, uint32 size` each
followed by a (possibly LZ4/ZSTD-compressed) size-prefixed flatbuffer, up to the data table.

Reading: we parse the IOHeader and walk the packet headers ourselves, checking every packet lies
inside the file and belongs to a declared stream, so a truncated or damaged file raises our
`TruncatedFileError`/`CorruptFileError` with the byte offset of the packet (a lenient read keeps
every packet before it). Only the first event stream (`EVTS`) is read; frame, IMU and trigger
packets are skipped unread. Coordinates are DV's: origin top-left. `t` is Unix µs.

Event packets of uncompressed and LZ4 files (LZ4_HIGH is an LZ4 frame too) we decode ourselves,
a whole chunk per call of `_fill_chunk`: it walks the packet headers (each checked to lie inside
the data and to belong to a declared stream), decompresses LZ4 frames (`spikecut.sources.lz4`),
finds the event vector in the flatbuffer (`_evts_elements`, every offset and length checked
against the packet) and turns its 16-byte structs `<i8 t, <i2 x, <i2 y, u1 on, 3 pad>` into
`EVENT_DTYPE`, without the GIL. A replay's worker thread thus decodes a chunk with one release of
the GIL while the event loop bins the previous one (python-lz4 and per-packet kernels released
and took it back a few times per packet, each time waiting for the binning thread; the `aedat`
package holds it for a whole packet). ZSTD files (zstandard is not a dependency of ours) are
still decoded by `aedat`, one aedat packet per packet header, after the same header checks.

Writing: uncompressed EVTS packets of up to `PACKET_EVENTS` events and no data table (readers
then scan the packets, as `aedat` and dv-processing do).
"""

from __future__ import annotations

import contextlib
import mmap
import struct
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
from numba import njit

from spikecut.errors import (
    CorruptFileError,
    EventFileError,
    SpikecutError,
    TruncatedFileError,
)
from spikecut.sources.events import EVENT_DTYPE, TIME_ORIGINS, from_aedat
from spikecut.sources.lz4 import (
    LZ4_ERRORS,
    LZ4_NEED_SPACE,
    LZ4_OK,
    LZ4_TOO_LARGE,
    bigger_output,
    lz4_frame,
)
from spikecut.sources.reader import EventReader, keep_track, noted, tracked
from spikecut.sources.writer import EventWriter

MAGIC = b"#!AER-DAT4.0\r\n"
_U32 = struct.Struct("<I")
_PACKET = struct.Struct("<iI")
_COMPRESSION = {0: "NONE", 1: "LZ4", 2: "LZ4_HIGH", 3: "ZSTD", 4: "ZSTD_HIGH"}


def _table_field(fb: bytes, table: int, field: int) -> int | None:
    """Absolute position of field `field` of the flatbuffer table at `table`, or None."""
    (soffset,) = struct.unpack_from("<i", fb, table)
    vtable = table - soffset
    if not 0 <= vtable <= len(fb) - 4:
        raise ValueError("vtable outside the buffer")
    vt_size, _ = struct.unpack_from("<HH", fb, vtable)
    if vt_size < 4 or vtable + vt_size > len(fb):
        raise ValueError("vtable size outside the buffer")
    slot = 4 + 2 * field
    if slot + 2 > vt_size:
        return None
    (offset,) = struct.unpack_from("<H", fb, vtable + slot)
    return table + offset if offset else None


def parse_io_header(fb: bytes) -> tuple[int, int, str]:
    """(compression, data table position, XML info) from an IOHE flatbuffer (no size prefix)."""
    (root,) = _U32.unpack_from(fb, 0)
    if fb[4:8] != b"IOHE":
        raise ValueError(f"identifier {fb[4:8]!r} is not IOHE")
    if not 8 <= root <= len(fb) - 4:
        raise ValueError("root table outside the buffer")
    compression, table_pos, info = 0, -1, ""
    pos = _table_field(fb, root, 0)
    if pos is not None:
        (compression,) = struct.unpack_from("<i", fb, pos)
    pos = _table_field(fb, root, 1)
    if pos is not None:
        (table_pos,) = struct.unpack_from("<q", fb, pos)
    pos = _table_field(fb, root, 2)
    if pos is not None:
        (rel,) = _U32.unpack_from(fb, pos)
        start = pos + rel
        (length,) = _U32.unpack_from(fb, start)
        if start + 4 + length > len(fb):
            raise ValueError("info string runs past the buffer")
        info = fb[start + 4 : start + 4 + length].decode("utf-8")
    return compression, table_pos, info


def _streams(info: str) -> dict[int, dict[str, str]]:
    """Stream id -> {'type': EVTS/FRME/..., 'sizeX', 'sizeY', 'source', ...} from the XML."""
    root = ET.fromstring(info)
    streams: dict[int, dict[str, str]] = {}
    for out_info in root.iter("node"):
        if out_info.get("name") != "outInfo":
            continue
        for node in out_info.findall("node"):
            attrs = {a.get("key"): (a.text or "") for a in node.findall("attr")}
            info_node = node.find("node[@name='info']")
            if info_node is not None:
                attrs.update({a.get("key"): (a.text or "") for a in info_node.findall("attr")})
            streams[int(node.get("name", "-1"))] = {
                "type": attrs.get("typeIdentifier", ""),
                **{k: v for k, v in attrs.items() if k},
            }
    return streams


# --- event packets: the flatbuffer and its events --------------------------------------------

#: Bytes of one DV event struct in an EVTS flatbuffer.
_DV_EVENT_BYTES = 16
# What `_evts_elements` found wrong, and the messages (with the position it returns).
_EVTS_OK, _EVTS_SHORT, _EVTS_SIZE, _EVTS_IDENTIFIER, _EVTS_ROOT, _EVTS_VTABLE = range(6)
_EVTS_FIELD, _EVTS_VECTOR, _EVTS_LENGTH = range(6, 9)
_EVTS_ERRORS = {
    _EVTS_SHORT: "event packet of {size} bytes is too short for a flatbuffer",
    _EVTS_SIZE: "flatbuffer size prefix {value} exceeds the {size} bytes of the event packet",
    _EVTS_IDENTIFIER: "event packet's flatbuffer identifier is not EVTS",
    _EVTS_ROOT: "EVTS root table offset {value} points outside the packet",
    _EVTS_VTABLE: "EVTS vtable (at {value}) lies outside the packet or has an impossible size",
    _EVTS_FIELD: "EVTS events field (at {value}) lies outside the packet",
    _EVTS_VECTOR: "EVTS event vector offset points outside the packet (to {value})",
    _EVTS_LENGTH: "EVTS event vector of {value} events runs past the end of the packet",
}


@njit(cache=True, inline="always")
def _le(fb, pos, size):  # pragma: no cover (compiled)
    """Unsigned little-endian integer of `size` bytes at `pos` (LLVM makes it one load)."""
    value = np.int64(0)
    for k in range(size):
        value |= np.int64(fb[pos + k]) << (8 * k)
    return value


@njit(cache=True, nogil=True)
def _evts_elements(fb):  # pragma: no cover (compiled)
    """Where the event vector of a size-prefixed EVTS flatbuffer lies: (position of its first
    struct, struct count, error kind, position or value the error concerns). Every offset is
    checked against the buffer before it is followed, so any bytes give an answer."""
    size = fb.size
    if size < 12:
        return 0, 0, _EVTS_SHORT, size
    end = 4 + _le(fb, 0, 4)
    if end > size:
        return 0, 0, _EVTS_SIZE, end - 4
    # Identifier `EVTS`, after the size prefix and the root offset.
    if fb[8] != 69 or fb[9] != 86 or fb[10] != 84 or fb[11] != 83:
        return 0, 0, _EVTS_IDENTIFIER, 8
    table = 4 + _le(fb, 4, 4)
    if table + 4 > end:
        return 0, 0, _EVTS_ROOT, table - 4
    soffset = _le(fb, table, 4)
    vtable = table - (soffset - (1 << 32) if soffset >= 1 << 31 else soffset)
    if vtable < 4 or vtable + 4 > end:
        return 0, 0, _EVTS_VTABLE, vtable
    vtable_size = _le(fb, vtable, 2)
    if vtable_size < 4 or vtable + vtable_size > end:
        return 0, 0, _EVTS_VTABLE, vtable
    if vtable_size < 6:  # no slot for field 0: no events
        return 0, 0, _EVTS_OK, 0
    field = _le(fb, vtable + 4, 2)
    if field == 0:  # the default: no events
        return 0, 0, _EVTS_OK, 0
    field += table
    if field + 4 > end:
        return 0, 0, _EVTS_FIELD, field
    vector = field + _le(fb, field, 4)
    if vector + 4 > end:
        return 0, 0, _EVTS_VECTOR, vector
    n = _le(fb, vector, 4)
    if vector + 4 + n * _DV_EVENT_BYTES > end:
        return 0, 0, _EVTS_LENGTH, n
    return vector + 4, n, _EVTS_OK, 0


@njit(cache=True, nogil=True)
def _evts_to_events(fb, start, out, track):  # pragma: no cover (compiled)
    """The `out.size` DV event structs from `start` into `out`; False (and nothing written) if
    they do not all lie inside `fb`. Polarity is the flatbuffer bool: any byte but 0 is ON."""
    if start < 0 or start + out.size * _DV_EVENT_BYTES > fb.size:
        return False
    running = tracked(track)
    for i in range(out.size):
        pos = start + i * _DV_EVENT_BYTES
        t = _le(fb, pos, 8)
        x = _le(fb, pos + 8, 2)
        y = _le(fb, pos + 10, 2)
        out[i].t = t
        out[i].x = x
        out[i].y = y
        out[i].p = fb[pos + 12] != 0
        running = noted(running, t, x, y)
    keep_track(track, running)
    return True


# What `_packet_header` and `_fill_chunk` report.
_FILL_FULL, _FILL_END, _FILL_NEED_SPACE, _FILL_HEADER_CUT, _FILL_UNDECLARED = range(5)
_FILL_PAST_END, _FILL_LZ4, _FILL_EVTS = range(5, 8)
# `_fill_chunk`'s state between calls: next packet header, end of the packets, and the packet
# whose events are being delivered (where: 0 none, 1 in the scratch buffer, 2 in the file).
_POS, _END, _PENDING, _P_START, _P_COUNT, _P_DONE = range(6)
_IN_SCRATCH, _IN_FILE = 1, 2


@njit(cache=True, nogil=True)
def _packet_header(data, pos, end, declared):  # pragma: no cover (compiled)
    """The packet header at `pos`, checked: (0, stream id, payload size), or (_FILL_HEADER_CUT,
    bytes left, 0), (_FILL_UNDECLARED, stream id, 0), (_FILL_PAST_END, size, bytes left)."""
    if pos + 8 > end:
        return _FILL_HEADER_CUT, end - pos, np.int64(0)
    stream_id = _le(data, pos, 4)
    if stream_id >= 1 << 31:
        stream_id -= 1 << 32
    size = _le(data, pos + 4, 4)
    known = False
    for candidate in declared:
        known |= candidate == stream_id
    if not known:
        return _FILL_UNDECLARED, stream_id, np.int64(0)
    if pos + 8 + size > end:
        return _FILL_PAST_END, size, end - pos - 8
    return 0, stream_id, size


@njit(cache=True, nogil=True)
def _fill_chunk(data, state, declared, target, compressed, scratch, out, track):  # pragma: no cover
    """Decode the packets from state[_POS] on into `out` until it is full, the packets end, or
    something is wrong; the state carries a packet that did not fit over to the next call.

    Returns (events written, status, packet offset, a, b, c): a to c are what the status's
    message names (see `Aedat4Reader._failure`). Nothing is consumed for a failed packet, so
    after _FILL_NEED_SPACE (a: the bytes LZ4 needs, b: the frame's size) a call with a bigger
    `scratch` goes on from there."""
    capacity = out.shape[0]
    filled = 0
    zero = np.int64(0)
    while True:
        where = state[_PENDING]
        if where != 0:
            k = min(state[_P_COUNT] - state[_P_DONE], capacity - filled)
            first = state[_P_START] + state[_P_DONE] * _DV_EVENT_BYTES
            part = out[filled : filled + k]
            if where == _IN_SCRATCH:
                inside = _evts_to_events(scratch, first, part, track)
            else:
                inside = _evts_to_events(data, first, part, track)
            if not inside:  # never: _evts_elements checked the vector
                return filled, _FILL_EVTS, state[_POS], _EVTS_LENGTH, state[_P_COUNT], zero
            filled += k
            state[_P_DONE] += k
            if state[_P_DONE] == state[_P_COUNT]:
                state[_PENDING] = 0
            if filled == capacity:
                return filled, _FILL_FULL, zero, zero, zero, zero
            continue
        pos = state[_POS]
        if pos >= state[_END]:
            return filled, _FILL_END, pos, zero, zero, zero
        status, stream_id, size = _packet_header(data, pos, state[_END], declared)
        if status != 0:
            return filled, status, pos, stream_id, size, zero
        body = pos + 8
        if stream_id != target:
            state[_POS] = body + size
            continue
        if compressed:
            n_out, lz4_status, value = lz4_frame(data, body, body + size, scratch)
            if lz4_status == LZ4_NEED_SPACE:
                return filled, _FILL_NEED_SPACE, pos, value, size, zero
            if lz4_status != LZ4_OK:
                return filled, _FILL_LZ4, pos, lz4_status, value, size
            start, n, error, at = _evts_elements(scratch[:n_out])
            where, fb_size = _IN_SCRATCH, n_out
        else:
            start, n, error, at = _evts_elements(data[body : body + size])
            start += body
            where, fb_size = _IN_FILE, size
        if error != _EVTS_OK:
            return filled, _FILL_EVTS, pos, error, at, fb_size
        state[_POS] = body + size
        if n:
            state[_PENDING] = where
            state[_P_START] = start
            state[_P_COUNT] = n
            state[_P_DONE] = 0


class Aedat4Reader(EventReader):
    format = "aedat4"
    time_origin = "unix"
    kernel_tracks = True  # `_evts_to_events` does (not aedat, see `_open`)

    def _open(self) -> tuple[int, int] | None:
        magic = self._file.read(len(MAGIC))
        if magic != MAGIC:
            raise self._error(CorruptFileError, f"magic {magic!r} is not {MAGIC!r}", offset=0)
        (length,) = _U32.unpack(self._read_exact(len(MAGIC), 4, "IOHeader length"))
        start = len(MAGIC) + 4
        if start + length > self.file_size:
            raise self._error(
                TruncatedFileError,
                f"IOHeader of {length} bytes runs past the end of the file",
                offset=start,
            )
        fb = self._read_exact(start, length, "IOHeader")
        try:
            compression, table_pos, info = parse_io_header(fb)
            streams = _streams(info)
        except (ValueError, struct.error, UnicodeDecodeError, ET.ParseError) as exc:
            raise self._error(
                CorruptFileError, f"unreadable IOHeader: {exc}", offset=start
            ) from exc
        if compression not in _COMPRESSION:
            raise self._error(CorruptFileError, f"unknown compression {compression}", offset=start)
        events = [i for i, s in sorted(streams.items()) if s["type"] == "EVTS"]
        if not events:
            raise self._error(CorruptFileError, "the XML description declares no EVTS stream")
        self.streams = streams
        self.stream_id = events[0]
        self.compression = _COMPRESSION[compression]
        if self.compression.startswith("ZSTD"):  # aedat decodes into arrays of its own
            self.kernel_tracks = self.decodes_in_place = False
        self._packets_start = start + length
        end = table_pos if table_pos >= 0 else self.file_size
        if end < self._packets_start:
            raise self._error(
                CorruptFileError,
                f"data table position {table_pos} lies before the first packet",
                offset=start,
            )
        # A data table announced past the end means the recording was cut short: read the
        # packets that are complete, then report the truncation.
        self._table_missing = end > self.file_size
        self._table_pos = table_pos
        self._packets_end = min(end, self.file_size)
        # Packet headers are read from a map of the file: no system call per packet.
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        self._declared = np.array(sorted(streams), dtype=np.int64)
        self._scratch = np.empty(1 << 20, dtype=np.uint8)  # LZ4 frames' content (DV: ~150 KB)
        stream = streams[self.stream_id]
        self.sensor_source = stream.get("source", "")
        try:
            return int(stream["sizeX"]), int(stream["sizeY"])
        except (KeyError, ValueError):
            return None

    def close(self) -> None:
        packet_map = getattr(self, "_map", None)
        if packet_map is not None:
            self._map = None
            # A kernel in another thread may still read it: then it is unmapped after that.
            with contextlib.suppress(BufferError):
                packet_map.close()
        super().close()

    def _time_origin(self) -> str:
        origin = self.streams[self.stream_id].get("spikecutTimeOrigin")
        return origin if origin in TIME_ORIGINS else self.time_origin

    def _packets(self) -> Iterator[tuple[int, int, int]]:
        """(offset, stream id, payload size) of each packet, once it is checked to lie inside
        the data and to belong to a declared stream (the ZSTD path; `_fill_chunk` walks the
        headers itself)."""
        offset, end = self._packets_start, self._packets_end
        declared = self._declared
        while offset < end:
            status, stream_id, size = _packet_header(self._bytes(), offset, end, declared)
            if status != 0:
                raise self._failure(status, offset, stream_id, size)
            yield offset, int(stream_id), int(size)
            offset += _PACKET.size + int(size)
        self._check_table()

    def _decode(self) -> Iterator[np.ndarray]:
        """Chunks of `chunk_events` events, each decoded by `_fill_chunk` in one call (a packet
        that does not fit continues in the next chunk). A chunk begun before a damaged packet is
        delivered before the error."""
        if self.compression.startswith("ZSTD"):
            yield from self._decode_with_aedat()
            return
        state = np.zeros(6, dtype=np.int64)
        state[_POS], state[_END] = self._packets_start, self._packets_end
        compressed = self.compression.startswith("LZ4")
        out, filled = self._new_chunk(), 0
        while True:
            n, status, offset, a, b, c = _fill_chunk(
                self._bytes(),
                state,
                self._declared,
                self.stream_id,
                compressed,
                self._scratch,
                out[filled:],
                self._track,
            )
            filled += n
            if status == _FILL_FULL:
                yield out
                out, filled = self._new_chunk(), 0
            elif status == _FILL_NEED_SPACE:
                self._grow_scratch(int(a), int(b), int(offset))
            else:
                if filled:
                    yield out[:filled]
                if status != _FILL_END:
                    raise self._failure(status, int(offset), int(a), int(b), int(c))
                self._check_table()
                return

    def _bytes(self) -> np.ndarray:
        """The file as bytes, for one kernel call: a view of the map, so callers do not keep
        it across a `yield` (the map cannot close while a view of it lives)."""
        if self._map is None:
            raise ValueError(f"{self.path}: the reader is closed")
        return np.frombuffer(self._map, dtype=np.uint8)

    def _grow_scratch(self, needed: int, frame_size: int, offset: int) -> None:
        """Room for a bigger LZ4 frame's content (see `bigger_output`)."""
        try:
            self._scratch = bigger_output(self._scratch, needed, frame_size)
        except ValueError as exc:
            raise self._error(CorruptFileError, f"undecodable LZ4 frame: {exc}", offset) from None

    def _check_table(self) -> None:
        if self._table_missing:
            raise self._error(
                TruncatedFileError,
                f"file ends at byte {self.file_size} but announces its data table at byte "
                f"{self._table_pos}",
                offset=self.file_size,
            )

    def _failure(self, status: int, offset: int, a: int, b: int, c: int = 0) -> EventFileError:
        """The error `_packet_header` or `_fill_chunk` reported for the packet at `offset`."""
        if status == _FILL_HEADER_CUT:
            return self._error(
                TruncatedFileError, f"file ends inside a packet header ({a} of 8 bytes)", offset
            )
        if status == _FILL_UNDECLARED:
            return self._error(CorruptFileError, f"packet of undeclared stream id {a}", offset)
        if status == _FILL_PAST_END:
            return self._error(
                TruncatedFileError,
                f"packet of {a} bytes runs past the end of the data ({b} bytes left)",
                offset,
            )
        if status == _FILL_LZ4:
            if a == LZ4_TOO_LARGE:
                reason = f"LZ4 frame of {c} bytes declares {b} bytes of content"
            else:
                reason = "undecodable LZ4 frame: " + LZ4_ERRORS[a].format(value=b)
            return self._error(CorruptFileError, reason, offset)
        return self._error(CorruptFileError, _EVTS_ERRORS[a].format(size=c, value=b), offset)

    def _decode_with_aedat(self) -> Iterator[np.ndarray]:
        """ZSTD files: aedat decodes each packet whose header `_packets` checked."""
        import aedat

        decoder = None
        target, step = self.stream_id, self.chunk_events
        for offset, stream_id, _ in self._packets():
            if decoder is None:
                decoder = self._aedat_decoder(aedat)
            packet = self._next_packet(decoder, offset)
            if packet["stream_id"] != stream_id:
                raise self._error(
                    CorruptFileError,
                    f"aedat decoded stream {packet['stream_id']} where the file has stream "
                    f"{stream_id}",
                    offset=offset,
                )
            if stream_id == target:
                events = packet.get("events")
                if events is not None:
                    if events.dtype.itemsize == EVENT_DTYPE.itemsize:
                        events = np.frombuffer(events, dtype=EVENT_DTYPE)
                    else:
                        events = from_aedat(events)
                    if events.size <= step:
                        yield events
                    else:
                        for first in range(0, events.size, step):
                            yield events[first : first + step]

    def _aedat_decoder(self, aedat: Any) -> Any:
        try:
            return aedat.Decoder(str(self.path))
        except Exception as exc:  # the Rust decoder raises plain exceptions
            raise self._error(CorruptFileError, f"aedat cannot open the file: {exc}") from exc

    def _next_packet(self, decoder: Any, offset: int) -> dict:
        try:
            return next(decoder)
        except StopIteration:
            raise self._error(
                CorruptFileError, "aedat found no packet here", offset=offset
            ) from None
        except BaseException as exc:  # includes pyo3's PanicException
            if isinstance(exc, (KeyboardInterrupt, SystemExit, SpikecutError)):
                raise
            raise self._error(
                CorruptFileError, f"undecodable packet: {exc}", offset=offset
            ) from exc


# --- writer ----------------------------------------------------------------------------------


def io_header(info_xml: str, compression: int = 0, data_table_position: int = -1) -> bytes:
    """A size-prefixed IOHE flatbuffer. Scalars are aligned relative to the size prefix, as
    flatbuffers' own builders do."""
    text = info_xml.encode("utf-8")
    fb = bytearray()
    fb += _U32.pack(24) + b"IOHE"
    fb += struct.pack("<5H", 10, 20, 4, 12, 8) + bytes(6)  # vtable at 8, padded to 24
    fb += struct.pack("<iiIq", 16, compression, 44 - 32, data_table_position)  # table at 24
    fb += _U32.pack(len(text)) + text + b"\0"  # string at 44
    fb += bytes(-len(fb) % 4)
    return _U32.pack(len(fb)) + bytes(fb)


def event_packet(events: np.ndarray) -> bytes:
    """A size-prefixed EVTS flatbuffer holding `events` as 16-byte structs."""
    n = events.size
    body = np.zeros(n, dtype=[("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("on", "u1"), ("_", "V3")])
    body["t"] = events["t"]
    body["x"] = events["x"]
    body["y"] = events["y"]
    body["on"] = events["p"]
    head = _U32.pack(16) + b"EVTS" + struct.pack("<3H", 6, 8, 4) + bytes(2)  # vtable at 8
    head += struct.pack("<iI", 8, 4) + _U32.pack(n)  # table at 16, vector at 24
    fb = head + body.tobytes()
    return _U32.pack(len(fb)) + fb


class Aedat4Writer(EventWriter):
    format = "aedat4"
    max_coordinate = 1 << 15
    PACKET_EVENTS = 16384

    def _open(self) -> None:
        super()._open()
        info = self.info
        xml = (
            '<dv version="2.0">\n'
            '    <node name="outInfo" path="/mainloop/Recorder/outInfo/">\n'
            '        <node name="0" path="/mainloop/Recorder/outInfo/0/">\n'
            '            <attr key="compression" type="string">NONE</attr>\n'
            '            <attr key="originalModuleName" type="string">spikecut</attr>\n'
            '            <attr key="originalOutputName" type="string">events</attr>\n'
            '            <attr key="typeDescription" type="string">'
            "Array of events (polarity ON/OFF).</attr>\n"
            '            <attr key="typeIdentifier" type="string">EVTS</attr>\n'
            '            <node name="info" path="/mainloop/Recorder/outInfo/0/info/">\n'
            f'                <attr key="sizeX" type="int">{info.width}</attr>\n'
            f'                <attr key="sizeY" type="int">{info.height}</attr>\n'
            f'                <attr key="source" type="string">{escape(info.source)}</attr>\n'
            '                <attr key="tsOffset" type="long">0</attr>\n'
            '                <attr key="spikecutTimeOrigin" type="string">'
            f"{info.time_origin}</attr>\n"
            "            </node>\n"
            "        </node>\n"
            "    </node>\n"
            "</dv>\n"
        )
        self._file.write(MAGIC + io_header(xml))

    def _write(self, events: np.ndarray) -> None:
        for first in range(0, events.size, self.PACKET_EVENTS):
            payload = event_packet(events[first : first + self.PACKET_EVENTS])
            self._file.write(_PACKET.pack(0, len(payload)) + payload)


__all__ = ["Aedat4Reader", "Aedat4Writer", "event_packet", "io_header", "parse_io_header"]
