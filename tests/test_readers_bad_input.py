"""Bad input gets our exception types, naming the file and the byte offset or event index; a
lenient read keeps every event decoded before the damage."""

from __future__ import annotations

import struct
import sys

import numpy as np
import pytest

from spikecut.errors import (
    CorruptFileError,
    EventDataError,
    EventFileError,
    SourceUnavailableError,
    TruncatedFileError,
    UnknownFormatError,
)
from spikecut.sources import (
    StreamInfo,
    detect_format,
    make_events,
    open_reader,
    read_events,
    write_events,
)
from spikecut.sources.events import to_tonic

# Real files and a byte count to cut off their end (mid-record).
TRUNCATIONS = [
    ("prophesee_raw/evt3_gen41_driving.raw", 3),
    ("prophesee_raw/evt2_gen3_sparklers.raw", 2),
    ("prophesee_dat/ncars_obj_004397_td.dat", 5),
    ("aedat2/dvs128_neal_walking.aedat", 3),
    ("es/ncars_obj_004397_loris.es", 2),
    ("atis_bin/nmnist_tonic_sample.bin", 4),
    ("aedat4/dvxplorer_tonic_sample.aedat4", 20_000),
]


@pytest.mark.parametrize("name, cut", TRUNCATIONS, ids=[n.split("/")[-1] for n, _ in TRUNCATIONS])
def test_truncated_file_strict_raises_lenient_keeps_the_head(real_data, tmp_path, name, cut):
    source = real_data / name
    full, _ = read_events(source)
    data = source.read_bytes()
    path = tmp_path / source.name
    path.write_bytes(data[: len(data) - cut])

    delivered = []
    with pytest.raises(TruncatedFileError) as info, open_reader(path) as reader:
        for chunk in reader:  # strict: every complete chunk arrives, then the error
            delivered.append(chunk)
    error = info.value
    assert error.path == str(path) and str(path) in str(error)
    assert error.offset is not None and 0 < error.offset <= len(data) - cut
    assert "byte offset" in str(error)

    with open_reader(path, lenient=True) as reader:
        head = reader.read_all()
        assert isinstance(reader.stats.error, TruncatedFileError)
    assert 0 < head.size < full.size or (head.size == full.size - 1)
    np.testing.assert_array_equal(head, full[: head.size])
    if delivered:
        np.testing.assert_array_equal(np.concatenate(delivered), full[: sum(map(len, delivered))])


def test_corrupt_word_names_its_offset_and_lenient_keeps_what_came_before(tmp_path):
    header = b"% evt 3.0\n% geometry 64x64\n% end\n"
    words = [0x8000, 0x6001, 0x0001, 0x2001, 0x2002, 0xB000, 0x2003]
    path = tmp_path / "c.raw"
    path.write_bytes(header + struct.pack(f"<{len(words)}H", *words))
    offset = len(header) + 10  # the sixth word
    with pytest.raises(CorruptFileError, match=rf"c\.raw, byte offset {offset}: undefined EVT 3"):
        read_events(path)
    with open_reader(path, lenient=True) as reader:
        events = reader.read_all()
        assert reader.stats.error.offset == offset
    assert events["x"].tolist() == [1, 2]


def test_unknown_formats(tmp_path):
    text = tmp_path / "notes"
    text.write_text("hello, these are not events\n")
    with pytest.raises(UnknownFormatError, match=r"notes: first bytes b'hello, these' and"):
        detect_format(text)
    empty = tmp_path / "empty.xyz"
    empty.write_bytes(b"")
    with pytest.raises(UnknownFormatError, match="an empty file"):
        read_events(empty)
    with pytest.raises(UnknownFormatError, match="unknown format 'mp4'"):
        open_reader(text, format="mp4")
    headerless = tmp_path / "x.raw"
    headerless.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(UnknownFormatError, match="x.raw"):
        detect_format(headerless)
    percent = tmp_path / "p.raw"
    percent.write_bytes(b"% just a comment\n\x00\x80")
    with pytest.raises(UnknownFormatError, match="names no EVT version"):
        detect_format(percent)
    evt21 = tmp_path / "v.raw"
    evt21.write_bytes(b"% evt 2.1\n\x00\x00\x00\x00")
    with pytest.raises(UnknownFormatError, match="EVT21 is not supported"):
        detect_format(evt21)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(EventFileError, match="no such file"):
        read_events(tmp_path / "nope.raw")
    with pytest.raises(EventFileError, match="is a directory"):
        read_events(tmp_path)


