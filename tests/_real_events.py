"""The real recordings of ../shared used by the binning tests, read with spikecut's own readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spikecut.sources import StreamInfo, read_events

#: recordings (relative to data/real) that the binning tests run on, one per reader family
RECORDINGS = (
    "aedat4/davis346_aestream_example.aedat4",
    "aedat4/dvxplorer_tonic_sample.aedat4",
    "prophesee_raw/evt2_gen3_sparklers.raw",
    "prophesee_dat/ncars_obj_004397_td.dat",
    "atis_bin/nmnist_tonic_sample.bin",
)


def load(path: Path) -> tuple[np.ndarray, StreamInfo]:
    """(events, info) of one real recording."""
    return read_events(path)
