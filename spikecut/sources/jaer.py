"""jAER AEDAT 1.0 / 2.0 and cAER AEDAT 3.1: readers, and an AEDAT 3.1 writer.

AEDAT 2.0 (jAER; CIFAR10-DVS): `#` header lines (LF or CRLF), then big-endian records of
`uint32 address, uint32 timestamp` (AEDAT 1.0: `uint16 address, uint32 timestamp`).

- Timestamps are unsigned 32-bit µs; a drop of more than 2**31 is a wrap and adds 2**32.
- The address layout comes from the `# AEChip:` line. DVS128 (and chips without an AEChip
  line): x = (a >> 1) & 0x7F, y = (a >> 8) & 0x7F, polarity bit 0, where a set bit means OFF, as
  jAER's DVS128 extractor reads it; words with bit 15 (sync/external) or bit 31 set are skipped.
  DAVIS: x = (a >> 12) & 0x3FF, y = (a >> 22) & 0x1FF, ON when bit 11 is set; words with bit 31
  (APS/IMU samples) or bit 10 (external input) set are skipped.
- Orientation: jAER mirrors the raw column (x' = width-1-x) and draws rows bottom-up. We apply
  the same mirror and turn the rows round so that y counts from the top:
  x = width - 1 - x_raw, y = height - 1 - y_raw, for both layouts.
- Sensor size: from the AEChip class (DVS128 128x128, DAVIS240 240x180, DAVIS346 346x260, ...),
  else 1 + the largest raw coordinate.

AEDAT 3.1 (cAER; DVS128 Gesture): `#` header ending in `#!END-HEADER`, then little-endian packets
with a 28-byte header. Polarity packets (type 1, 8-byte events) are decoded; other packets
are skipped by size. t = ts | (overflow << 31). cAER puts the origin at the top-left already:
x = data >> 17, y = (data >> 2) & 0x7FFF, ON when bit 1 is set; bit 0 marks a valid event.
Sensor size: a `#Sensor-Size N: WxH` line (written by our writer), else the `#Source N:` device
name, else 1 + the largest coordinate.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from datetime import datetime, timezone

import numpy as np
from numba import njit

from spikecut.errors import CorruptFileError, TruncatedFileError
from spikecut.sources.reader import EventReader, header_lines, keep_track, noted, tracked
from spikecut.sources.writer import EventWriter

_DONE, _FULL = 0, 1

DVS128_LAYOUT, DAVIS_LAYOUT = 0, 1

#: (name fragment, layout, size): matched case-insensitively against the AEChip class name.
JAER_CHIPS = (
    ("dvs128", DVS128_LAYOUT, (128, 128)),
    ("tmpdiff128", DVS128_LAYOUT, (128, 128)),
    ("davis240", DAVIS_LAYOUT, (240, 180)),
    ("dvs240", DAVIS_LAYOUT, (240, 180)),
    ("davis346", DAVIS_LAYOUT, (346, 260)),
    ("davis640", DAVIS_LAYOUT, (640, 480)),
    ("davisrgbw640", DAVIS_LAYOUT, (640, 480)),
    ("davis208", DAVIS_LAYOUT, (208, 192)),
    ("davis128", DAVIS_LAYOUT, (128, 128)),
    ("davis", DAVIS_LAYOUT, None),
)

#: cAER source names (AEDAT 3.1 `#Source` lines) with known sensor sizes.
CAER_SOURCES = (
    ("dvs128", (128, 128)),
    ("davis240", (240, 180)),
    ("davis346", (346, 260)),
    ("davis640", (640, 480)),
)


@njit(cache=True, nogil=True)
def _jaer_kernel(buf, pos, n_records, record_bytes, layout, width, height, state, out, track):
    """Decode records [pos, n_records) of a big-endian buffer; pos counts records."""
    running = tracked(track)
    last = state[0]
    wraps = state[1]
    have = state[2]
    n = 0
    cap = out.size
    status = _DONE
    while pos < n_records:
        if n >= cap:
            status = _FULL
            break
        o = pos * record_bytes
        if record_bytes == 8:
            a = (
                (np.int64(buf[o]) << 24)
                | (np.int64(buf[o + 1]) << 16)
                | (np.int64(buf[o + 2]) << 8)
                | np.int64(buf[o + 3])
            )
            o += 4
        else:
            a = (np.int64(buf[o]) << 8) | np.int64(buf[o + 1])
            o += 2
        ts = (
            (np.int64(buf[o]) << 24)
            | (np.int64(buf[o + 1]) << 16)
            | (np.int64(buf[o + 2]) << 8)
            | np.int64(buf[o + 3])
        )
        pos += 1
        if layout == 0:
            if a & 0x80008000:
                continue
            x_raw = (a >> 1) & 0x7F
            y_raw = (a >> 8) & 0x7F
            p = 1 - (a & 1)
        else:
            if a & 0x80000400:
                continue
            x_raw = (a >> 12) & 0x3FF
            y_raw = (a >> 22) & 0x1FF
            p = (a >> 11) & 1
        if have and ts < last and last - ts > (1 << 31):
            wraps += 1
        last = ts
        have = 1
        t = ts + (wraps << 32)
        # Out-of-sensor raw coordinates cannot be mirrored: keep them raw (>= size) so the
        # validator reports them.
        x = width - 1 - x_raw if x_raw < width else x_raw
        y = height - 1 - y_raw if y_raw < height else y_raw
        out[n].t = t
        out[n].x = x
        out[n].y = y
        out[n].p = p
        running = noted(running, t, x, y)
        n += 1
    state[0] = last
    state[1] = wraps
    state[2] = have
    keep_track(track, running)
    return pos, n, status


@njit(cache=True, nogil=True)
def _caer_polarity_kernel(buf, pos, n_records, overflow, out, track):  # pragma: no cover
    """Decode little-endian 8-byte polarity events [pos, n_records); skip invalid ones."""
    running = tracked(track)
    n = 0
    cap = out.size
    status = _DONE
    high = np.int64(overflow) << 31
    while pos < n_records:
        if n >= cap:
            status = _FULL
            break
        o = pos * 8
        data = (
            np.int64(buf[o])
            | (np.int64(buf[o + 1]) << 8)
            | (np.int64(buf[o + 2]) << 16)
            | (np.int64(buf[o + 3]) << 24)
        )
        ts = (
            np.int64(buf[o + 4])
            | (np.int64(buf[o + 5]) << 8)
            | (np.int64(buf[o + 6]) << 16)
            | (np.int64(buf[o + 7] & 0x7F) << 24)
        )
        pos += 1
        if not data & 1:
            continue
        t = high | ts
        x = (data >> 17) & 0x7FFF
        y = (data >> 2) & 0x7FFF
        out[n].t = t
        out[n].x = x
        out[n].y = y
        out[n].p = (data >> 1) & 1
        running = noted(running, t, x, y)
        n += 1
    keep_track(track, running)
    return pos, n, status


def _chip_from_header(lines: list[str]) -> tuple[str | None, int, tuple[int, int] | None]:
    for line in lines:
        m = re.match(r"#\s*AEChip:\s*(\S+)", line)
        if m:
            chip = m.group(1)
            name = chip.rsplit(".", 1)[-1].lower()
            for fragment, layout, size in JAER_CHIPS:
                if fragment in name:
                    return chip, layout, size
            return chip, DVS128_LAYOUT, None
    return None, DVS128_LAYOUT, (128, 128)


class Aedat2Reader(EventReader):
    """jAER AEDAT 1.0 / 2.0 (see the module docstring for layouts and orientation)."""

    format = "aedat2"
    kernel_tracks = True
    decode_before_size = False  # mirroring the coordinates needs the size

    def _open(self) -> tuple[int, int] | None:
        lines, self._data_offset = header_lines(self._file, b"#", path=self.path)
        version = lines[0] if lines else ""
        if version.startswith("#!AER-DAT1"):
            self._record_bytes = 6
        elif version.startswith("#!AER-DAT2"):
            self._record_bytes = 8
        else:
            raise self._error(
                CorruptFileError,
                f"first header line {version[:40]!r} is not #!AER-DAT1.0/2.0",
                offset=0,
            )
        self.header = lines
        self.chip, self._layout, size = _chip_from_header(lines)
        if self._record_bytes == 6 and self._layout != DVS128_LAYOUT:
            raise self._error(CorruptFileError, f"AEDAT 1.0 cannot hold {self.chip} addresses")
        return size

    def _decode(self) -> Iterator[np.ndarray]:
        rec = self._record_bytes
        # While the pre-scan looks for the size, mirror nothing (a raw coordinate is never below
        # 0): 1 + the largest raw coordinate is then the size.
        info = self._info
        width, height = (info.width, info.height) if info else (0, 0)
        state = np.zeros(4, dtype=np.int64)
        for offset, block in self._blocks(self._data_offset, rec):
            n_records = block.size // rec
            pos = 0
            while pos < n_records:
                out = self._new_chunk()
                pos, n, _ = _jaer_kernel(
                    block, pos, n_records, rec, self._layout, width, height, state, out, self._track
                )
                if n:
                    yield out[:n]
            if block.size % rec:
                raise self._error(
                    TruncatedFileError,
                    f"file ends inside a {rec}-byte AEDAT record "
                    f"({block.size % rec} byte(s) left over)",
                    offset=offset + n_records * rec,
                )


class Aedat31Reader(EventReader):
    """cAER AEDAT 3.1 polarity events (see the module docstring)."""

    format = "aedat3"
    kernel_tracks = True
    _HEADER = struct.Struct("<HHIIIIII")

    def _open(self) -> tuple[int, int] | None:
        lines, self._data_offset = header_lines(
            self._file, b"#", end=b"#!END-HEADER", path=self.path
        )
        if not lines or not lines[0].startswith("#!AER-DAT3"):
            raise self._error(CorruptFileError, "first header line is not #!AER-DAT3.x")
        if lines[-1] != "#!END-HEADER":
            raise self._error(
                TruncatedFileError if self._data_offset >= self.file_size else CorruptFileError,
                "header has no #!END-HEADER line",
                offset=self._data_offset,
            )
        self.header = lines
        for line in lines:
            m = re.match(r"#Sensor-Size\s*\d*:\s*(\d+)\s*x\s*(\d+)", line)
            if m:
                return int(m.group(1)), int(m.group(2))
        for line in lines:
            m = re.match(r"#-?Source\s*\d*:\s*(.+)", line)
            if m:
                name = m.group(1).lower()
                for fragment, size in CAER_SOURCES:
                    if fragment in name:
                        return size
        return None

    def _decode(self) -> Iterator[np.ndarray]:
        offset = self._data_offset
        header = self._HEADER
        while offset < self.file_size:
            raw = self._read_exact(offset, header.size, "28-byte packet header")
            ev_type, _source, ev_size, ts_offset, overflow, capacity, number, valid = header.unpack(
                raw
            )
            payload = offset + header.size
            if ev_size == 0 or number > capacity or valid > number:
                raise self._error(
                    CorruptFileError,
                    f"impossible packet header (type {ev_type}, event size {ev_size}, "
                    f"capacity {capacity}, number {number}, valid {valid})",
                    offset=offset,
                )
            size = ev_size * capacity
            if payload + size > self.file_size:
                raise self._error(
                    TruncatedFileError,
                    f"packet of {capacity} x {ev_size}-byte events runs past the end of the file "
                    f"({self.file_size - payload} of {size} bytes present)",
                    offset=offset,
                )
            if ev_type == 1:
                if ev_size != 8 or ts_offset != 4:
                    raise self._error(
                        CorruptFileError,
                        f"polarity packet with event size {ev_size} and timestamp offset "
                        f"{ts_offset} (expected 8 and 4)",
                        offset=offset,
                    )
                yield from self._polarity(payload, number, overflow)
            offset = payload + size

    def _polarity(self, payload: int, number: int, overflow: int) -> Iterator[np.ndarray]:
        step = self.chunk_events
        for first in range(0, number, step):
            count = min(step, number - first)
            block = self._read_exact(payload + 8 * first, 8 * count, "polarity packet")
            buf = np.frombuffer(block, dtype=np.uint8)
            pos = 0
            while pos < count:
                out = self._new_chunk()
                pos, n, _ = _caer_polarity_kernel(buf, pos, count, overflow, out, self._track)
                if n:
                    yield out[:n]


class Aedat31Writer(EventWriter):
    """AEDAT 3.1 with one polarity source: packets of up to `PACKET_EVENTS` events, split where
    the 31-bit timestamp overflows. The sensor size goes into a `#Sensor-Size 1: WxH` line."""

    format = "aedat3"
    max_coordinate = 1 << 15
    PACKET_EVENTS = 8192

    def _open(self) -> None:
        super()._open()
        w, h = self.info.width, self.info.height
        source = "DVS128" if (w, h) == (128, 128) else "spikecut"
        start = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S (TZ+0000)")
        header = (
            "#!AER-DAT3.1\r\n"
            "#Format: RAW\r\n"
            f"#Source 1: {source}\r\n"
            f"#Sensor-Size 1: {w}x{h}\r\n"
            f"#Start-Time: {start}\r\n"
            "#!END-HEADER\r\n"
        )
        self._file.write(header.encode("ascii"))

    def _write(self, events: np.ndarray) -> None:
        epochs = events["t"] >> 31
        bounds = [0, *(np.flatnonzero(np.diff(epochs)) + 1).tolist(), events.size]
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
            for first in range(start, stop, self.PACKET_EVENTS):
                self._packet(events[first : min(stop, first + self.PACKET_EVENTS)])

    def _packet(self, events: np.ndarray) -> None:
        n = events.size
        overflow = int(events["t"][0]) >> 31
        header = Aedat31Reader._HEADER.pack(1, 1, 8, 4, overflow, n, n, n)
        body = np.empty((n, 2), dtype="<u4")
        body[:, 0] = (
            1
            | (events["p"].astype(np.uint32) << 1)
            | (events["y"].astype(np.uint32) << 2)
            | (events["x"].astype(np.uint32) << 17)
        )
        body[:, 1] = events["t"] & 0x7FFFFFFF
        self._file.write(header + body.tobytes())


__all__ = ["Aedat2Reader", "Aedat31Reader", "Aedat31Writer"]
