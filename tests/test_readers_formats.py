"""Format details the real recordings do not all exercise, on small hand-built files:
address layouts, wraps, skipped words, header variants, sensor-size rules, detection."""

from __future__ import annotations

import struct
import zipfile

import numpy as np
import pytest

from spikecut.errors import EventDataError
from spikecut.sources import (
    StreamInfo,
    detect_format,
    make_events,
    open_reader,
    read_events,
    write_events,
)


def _aedat2(tmp_path, records, *, chip="ch.unizh.ini.jaer.chip.retina.DVS128", eol="\r\n",
            version="2.0", name="f.aedat"):  # fmt: skip
    lines = [f"#!AER-DAT{version}", "# This is a raw AE data file created by a test"]
    if chip is not None:
        lines.append(f"# AEChip: {chip}")
    header = "".join(line + eol for line in lines).encode()
    fmt = ">HI" if version == "1.0" else ">II"
    body = b"".join(struct.pack(fmt, a, t) for a, t in records)
    path = tmp_path / name
    path.write_bytes(header + body)
    return path


def test_aedat2_dvs128_layout_orientation_polarity_and_skips(tmp_path):
    x, y = 10, 20
    address = (y << 8) | (x << 1)
    records = [
        (address | 1, 100),  # bit 0 set: OFF (jAER's DVS128 extractor)
        (address, 200),  # ON
        (address | 0x8000, 300),  # sync/external event: skipped
        (0x80000000 | address, 400),  # special: skipped
    ]
    events, info = read_events(_aedat2(tmp_path, records))
    assert (info.width, info.height) == (128, 128)
    assert events.tolist() == [(100, 127 - x, 127 - y, 0), (200, 127 - x, 127 - y, 1)]


def test_aedat2_davis_layout_skips_imu_aps_and_external_input(tmp_path):
    def davis(x, y, on):
        return (y << 22) | (x << 12) | (on << 11)

    records = [
        (davis(5, 7, 1), 10),
        (0x80000000 | davis(1, 1, 0) | (3 << 10), 11),  # IMU sample
        (0x80000000 | davis(2, 2, 0), 12),  # APS sample
        (davis(3, 3, 0) | (1 << 10), 13),  # external input event
        (davis(239, 179, 0), 14),
    ]
    events, info = read_events(
        _aedat2(tmp_path, records, chip="eu.seebetter.ini.chips.davis.DAVIS240C")
    )
    assert (info.width, info.height) == (240, 180)
    assert events.tolist() == [(10, 234, 172, 1), (14, 0, 0, 0)]


def test_aedat2_unsigned_timestamps_wrap_at_2_32(tmp_path):
    records = [(2, 2**32 - 10), (2, 2**32 - 1), (2, 5), (2, 2**31 + 7)]
    events, _ = read_events(_aedat2(tmp_path, records))
    assert events["t"].tolist() == [2**32 - 10, 2**32 - 1, 2**32 + 5, 2**32 + 2**31 + 7]


def test_aedat2_lf_and_crlf_headers_read_the_same(tmp_path):
    records = [((3 << 8) | (4 << 1), 1), ((5 << 8) | (6 << 1) | 1, 2)]
    crlf, _ = read_events(_aedat2(tmp_path, records, eol="\r\n", name="a.aedat"))
    lf, _ = read_events(_aedat2(tmp_path, records, eol="\n", name="b.aedat"))
    np.testing.assert_array_equal(crlf, lf)


def test_aedat1_six_byte_records(tmp_path):
    records = [((3 << 8) | (4 << 1), 1), ((5 << 8) | (6 << 1) | 1, 2)]
    events, _ = read_events(_aedat2(tmp_path, records, version="1.0"))
    assert events.tolist() == [(1, 123, 124, 1), (2, 121, 122, 0)]


def test_aedat2_without_chip_is_dvs128_and_unknown_chip_is_prescanned(tmp_path):
    records = [((3 << 8) | (4 << 1), 1)]
    _, info = read_events(_aedat2(tmp_path, records, chip=None, name="a.aedat"))
    assert (info.width, info.height) == (128, 128)
    _, info = read_events(
        _aedat2(tmp_path, records, chip="org.example.MysteryChip", name="b.aedat")
    )
    assert (info.width, info.height) == (5, 4)  # 1 + the largest raw coordinate


def _aedat31(tmp_path, packets, header="#!AER-DAT3.1\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n"):
    path = tmp_path / "g.aedat"
    body = b""
    for ev_type, size, overflow, payload, count in packets:
        body += struct.pack("<HHIIIIII", ev_type, 1, size, 4, overflow, count, count, count)
        body += payload
    path.write_bytes(header.encode() + body)
    return path


