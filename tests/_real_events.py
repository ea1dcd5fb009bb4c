"""Load the real recordings of ../shared for binning tests and benchmarks.

Until `spikecut.sources.read_events` exists this goes through the reference decoders directly
(aedat for AEDAT4, expelliarmus for EVT2/DAT, tonic for N-MNIST .bin) and converts to EVENT_DTYPE.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spikecut.sources.events import StreamInfo, as_events

# file (relative to data/real) -> sensor (width, height)
RECORDINGS = {
    "aedat4/davis346_aestream_example.aedat4": (346, 260),
    "aedat4/dvxplorer_tonic_sample.aedat4": (320, 240),
    "prophesee_raw/evt2_gen3_sparklers.raw": (640, 480),
    "prophesee_dat/ncars_obj_004397_td.dat": (54, 61),
    "atis_bin/nmnist_tonic_sample.bin": (34, 34),
}


def load(path: Path) -> tuple[np.ndarray, StreamInfo]:
    """(events, info) of one real recording, via the reference decoder for its format."""
    path = Path(path)
    suffix = path.suffix
    if suffix == ".aedat4":
        import aedat

        decoder = aedat.Decoder(str(path))
        streams = decoder.id_to_stream()
        events_id = next(i for i, s in streams.items() if s["type"] == "events")
        width, height = streams[events_id]["width"], streams[events_id]["height"]
        packets = [p["events"] for p in decoder if p["stream_id"] == events_id and "events" in p]
        events = as_events(np.concatenate(packets))
    elif suffix in (".raw", ".dat"):
        from expelliarmus import Wizard

        encoding = "dat" if suffix == ".dat" else "evt2"
        events = as_events(Wizard(encoding=encoding).read(str(path)))
        width, height = _sensor_of(path, events)
    elif suffix == ".bin":
        import tonic.io

        dtype = np.dtype([("x", int), ("y", int), ("t", int), ("p", int)])
        events = as_events(tonic.io.read_mnist_file(str(path), dtype=dtype))
        width, height = 34, 34
    else:
        raise ValueError(f"no reference decoder for {path}")
    return events, StreamInfo(width=width, height=height, source=str(path))


def _sensor_of(path: Path, events: np.ndarray) -> tuple[int, int]:
    for name, size in RECORDINGS.items():
        if str(path).endswith(name):
            return size
    return int(events["x"].max()) + 1, int(events["y"].max()) + 1
