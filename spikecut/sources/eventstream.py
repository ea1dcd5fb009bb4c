"""Event Stream 2.x (`.es`, neuromorphic-paris/Sepia), DVS type: reader and writer.

Header: `Event Stream`, version bytes major/minor/patch (2.x.x), type byte (1 = DVS), then width
and height as little-endian uint16. Each DVS event is one byte `(t_delta << 1) | on` followed by
x and y as uint16; byte 0xFF adds 127 µs to the time without an event and 0xFE is a no-op reset
marker. Time starts at 0 (`time_origin="recording"`).

Orientation: Event Stream puts the origin at the bottom-left (y counts up). We turn rows round so
that y counts from the top: y = height - 1 - y_file. The N-CARS file
`ncars_obj_004397_loris.es` was converted from `ncars_obj_004397_td.dat` with
y_file = 239 - y_dat but declares height 239, so our two readers give y_es = y_dat - 1 for it
(t, x and p agree exactly).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import numpy as np
from numba import njit

from spikecut.errors import CorruptFileError, TruncatedFileError, UnknownFormatError
from spikecut.sources.reader import EventReader, keep_track, noted, tracked
from spikecut.sources.writer import EventWriter

MAGIC = b"Event Stream"
_TYPES = {0: "generic", 1: "dvs", 2: "atis", 3: "color"}
_DONE, _FULL, _PARTIAL = 0, 1, 2


@njit(cache=True, nogil=True)
def _es_dvs_kernel(buf, pos, state, height, out, track):  # pragma: no cover (compiled)
    running = tracked(track)
    t = state[0]
    n = 0
    cap = out.size
    size = buf.size
    status = _DONE
    while pos < size:
        b = np.int64(buf[pos])
        if b == 0xFF:
            t += 127
            pos += 1
            continue
        if b == 0xFE:
            pos += 1
            continue
        if pos + 5 > size:
            status = _PARTIAL
            break
        if n >= cap:
            status = _FULL
            break
        t += b >> 1
        y_file = np.int64(buf[pos + 3]) | (np.int64(buf[pos + 4]) << 8)
        x = np.int64(buf[pos + 1]) | (np.int64(buf[pos + 2]) << 8)
        # A row outside the sensor cannot be turned round: keep it (>= height) for the validator.
        y = height - 1 - y_file if y_file < height else y_file
        out[n].t = t
        out[n].x = x
        out[n].y = y
        out[n].p = b & 1
        running = noted(running, t, x, y)
        n += 1
        pos += 5
    state[0] = t
    keep_track(track, running)
    return pos, n, status


class EventStreamReader(EventReader):
    format = "es"
    time_origin = "recording"
    kernel_tracks = True
    typical_event_bytes = 5

    def _open(self) -> tuple[int, int] | None:
        head = self._read_exact(0, 16, "Event Stream header")
        if head[:12] != MAGIC:
            raise self._error(CorruptFileError, f"magic {head[:12]!r} is not {MAGIC!r}", offset=0)
        major, minor, patch, kind = head[12:16]
        if major != 2:
            raise self._error(
                UnknownFormatError,
                f"Event Stream version {major}.{minor}.{patch} is not supported (only 2.x)",
                offset=12,
            )
        if kind != 1:
            name = _TYPES.get(kind, f"unknown ({kind})")
            raise self._error(
                UnknownFormatError,
                f"Event Stream type {name} is not supported (only dvs)",
                offset=15,
            )
        width, height = struct.unpack("<HH", self._read_exact(16, 4, "Event Stream sensor size"))
        if width == 0 or height == 0:
            raise self._error(CorruptFileError, f"sensor size {width}x{height}", offset=16)
        self._data_offset = 20
        return width, height

    def _decode(self) -> Iterator[np.ndarray]:
        state = np.zeros(2, dtype=np.int64)
        height = self.info.height
        leftover = np.empty(0, dtype=np.uint8)
        leftover_offset = self._data_offset
        for offset, block in self._blocks(self._data_offset):
            buf = np.concatenate((leftover, block)) if leftover.size else block
            buf.flags.writeable = False  # one kernel signature for both cases
            base = leftover_offset if leftover.size else offset
            pos = 0
            while True:
                out = self._new_chunk()
                pos, n, status = _es_dvs_kernel(buf, pos, state, height, out, self._track)
                if n:
                    yield out[:n]
                if status != _FULL:
                    break
            leftover = buf[pos:].copy()  # the block's buffer is reused
            leftover_offset = base + pos
        if leftover.size:
            raise self._error(
                TruncatedFileError,
                f"file ends inside a 5-byte DVS event ({leftover.size} byte(s) present)",
                offset=leftover_offset,
            )


class EventStreamWriter(EventWriter):
    format = "es"

    def _open(self) -> None:
        super()._open()
        self._t = 0
        header = MAGIC + bytes([2, 0, 0, 1]) + struct.pack("<HH", self.info.width, self.info.height)
        self._file.write(header)

    def _write(self, events: np.ndarray) -> None:
        t = events["t"]
        deltas = np.diff(t, prepend=self._t)
        overflows = deltas // 127
        rest = deltas - 127 * overflows
        size = 5 * events.size + int(overflows.sum())
        out = np.empty(size, dtype=np.uint8)
        # Each event takes its overflow bytes, then 5 bytes.
        ends = np.cumsum(overflows + 5)
        starts = ends - 5
        out[:] = 0xFF
        out[starts] = (rest << 1) | events["p"]
        y_file = self.info.height - 1 - events["y"].astype(np.int64)
        out[starts + 1] = events["x"] & 0xFF
        out[starts + 2] = events["x"] >> 8
        out[starts + 3] = y_file & 0xFF
        out[starts + 4] = y_file >> 8
        self._file.write(out.tobytes())
        self._t = int(t[-1])


__all__ = ["EventStreamReader", "EventStreamWriter"]
