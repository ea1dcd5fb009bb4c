"""N-MNIST / N-Caltech101 ATIS `.bin`: reader and writer.

Five bytes per event: x, y, (p << 7) | t[22:16], t[15:8], t[7:0]. No header, no magic: a `.bin`
is recognised by its extension only. Timestamps are 23-bit µs from the start of the recording
(`time_origin="recording"`); p = 1 is ON. Origin top-left, as tonic and the dataset's own
loader use it.

The file declares no sensor size. We take the smallest of the ATIS sensors these datasets use
that holds every event (34x34 for N-MNIST, 240x180 for N-Caltech101, 304x240 for the full ATIS),
else 1 + the largest coordinate; `sensor_size=` overrides it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numba import njit

from spikecut.errors import TruncatedFileError
from spikecut.sources.reader import EventReader
from spikecut.sources.writer import EventWriter

ATIS_SENSORS = ((34, 34), (240, 180), (304, 240))
_DONE, _FULL = 0, 1


@njit(cache=True, nogil=True)
def _atis_kernel(buf, pos, n_records, out):  # pragma: no cover (compiled)
    n = 0
    cap = out.size
    status = _DONE
    while pos < n_records:
        if n >= cap:
            status = _FULL
            break
        o = pos * 5
        b2 = np.int64(buf[o + 2])
        out[n].t = ((b2 & 0x7F) << 16) | (np.int64(buf[o + 3]) << 8) | np.int64(buf[o + 4])
        out[n].x = buf[o]
        out[n].y = buf[o + 1]
        out[n].p = b2 >> 7
        n += 1
        pos += 1
    return pos, n, status


class AtisBinReader(EventReader):
    format = "atis_bin"
    time_origin = "recording"

    def _open(self) -> tuple[int, int] | None:
        return None

    def _default_size(self) -> tuple[int, int]:
        return ATIS_SENSORS[0]

    def _prescan_size(self) -> tuple[int, int]:
        width, height = super()._prescan_size()
        for size in ATIS_SENSORS:
            if width <= size[0] and height <= size[1]:
                return size
        return width, height

    def _decode(self) -> Iterator[np.ndarray]:
        for offset, block in self._blocks(0, 5):
            buf = np.frombuffer(block, dtype=np.uint8)
            n_records = len(block) // 5
            pos = 0
            while pos < n_records:
                out = self._new_chunk()
                pos, n, _ = _atis_kernel(buf, pos, n_records, out)
                yield out[:n]
            if len(block) % 5:
                raise self._error(
                    TruncatedFileError,
                    f"file ends inside a 5-byte event ({len(block) % 5} byte(s) left over)",
                    offset=offset + 5 * n_records,
                )


class AtisBinWriter(EventWriter):
    format = "atis_bin"
    max_coordinate = 256

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
