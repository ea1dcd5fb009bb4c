"""N-MNIST / N-Caltech101 ATIS `.bin`: reader and writer.

Five bytes per event: x, y, (p << 7) | t[22:16], t[15:8], t[7:0]. No header, no magic: a `.bin`
is recognised by its extension only. Timestamps are 23-bit µs from the start of the recording
(`time_origin="recording"`); p = 1 is ON. Origin top-left, as tonic and the dataset's own
loader use it. As in the dataset authors' loader (and tonic), a record with y == 240 is not an
event but a timestamp overflow marker that adds 2**13 µs to every later timestamp.

The file declares no sensor size. We take the smallest of the ATIS crops these datasets use that
holds every event (34x34 for N-MNIST, 240x180 for N-Caltech101), else 1 + the largest
coordinate; `sensor_size=` overrides it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numba import njit

from spikecut.errors import EventDataError, TruncatedFileError
from spikecut.sources.reader import EventReader, keep_track, noted, tracked
from spikecut.sources.writer import EventWriter

ATIS_SENSORS = ((34, 34), (240, 180))
#: Row number that marks a timestamp overflow instead of an event.
OVERFLOW_ROW = 240
OVERFLOW_US = 1 << 13
_DONE, _FULL = 0, 1


@njit(cache=True, nogil=True)
def _atis_kernel(buf, pos, n_records, state, out, track):  # pragma: no cover (compiled)
    """state[0]: µs added by the overflow markers seen so far."""
    running = tracked(track)
    n = 0
    cap = out.size
    status = _DONE
    added = state[0]
    while pos < n_records:
        if n >= cap:
            status = _FULL
            break
        o = pos * 5
        pos += 1
        if buf[o + 1] == OVERFLOW_ROW:
            added += OVERFLOW_US
            continue
        b2 = np.int64(buf[o + 2])
        t = (((b2 & 0x7F) << 16) | (np.int64(buf[o + 3]) << 8) | np.int64(buf[o + 4])) + added
        x = np.int64(buf[o])
        y = np.int64(buf[o + 1])
        out[n].t = t
        out[n].x = x
        out[n].y = y
        out[n].p = b2 >> 7
        running = noted(running, t, x, y)
        n += 1
    state[0] = added
    keep_track(track, running)
    return pos, n, status


class AtisBinReader(EventReader):
    format = "atis_bin"
    time_origin = "recording"
    kernel_tracks = True
    typical_event_bytes = 5

    def _open(self) -> tuple[int, int] | None:
        return None

    def _default_size(self) -> tuple[int, int]:
        return ATIS_SENSORS[0]

    def _size_rule(self, max_x: int, max_y: int) -> tuple[int, int]:
        for width, height in ATIS_SENSORS:
            if max_x < width and max_y < height:
                return width, height
        return max_x + 1, max_y + 1

    def _decode(self) -> Iterator[np.ndarray]:
        state = np.zeros(1, dtype=np.int64)
        for offset, block in self._blocks(0, 5):
            n_records = block.size // 5
            pos = 0
            while pos < n_records:
                out = self._new_chunk()
                pos, n, _ = _atis_kernel(block, pos, n_records, state, out, self._track)
                if n:
                    yield out[:n]
            if block.size % 5:
                raise self._error(
                    TruncatedFileError,
                    f"file ends inside a 5-byte event ({block.size % 5} byte(s) left over)",
                    offset=offset + 5 * n_records,
                )


class AtisBinWriter(EventWriter):
    """Coordinates in a byte, rows below 240 (240 marks an overflow), t below 2**23 µs."""

    format = "atis_bin"
    max_coordinate = 256

    def _open(self) -> None:
        if self.info.height > OVERFLOW_ROW:
            raise EventDataError(
                f"{self.path}: ATIS .bin rows stop at {OVERFLOW_ROW - 1} (row {OVERFLOW_ROW} marks "
                f"a timestamp overflow); the sensor height is {self.info.height}"
            )
        super()._open()

    def _check(self, events: np.ndarray) -> None:
        super()._check(events)
        self._check_t_below(events, 1 << 23, "ATIS .bin stores 23-bit timestamps")

    def _write(self, events: np.ndarray) -> None:
        out = np.empty((events.size, 5), dtype=np.uint8)
        t = events["t"]
        out[:, 0] = events["x"]
        out[:, 1] = events["y"]
        out[:, 2] = (events["p"].astype(np.int64) << 7) | (t >> 16)
        out[:, 3] = (t >> 8) & 0xFF
        out[:, 4] = t & 0xFF
        self._file.write(out.tobytes())


__all__ = ["AtisBinReader", "AtisBinWriter"]
