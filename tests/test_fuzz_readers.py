"""Fuzzing every reader: files cut at many offsets and with random bytes overwritten may only
raise our documented exceptions, quickly, and whatever a read returns is valid events."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikecut.errors import EventDataError, EventFileError, SourceUnavailableError
from spikecut.sources import EVENT_DTYPE, StreamInfo, make_events, open_reader, write_events
from spikecut.sources.prophesee import Evt2Decoder, Evt3Decoder

DOCUMENTED = (EventFileError, EventDataError)
REAL_SAMPLES = {
    "evt3": ("prophesee_raw/evt3_gen41_pedestrians_5000ev.raw", 40_000),
    "evt3-vectors": ("prophesee_raw/evt3_gen41_driving.raw", 30_000),
    "evt2": ("prophesee_raw/evt2_gen3_sparklers.raw", 30_000),
    "dat": ("prophesee_dat/ncars_tonic_sample.dat", 20_000),
    "aedat2": ("aedat2/dvs128_neal_walking.aedat", 30_000),
    "aedat2-davis": ("aedat2/davis240c_IMU_translBoxes.aedat", 200_000),
    "es": ("es/ncars_obj_004397_loris.es", 25_000),
    "atis_bin": ("atis_bin/nmnist_tonic_sample.bin", 25_000),
    "aedat4": ("aedat4/dvxplorer_tonic_sample.aedat4", 1_000_000),
}
WRITTEN = [".aedat4", ".aedat", ".npy", ".npz", ".h5", ".raw", ".dat", ".es", ".bin"]


def _mutants(data: bytes, seed: int, count: int = 60) -> list[bytes]:
    rng = np.random.default_rng(seed)
    mutants = [data[:cut] for cut in rng.integers(0, len(data), count)]
    mutants += [data[:cut] for cut in (1, 2, 7, 15, 33, 64, 129)]  # headers cut short
    for _ in range(count):
        flipped = bytearray(data)
        positions = rng.integers(0, len(data), rng.integers(1, 24))
        for p in positions:
            flipped[p] = rng.integers(0, 256)
        mutants.append(bytes(flipped))
    return mutants


def _read_or_documented_error(path, lenient: bool) -> None:
    try:
        with open_reader(path, lenient=lenient, chunk_events=4096) as reader:
            previous = None
            for chunk in reader:
                assert chunk.dtype == EVENT_DTYPE and 0 < chunk.size <= 4096
                assert chunk["x"].max() < reader.info.width
                assert chunk["y"].max() < reader.info.height
                assert chunk["p"].max() <= 1
                t = chunk["t"]
                assert np.all(np.diff(t) >= 0) and (previous is None or t[0] >= previous)
                previous = int(t[-1])
    except SourceUnavailableError:
        raise
    except DOCUMENTED:
        pass


def _fuzz(tmp_path, data: bytes, suffix: str, seed: int) -> None:
    path = tmp_path / f"fuzz{suffix}"
    for mutant in _mutants(data, seed):
        path.write_bytes(mutant)
        _read_or_documented_error(path, lenient=False)
        _read_or_documented_error(path, lenient=True)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", list(REAL_SAMPLES))
def test_fuzz_real_recordings(real_data, tmp_path, kind):
    name, size = REAL_SAMPLES[kind]
    data = (real_data / name).read_bytes()[:size]
    _fuzz(tmp_path, data, (real_data / name).suffix, seed=len(kind))


@pytest.fixture(scope="module")
def synthetic_events() -> np.ndarray:
    rng = np.random.default_rng(7)
    n = 3000
    t = np.sort(rng.integers(0, 1 << 22, n))
    return make_events(t, rng.integers(0, 200, n), rng.integers(0, 150, n), rng.integers(0, 2, n))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("suffix", WRITTEN)
def test_fuzz_files_our_writers_made(tmp_path, synthetic_events, suffix):
    if suffix == ".h5":
        pytest.importorskip("h5py")
    source = tmp_path / f"source{suffix}"
    write_events(source, synthetic_events, StreamInfo(200, 150, "fuzz"))
    _fuzz(tmp_path, source.read_bytes(), suffix, seed=ord(suffix[1]))


@pytest.mark.timeout(60)
@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=4000), strict=st.booleans())
def test_stream_decoders_survive_any_bytes(data, strict):
    for decoder in (Evt3Decoder(strict=strict), Evt2Decoder(strict=strict)):
        pending = data
        for _ in range(len(data) + 1):  # each error skips one bad word: this ends
            try:
                events = decoder.decode(pending)
                break
            except EventFileError:
                pending = b""  # the next call returns what was decoded and goes on after it
        assert events.dtype == EVENT_DTYPE
        assert events.size == 0 or (events["x"].max() < 2048 + 12 and events["p"].max() <= 1)