def test_aedat31_packets_validity_overflow_and_other_types(tmp_path):
    """No real AEDAT 3.1 sample under 4 MiB exists (DVS128 Gesture files are tens of MB), so this
    file is built by hand; test_writers.py round-trips our writer."""

    def polarity(x, y, on, ts, valid=1):
        return struct.pack("<Ii", (x << 17) | (y << 2) | (on << 1) | valid, ts)

    special = (0, 8, 0, struct.pack("<Ii", 0x12345678, 5) * 2, 2)  # type 0: skipped
    first = (1, 8, 0, polarity(1, 2, 1, 10) + polarity(3, 4, 0, 20, valid=0), 2)
    second = (1, 8, 1, polarity(127, 127, 0, 5), 1)
    events, info = read_events(_aedat31(tmp_path, [special, first, second]))
    assert detect_format(tmp_path / "g.aedat") == "aedat3"
    assert (info.width, info.height) == (128, 128)
    assert events.tolist() == [(10, 1, 2, 1), ((1 << 31) | 5, 127, 127, 0)]


def test_event_stream_overflow_and_reset_bytes(tmp_path):
    header = b"Event Stream" + bytes([2, 0, 0, 1]) + struct.pack("<HH", 10, 8)
    body = bytes([0xFF, 0xFF, 0xFE, (3 << 1) | 1]) + struct.pack("<HH", 2, 0)
    body += bytes([0xFE, 0 << 1]) + struct.pack("<HH", 9, 7)
    path = tmp_path / "s.es"
    path.write_bytes(header + body)
    events, info = read_events(path)
    assert (info.width, info.height, info.time_origin) == (10, 8, "recording")
    # 2 x 127 µs of overflow, then +3; rows turned round (height 8): 7 - y.
    assert events.tolist() == [(257, 2, 7, 1), (257, 9, 0, 0)]


def test_atis_bin_overflow_marker_and_size_rule(tmp_path):
    def record(x, y, p, t):
        return bytes([x, y, (p << 7) | (t >> 16), (t >> 8) & 0xFF, t & 0xFF])

    path = tmp_path / "n.bin"
    path.write_bytes(record(1, 2, 1, 100) + record(0, 240, 0, 0) + record(3, 4, 0, 50))
    events, info = read_events(path)
    assert (info.width, info.height) == (34, 34)
    assert events.tolist() == [(100, 1, 2, 1), (50 + 8192, 3, 4, 0)]
    path.write_bytes(record(100, 2, 1, 100))
    assert read_events(path)[1].width == 240  # N-Caltech101's crop
    path.write_bytes(record(250, 230, 1, 100))
    assert read_events(path)[1].sensor_size == (251, 231, 2)  # 1 + the largest coordinate
    path.write_bytes(b"")
    events, info = read_events(path)
    assert events.size == 0 and (info.width, info.height) == (34, 34)


def _dat(tmp_path, records, name="d.dat"):
    header = b"% Data file containing CD events.\n% Version 2\n% Width 8\n% Height 8\n"
    words = [(t, x | (y << 14) | (p << 28)) for t, x, y, p in records]
    path = tmp_path / name
    path.write_bytes(header + bytes([0, 8]) + struct.pack(f"<{2 * len(words)}I", *sum(words, ())))
    return path


@pytest.mark.parametrize("chunk_events", [16, 1 << 16])
def test_dat_wraps_jitter_and_backwards_at_any_chunk_position(tmp_path, chunk_events):
    """The DAT kernel notes time order per step (wrap, jitter, step back); a chunk boundary
    (every 16 events with chunk_events=16) must not hide a step back from the validator."""
    ramp = [(1000 + i, i % 8, 1, 1) for i in range(15)]
    wrap = [(0xFFFFFF00, 2, 3, 0), (0x10, 4, 5, 1)]  # index 16: the 32-bit clock wrapped
    jitter = [(0x30, 1, 1, 1), (0x30 - 7, 1, 2, 0)]  # 7 µs back: clamped (Prophesee jitter)
    with open_reader(_dat(tmp_path, ramp + wrap + jitter), chunk_events=chunk_events) as reader:
        events = np.concatenate(list(reader))
        assert reader.stats.clamped_backwards == 1
    wrapped = [2**32 + 0x10, 2**32 + 0x30, 2**32 + 0x30]
    assert events["t"].tolist() == [*range(1000, 1015), 0xFFFFFF00, *wrapped]
    # Index 15, the last of a 16-event chunk, is 1014 µs back; index 16 steps forward from it
    # but is still 1004 µs behind what was delivered.
    back = [*ramp, (0, 0, 0, 0), (10, 0, 0, 0), (2000, 0, 0, 1)]
    path = _dat(tmp_path, back, "b.dat")
    with (
        open_reader(path, chunk_events=chunk_events) as reader,
        pytest.raises(EventDataError, match=r"b\.dat: timestamps go backwards at event index 15"),
    ):
        list(reader)
    with open_reader(path, chunk_events=chunk_events, lenient=True) as reader:
        kept = np.concatenate(list(reader))
        assert reader.stats.dropped_backwards == 2
    assert kept["t"].tolist() == [*range(1000, 1015), 2000]


