"""Every reader against the real recordings of ../shared/data/real (expected values from its
SOURCES.md), cross-checked with independent decoders where one is installed."""

from __future__ import annotations

import numpy as np
import pytest

import spikecut.sources.reader as reader_module
from spikecut.sources import EVENT_DTYPE, detect_format, open_reader, read_events

# file, format, width, height, events, first t, last t (µs)
REAL = [
    ("aedat4/davis346_aestream_example.aedat4", "aedat4", 346, 260, 117_667,
     1633953690975950, 1633953691105949),
    ("aedat4/dvxplorer_tonic_sample.aedat4", "aedat4", 320, 240, 111_954,
     1605537493718345, 1605537494308262),
    ("aedat2/davis240c_IMU_translBoxes.aedat", "aedat2", 240, 180, 162_771,
     294976755, 297049406),
    ("aedat2/dvs128_neal_walking.aedat", "aedat2", 128, 128, 70_304, 135707767, 144951371),
    ("aedat2/dvs128_biolab_lapiseira.aedat", "aedat2", 128, 128, 126_164,
     3799644735, 3818152388),
    ("aedat2/davis346red_header_only_tonic.aedat", "aedat2", 346, 260, 0, None, None),
    ("prophesee_raw/evt2_gen3_sparklers.raw", "evt2", 640, 480, 521_252, 913716224, 913812095),
    ("prophesee_raw/evt3_gen41_driving.raw", "evt3", 1280, 720, 219_596, 11718656, 11727457),
    ("prophesee_raw/evt3_gen41_pedestrians_5000ev.raw", "evt3", 1280, 720, 5_000,
     5840504, 5885714),
    ("prophesee_dat/ncars_obj_004397_td.dat", "dat", 54, 61, 4_407, 0, 99937),
    ("prophesee_dat/ncars_tonic_sample.dat", "dat", 78, 42, 2_009, 0, 99952),
    ("es/ncars_obj_004397_loris.es", "es", 54, 239, 4_407, 0, 99937),
    ("atis_bin/nmnist_tonic_sample.bin", "atis_bin", 34, 34, 4_325, 654, 311175),
]  # fmt: skip


def _ids(row: tuple) -> str:
    return row[0].split("/")[-1]


@pytest.mark.parametrize("row", REAL, ids=_ids)
def test_real_recording_matches_sources_md(real_data, row):
    name, fmt, width, height, count, t_first, t_last = row
    path = real_data / name
    assert detect_format(path) == fmt
    events, info = read_events(path)
    assert events.dtype == EVENT_DTYPE
    assert (info.format, info.width, info.height) == (fmt, width, height)
    assert events.size == count
    if count:
        assert (int(events["t"][0]), int(events["t"][-1])) == (t_first, t_last)
        assert np.all(np.diff(events["t"]) >= 0)
        assert events["x"].max() < width and events["y"].max() < height
        assert set(np.unique(events["p"])) <= {0, 1}


@pytest.mark.parametrize("row", [r for r in REAL if r[4]], ids=_ids)
def test_small_chunks_and_blocks_give_the_same_events(real_data, row, monkeypatch):
    """Chunk and block boundaries fall everywhere: decoders must carry their state across."""
    path = real_data / row[0]
    whole, _ = read_events(path)
    monkeypatch.setattr(reader_module, "BLOCK_BYTES", 4099)
    with open_reader(path, chunk_events=977) as reader:
        chunks = list(reader)
        assert reader.stats.events == whole.size
    assert all(0 < c.size <= 977 for c in chunks)
    np.testing.assert_array_equal(np.concatenate(chunks), whole)


def test_reader_is_reiterable_and_reports_counters(real_data):
    with open_reader(real_data / "prophesee_raw/evt3_gen41_pedestrians_5000ev.raw") as reader:
        first = reader.read_all()
        second = reader.read_all()
        assert reader.stats.decoded == reader.stats.events == 5000
        assert reader.stats.dropped == 0 and reader.stats.error is None
    np.testing.assert_array_equal(first, second)


# --- independent decoders ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["davis346_aestream_example.aedat4", "dvxplorer_tonic_sample.aedat4"]
)
def test_aedat4_equals_bare_aedat_and_dv_processing(real_data, name):
    aedat = pytest.importorskip("aedat")
    path = real_data / "aedat4" / name
    events, _ = read_events(path)
    decoder = aedat.Decoder(str(path))
    (event_stream,) = [i for i, s in decoder.id_to_stream().items() if s["type"] == "events"]
    bare = np.concatenate([p["events"] for p in decoder if p["stream_id"] == event_stream])
    np.testing.assert_array_equal(events["t"], bare["t"].astype(np.int64))
    np.testing.assert_array_equal(events["x"], bare["x"])
    np.testing.assert_array_equal(events["y"], bare["y"])
    np.testing.assert_array_equal(events["p"], bare["on"].astype(np.uint8))

    dv = pytest.importorskip("dv_processing")
    recording = dv.io.MonoCameraRecording(str(path))
    batches = []
    while (batch := recording.getNextEventBatch()) is not None:
        batches.append(batch.numpy())
    other = np.concatenate(batches)
    np.testing.assert_array_equal(events["t"], other["timestamp"])
    np.testing.assert_array_equal(events["x"], other["x"])
    np.testing.assert_array_equal(events["y"], other["y"])
    np.testing.assert_array_equal(events["p"], other["polarity"])