@pytest.mark.parametrize(
    "name, content, error, match",
    [
        ("a.aedat4", b"#!AER-DAT4.0 garbage", CorruptFileError, "byte offset 0: magic"),
        ("b.aedat4", b"NOT AEDAT AT ALL....", CorruptFileError, "byte offset 0: magic"),
        ("c.es", b"Event Stream\x02\x00\x00\x02\x10\x00", UnknownFormatError, "type atis"),
        ("d.es", b"Event Stream\x01\x00\x00\x01\x10\x00\x10\x00", UnknownFormatError, "1.0.0"),
        ("e.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': broken", CorruptFileError, ".npy"),
        ("f.npz", b"PK\x03\x04 this is no zip", CorruptFileError, "npz archive"),
        ("g.h5", b"\x89HDF\r\n\x1a\n" + bytes(100), CorruptFileError, "HDF5"),
        ("h.dat", b"% Version 2\n\x00\x10", CorruptFileError, "type 0 with size 16"),
        ("i.aedat", b"#!AER-DAT2.0\r\n\x00\x00", TruncatedFileError, "8-byte AEDAT record"),
        ("j.aedat", b"#!AER-DAT3.1\r\n#no end\r\n\x00", CorruptFileError, "END-HEADER"),
        ("k.aedat", b"#!AER-DAT9.0\r\n", CorruptFileError, "is not #!AER-DAT1.0/2.0"),
    ],
)
def test_damaged_or_mislabelled_headers(tmp_path, name, content, error, match):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(error, match=match) as info:
        read_events(path)
    assert str(path) in str(info.value)


def test_header_contradicting_the_requested_format(real_data):
    path = real_data / "prophesee_raw/evt2_gen3_sparklers.raw"
    with pytest.raises(CorruptFileError, match="declares EVT2 but the file was opened as EVT3"):
        open_reader(path, format="evt3")


def test_random_bytes_named_bin_are_refused(tmp_path):
    """.bin has no magic: garbage decodes, and the arrow of time exposes it."""
    path = tmp_path / "noise.bin"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(EventDataError, match=r"noise\.bin: timestamps go backwards at event index"):
        read_events(path)


def test_out_of_sensor_events_strict_and_lenient(real_data):
    path = real_data / "atis_bin/nmnist_tonic_sample.bin"
    full, _ = read_events(path)
    with pytest.raises(EventDataError) as info:
        read_events(path, sensor_size=(20, 20))
    first_bad = int(np.flatnonzero((full["x"] >= 20) | (full["y"] >= 20))[0])
    assert f"nmnist_tonic_sample.bin: event index {first_bad} at (x=" in str(info.value)
    assert "outside the 20x20 sensor" in str(info.value)
    with open_reader(path, sensor_size=(20, 20), lenient=True) as reader:
        kept = reader.read_all()
        assert reader.stats.dropped_out_of_sensor == full.size - kept.size > 0
    assert kept["x"].max() < 20 and kept["y"].max() < 20


def test_out_of_sensor_in_a_file_that_declares_its_size(tmp_path):
    header = b"Event Stream" + bytes([2, 0, 0, 1]) + struct.pack("<HH", 4, 4)
    body = bytes([2]) + struct.pack("<HH", 1, 1) + bytes([2]) + struct.pack("<HH", 9, 1)
    path = tmp_path / "o.es"
    path.write_bytes(header + body)
    with pytest.raises(EventDataError, match=r"o\.es: event index 1 at \(x=9, y=2\)"):
        read_events(path)
    events, _ = read_events(path, lenient=True)
    assert events.tolist() == [(1, 1, 2, 0)]


def test_backwards_timestamps_in_an_array_file(tmp_path):
    path = tmp_path / "b.npy"
    events = make_events([5, 9, 3, 12], [0, 1, 2, 3], [0, 0, 0, 0], [1, 1, 1, 1])
    np.save(path, events)
    with pytest.raises(EventDataError, match=r"b\.npy: timestamps go backwards at event index 2"):
        read_events(path)
    with open_reader(path, lenient=True) as reader:
        assert reader.read_all()["t"].tolist() == [5, 9, 12]
        assert reader.stats.dropped_backwards == 1