def test_sensor_size_override(real_data):
    path = real_data / "prophesee_dat/ncars_tonic_sample.dat"
    _, info = read_events(path, sensor_size=(304, 240))
    assert (info.width, info.height) == (304, 240)
    with pytest.raises(ValueError, match="sensor_size"):
        open_reader(path, sensor_size=(0, 10))


def test_raw_geometry_header_variants(tmp_path):
    words = struct.pack("<3H", 0x8000, 0x0001, 0x2001)
    for header, size in [
        ("% evt 3.0\n% geometry 320x320\n", (320, 320)),
        ("% format EVT3;height=720;width=1280\n", (1280, 720)),
        ("% evt 3.0\n% Width 640\n% Height 480\n", (640, 480)),
        ("% evt 3.0\n% plugin_name hal_plugin_imx636_evk4\n", (1280, 720)),
        ("% evt 3.0\n", (2, 2)),  # nothing declared: 1 + the largest coordinate
    ]:
        path = tmp_path / "h.raw"
        path.write_bytes(header.encode() + words)
        assert detect_format(path) == "evt3"
        assert read_events(path)[1].sensor_size[:2] == size, header


def test_detection_prefers_magic_over_extension(tmp_path, real_data):
    raw = (real_data / "prophesee_raw/evt3_gen41_pedestrians_5000ev.raw").read_bytes()
    mislabelled = tmp_path / "really_evt3.aedat4"
    mislabelled.write_bytes(raw)
    assert detect_format(mislabelled) == "evt3"
    assert read_events(mislabelled)[0].size == 5000
    es = tmp_path / "es_named.bin"
    es.write_bytes((real_data / "es/ncars_obj_004397_loris.es").read_bytes())
    assert detect_format(es) == "es"


def test_npz_with_column_members_and_tonic_sensor_size(tmp_path):
    path = tmp_path / "cols.npz"
    np.savez(
        path,
        t=np.array([1, 2, 3], dtype=np.int64),
        x=np.array([0, 5, 9], dtype=np.int32),
        y=np.array([1, 1, 2], dtype=np.int16),
        polarity=np.array([True, False, True]),
        sensor_size=np.array([10, 4, 2]),
    )
    events, info = read_events(path)
    assert (info.width, info.height) == (10, 4)
    assert events.tolist() == [(1, 0, 1, 1), (2, 5, 1, 0), (3, 9, 2, 1)]


def test_npy_with_other_field_names_and_widths(tmp_path):
    array = np.zeros(3, dtype=[("x", "<i2"), ("y", "<i2"), ("ts", "<u8"), ("on", "?")])
    array["x"], array["y"], array["ts"], array["on"] = [1, 2, 3], [4, 5, 6], [7, 8, 9], [1, 0, 1]
    path = tmp_path / "a.npy"
    np.save(path, array)
    events, info = read_events(path)
    assert events.tolist() == [(7, 1, 4, 1), (8, 2, 5, 0), (9, 3, 6, 1)]
    assert (info.width, info.height) == (4, 7)


def test_hdf5_attributes_on_the_events_group(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "e.h5"
    with h5py.File(path, "w") as f:
        group = f.create_group("events")
        for name, values in zip("txyp", ([1, 2], [3, 4], [5, 6], [0, 1]), strict=True):
            group[name] = np.array(values)
        group.attrs["sensor_size"] = [20, 10, 2]
    events, info = read_events(path)
    assert (info.width, info.height) == (20, 10)
    assert events.tolist() == [(1, 3, 5, 0), (2, 4, 6, 1)]


def test_npz_written_by_us_is_a_plain_numpy_archive(tmp_path):
    events = make_events([1, 2], [3, 4], [5, 6], [0, 1])
    path = tmp_path / "w.npz"
    write_events(path, events, StreamInfo(8, 8, "test", time_origin="recording"))
    with np.load(path) as archive:
        np.testing.assert_array_equal(archive["events"], events)
        assert int(archive["width"]) == 8 and str(archive["time_origin"]) == "recording"
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == [
            "events.npy", "height.npy", "time_origin.npy", "width.npy"
        ]  # fmt: skip
    assert read_events(path)[1].time_origin == "recording"