@pytest.mark.parametrize(
    "name, layout",
    [
        ("dvs128_neal_walking.aedat", "dvs128"),
        ("dvs128_biolab_lapiseira.aedat", "dvs128"),
        ("davis240c_IMU_translBoxes.aedat", "davis"),
    ],
)
def test_aedat2_against_tonic_raw_words(real_data, name, layout):
    """tonic parses the words (big-endian uint32 address and timestamp); we check our address
    layout, skip rules, orientation and polarity against the formulas in jaer.py's docstring."""
    tonic_io = pytest.importorskip("tonic.io")
    path = real_data / "aedat2" / name
    version, start, _ = tonic_io.read_aedat_header_from_file(str(path))
    assert version == 2.0
    words = tonic_io.get_aer_events_from_file(str(path), version, start)
    a = words["address"].astype(np.int64)
    t = words["timeStamp"].astype(np.int64)
    if layout == "dvs128":
        keep = (a & 0x80008000) == 0
        width = height = 128
        x, y, p = (a >> 1) & 0x7F, (a >> 8) & 0x7F, 1 - (a & 1)
    else:
        keep = (a & 0x80000400) == 0
        width, height = 240, 180
        x, y, p = (a >> 12) & 0x3FF, (a >> 22) & 0x1FF, (a >> 11) & 1
    events, info = read_events(path)
    assert (info.width, info.height) == (width, height)
    np.testing.assert_array_equal(events["t"], t[keep])
    np.testing.assert_array_equal(events["x"], width - 1 - x[keep])
    np.testing.assert_array_equal(events["y"], height - 1 - y[keep])
    np.testing.assert_array_equal(events["p"], p[keep])


def test_aedat2_timestamps_above_2_31_stay_unsigned(real_data):
    events, _ = read_events(real_data / "aedat2/dvs128_biolab_lapiseira.aedat")
    assert events["t"].min() > 2**31


def test_aedat2_header_only_file_has_zero_events(real_data):
    path = real_data / "aedat2/davis346red_header_only_tonic.aedat"
    with open_reader(path) as reader:
        assert reader.read_all().size == 0
        assert reader.chip.endswith("Davis346red")
        assert len(reader.header) == 12


def test_aedat2_crlf_header_of_2104_lines(real_data):
    with open_reader(real_data / "aedat2/davis240c_IMU_translBoxes.aedat") as reader:
        assert len(reader.header) == 2104
        assert reader.chip == "eu.seebetter.ini.chips.davis.DAVIS240C"


def _expelliarmus(encoding, path):
    wizard = pytest.importorskip("expelliarmus").Wizard(encoding=encoding)
    return wizard.read(str(path))


def test_evt2_equals_expelliarmus(real_data):
    path = real_data / "prophesee_raw/evt2_gen3_sparklers.raw"
    events, _ = read_events(path)
    other = _expelliarmus("evt2", path)
    for field in "txyp":
        np.testing.assert_array_equal(events[field], other[field])


@pytest.mark.parametrize("name", ["evt3_gen41_driving.raw", "evt3_gen41_pedestrians_5000ev.raw"])
def test_evt3_xyp_equal_expelliarmus(real_data, name):
    """Only x, y and p: expelliarmus 1.1.12 unrolls TIME_LOW decreases as 24-bit wraps, which
    OpenEB does not (its last t for the driving file is 11772513, OpenEB's 11727457)."""
    path = real_data / "prophesee_raw" / name
    events, _ = read_events(path)
    other = _expelliarmus("evt3", path)
    assert other.size == events.size
    for field in "xyp":
        np.testing.assert_array_equal(events[field], other[field])


def test_evt3_vector_words_and_openeb_timestamps(real_data):
    """The driving file holds VECT_12/VECT_8 words; with OpenEB's rule (loops on TIME_HIGH only)
    time never steps back in it and ends at 11727457."""
    path = real_data / "prophesee_raw/evt3_gen41_driving.raw"
    with open_reader(path) as reader:
        events = reader.read_all()
        assert reader.stats.clamped_backwards == 0
    raw = np.frombuffer(path.read_bytes()[reader._data_offset :], dtype="<u2")
    assert np.count_nonzero(raw >> 12 == 0x4) == 21_242  # VECT_12 words are really there
    assert int(events["t"][-1]) == 11_727_457