@pytest.mark.parametrize("layout", ["ours", "tonic"])
def test_array_file_cut_inside_a_row_or_holding_bad_values(tmp_path, layout):
    """Rows already in EVENT_DTYPE are read straight into the chunks, other layouts converted:
    both report a cut row and a bad value the same way."""
    events = make_events(np.arange(100), np.arange(100) % 7, np.arange(100) % 5, np.arange(100) % 2)
    rows = events if layout == "ours" else to_tonic(events)
    path = tmp_path / "c.npy"
    np.save(path, rows)
    size = rows.dtype.itemsize
    data = path.read_bytes()
    start = len(data) - 100 * size
    path.write_bytes(data[: start + 41 * size + size // 2])  # row 41 is cut
    with pytest.raises(TruncatedFileError, match=rf"c\.npy.*byte offset {start + 41 * size}"):
        read_events(path)
    with open_reader(path, lenient=True, chunk_events=16) as reader:
        np.testing.assert_array_equal(reader.read_all(), events[:41])
        assert "41 of 100 rows present" in str(reader.stats.error)
    rows = rows.copy()
    rows["p"][57] = 2
    np.save(path, rows)
    with pytest.raises(EventDataError, match=r"c\.npy: .*event index 57 .*2"):
        read_events(path)


def test_array_files_with_wrong_content(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"t": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CorruptFileError, match="pickles are refused"):
        read_events(tmp_path / "obj.npy")
    np.save(tmp_path / "plain.npy", np.zeros((3, 4), dtype=np.int64))
    with pytest.raises(CorruptFileError, match="shape"):
        read_events(tmp_path / "plain.npy")
    np.save(tmp_path / "nofields.npy", np.zeros(3, dtype=[("a", "i8"), ("b", "i8")]))
    with pytest.raises(CorruptFileError, match="fields t, x, y and p"):
        read_events(tmp_path / "nofields.npy")
    floats = np.zeros(2, dtype=[("t", "f8"), ("x", "i2"), ("y", "i2"), ("p", "u1")])
    np.save(tmp_path / "float.npy", floats)
    with pytest.raises(EventDataError, match="column 't' holds float64"):
        read_events(tmp_path / "float.npy")
    negative = np.zeros(2, dtype=[("t", "i8"), ("x", "i2"), ("y", "i2"), ("p", "u1")])
    negative["x"] = [1, -4]
    np.save(tmp_path / "neg.npy", negative)
    with pytest.raises(EventDataError, match=r"neg\.npy: .*'x' at event index 1 is -4"):
        read_events(tmp_path / "neg.npy")


def test_aedat4_packet_of_an_undeclared_stream(tmp_path):
    events = make_events(np.arange(10), np.arange(10), np.arange(10), np.ones(10, int))
    path = tmp_path / "u.aedat4"
    write_events(path, events, StreamInfo(16, 16, "test"))
    data = bytearray(path.read_bytes())
    # Append a well-formed packet header with stream id 7, which the XML does not declare.
    offset = len(data)
    data += struct.pack("<iI", 7, 0)
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match=f"byte offset {offset}: packet of undeclared"):
        read_events(path)
    assert read_events(path, lenient=True)[0].size == 10


def test_aedat31_impossible_packet_header(tmp_path):
    path = tmp_path / "p.aedat"
    header = b"#!AER-DAT3.1\r\n#!END-HEADER\r\n"
    packet = struct.pack("<HHIIIIII", 1, 1, 8, 4, 0, 1, 2, 2)  # number > capacity
    path.write_bytes(header + packet + bytes(8))
    with pytest.raises(CorruptFileError, match=f"byte offset {len(header)}: impossible packet"):
        read_events(path, sensor_size=(4, 4))


def test_missing_h5py_names_the_extra(tmp_path, monkeypatch, real_data):
    pytest.importorskip("h5py")
    path = tmp_path / "e.h5"
    write_events(path, make_events([1], [1], [1], [1]), StreamInfo(4, 4, "test"))
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(SourceUnavailableError, match=r"spikecut\[hdf5\]"):
        read_events(path)
    with pytest.raises(SourceUnavailableError, match="optional extra 'hdf5'"):
        write_events(tmp_path / "f.h5", make_events([1], [1], [1], [1]), StreamInfo(4, 4, "t"))
    assert not (tmp_path / "f.h5").exists()