@pytest.mark.parametrize("name", ["ncars_obj_004397_td.dat", "ncars_tonic_sample.dat"])
def test_dat_equals_expelliarmus(real_data, name):
    path = real_data / "prophesee_dat" / name
    events, _ = read_events(path)
    other = _expelliarmus("dat", path)
    for field in "txyp":
        np.testing.assert_array_equal(events[field], other[field])


def test_dat_equals_stored_reference(real_data):
    events, _ = read_events(real_data / "prophesee_dat/ncars_obj_004397_td.dat")
    reference = np.load(real_data / "reference/ncars_obj_004397_expelliarmus_reference.npy")
    for field in "txyp":
        np.testing.assert_array_equal(events[field], reference[field])


def test_event_stream_and_dat_hold_the_same_events(real_data):
    """The N-CARS .es was converted from the .dat with y_es = 239 - y_dat while declaring height
    239; both readers put the origin top-left (.es rows turned round: 238 - y_es), so the only
    difference left is that constant row shift."""
    dat, dat_info = read_events(real_data / "prophesee_dat/ncars_obj_004397_td.dat")
    es, es_info = read_events(real_data / "es/ncars_obj_004397_loris.es")
    assert es_info.height == 239 and dat_info.height == 61
    for field in "txp":
        np.testing.assert_array_equal(es[field], dat[field])
    np.testing.assert_array_equal(es["y"].astype(int), dat["y"].astype(int) - 1)


def test_nmnist_bin_equals_tonic(real_data):
    tonic_io = pytest.importorskip("tonic.io")
    path = real_data / "atis_bin/nmnist_tonic_sample.bin"
    events, _ = read_events(path)
    tonic_dtype = np.dtype([("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])
    other = tonic_io.read_mnist_file(str(path), dtype=tonic_dtype)
    for field in "txyp":
        np.testing.assert_array_equal(events[field], other[field])


def test_nmnist_labelled_test_samples(real_data):
    folder = real_data / "atis_bin/nmnist_test_first12"
    labels = folder.joinpath("labels.txt").read_text().split("\n")[1:]
    assert len([line for line in labels if line.strip()]) == 12
    for path in sorted(folder.glob("*.bin")):
        events, info = read_events(path)
        assert (info.width, info.height) == (34, 34)
        assert 1_665 <= events.size <= 5_293
        assert 250_000 < int(events["t"][-1]) < 400_000


def test_nmnist_1k_training_set_reads(nmnist_1k):
    paths = sorted((nmnist_1k / "train").glob("*.bin"))[:50]
    assert len(paths) == 50
    for path in paths:
        events, info = read_events(path)
        assert (info.width, info.height) == (34, 34) and events.size > 0


@pytest.mark.parametrize("row", [r for r in REAL if r[4]], ids=_ids)
def test_kernel_fast_path_agrees_with_full_validation(real_data, row):
    """Kernels note time order and extent so valid chunks skip the validator's scan; the
    result must be what the full scan gives."""
    path = real_data / row[0]
    with open_reader(path) as fast, open_reader(path) as slow:
        slow.kernel_tracks = False
        np.testing.assert_array_equal(fast.read_all(), slow.read_all())
        assert fast.stats == slow.stats
        assert fast.info == slow.info


def test_unsized_file_gets_the_same_size_streamed_or_whole(real_data):
    path = real_data / "prophesee_dat/ncars_tonic_sample.dat"
    with open_reader(path) as reader:
        whole = reader.read_all()  # sized by the decoding pass itself
        info = reader.info
    with open_reader(path) as reader:
        assert reader.info == info  # sized by a pre-scan before streaming
        np.testing.assert_array_equal(np.concatenate(list(reader)), whole)


def test_streaming_memory_stays_bounded(tmp_path):
    """Iterating a file holds a block and a chunk at a time, not the file: traced allocations
    stay far below the size of the file or of its events."""
    import tracemalloc

    from spikecut.sources import StreamInfo, make_events, write_events

    rng = np.random.default_rng(11)
    n = 1_500_000
    events = make_events(
        np.sort(rng.integers(0, 1 << 28, n)),
        rng.integers(0, 1280, n),
        rng.integers(0, 720, n),
        rng.integers(0, 2, n),
    )
    path = tmp_path / "big.raw"
    write_events(path, events, StreamInfo(1280, 720, "test"))
    del events
    assert path.stat().st_size > 8_000_000
    tracemalloc.start()
    try:
        count = 0
        with open_reader(path, chunk_events=20_000) as reader:
            for chunk in reader:
                count += chunk.size
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == n
    assert peak < 5_000_000  # the file is over 8 MB, its events 19.5 MB
