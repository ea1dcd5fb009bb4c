"""Our AEDAT4 event decoder (spikecut/sources/aedat4.py): equal to aedat packet by packet on the
real recordings and on files written by dv-processing with every compression it offers, and
safe on damaged flatbuffers and LZ4 frames (our CorruptFileError naming the packet's offset)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikecut.errors import CorruptFileError
from spikecut.sources import StreamInfo, make_events, read_events, write_events
from spikecut.sources.aedat4 import (
    MAGIC,
    Aedat4Reader,
    _evts_elements,
    io_header,
    parse_io_header,
)
from spikecut.sources.lz4 import xxh32

# file: (events, first t, last t), from ../shared/data/real/SOURCES.md
REAL = {
    "davis346_aestream_example.aedat4": (117_667, 1633953690975950, 1633953691105949),
    "dvxplorer_tonic_sample.aedat4": (111_954, 1605537493718345, 1605537494308262),
}


@pytest.mark.parametrize("name", sorted(REAL))
@pytest.mark.parametrize("chunk_events", [65_536, 1000])
def test_real_recording_equals_aedat_in_every_chunk(real_data, name, chunk_events):
    """Consecutive packets fill each chunk: all are full but the last, and each holds exactly
    aedat's events at its place in the stream."""
    aedat = pytest.importorskip("aedat")
    path = real_data / "aedat4" / name
    decoder = aedat.Decoder(str(path))
    (stream,) = [i for i, s in decoder.id_to_stream().items() if s["type"] == "events"]
    bare = np.concatenate([p["events"] for p in decoder if p["stream_id"] == stream])
    with Aedat4Reader(path, chunk_events=chunk_events) as reader:
        assert reader.compression == "LZ4"
        chunks = list(reader)
    assert [c.size for c in chunks[:-1]] == [chunk_events] * (len(chunks) - 1)
    first = 0
    for chunk in chunks:
        packet = bare[first : first + chunk.size]
        np.testing.assert_array_equal(chunk["t"], packet["t"].astype(np.int64))
        np.testing.assert_array_equal(chunk["x"], packet["x"])
        np.testing.assert_array_equal(chunk["y"], packet["y"])
        np.testing.assert_array_equal(chunk["p"], packet["on"].astype(np.uint8))
        first += chunk.size
    n, t_first, t_last = REAL[name]
    assert first == bare.size == n
    assert (chunks[0]["t"][0], chunks[-1]["t"][-1]) == (t_first, t_last)


@pytest.mark.parametrize("compression", ["NONE", "LZ4", "LZ4_HIGH", "ZSTD", "ZSTD_HIGH"])
def test_every_compression_dv_processing_writes(tmp_path, compression):
    """NONE and LZ4 go through our decoder, ZSTD through aedat: all read the same events."""
    dv = pytest.importorskip("dv_processing")
    rng = np.random.default_rng(1)
    path = tmp_path / f"{compression}.aedat4"
    config = dv.io.MonoCameraWriter.EventOnlyConfig(
        "cam", (64, 48), getattr(dv.CompressionType, compression)
    )
    writer = dv.io.MonoCameraWriter(str(path), config)
    written = []
    for packet in range(3):
        t = 1_000_000 + packet * 10_000 + np.arange(700) * 7
        x, y, p = rng.integers(0, 64, 700), rng.integers(0, 48, 700), rng.integers(0, 2, 700)
        store = dv.EventStore()
        for event in zip(t.tolist(), x.tolist(), y.tolist(), p.astype(bool).tolist(), strict=True):
            store.push_back(*event)
        writer.writeEvents(store)
        written.append(make_events(t, x, y, p))
    del writer  # closes the file
    with Aedat4Reader(path, chunk_events=500) as reader:
        assert reader.compression == compression
        assert reader.kernel_tracks == (not compression.startswith("ZSTD"))
        assert (reader.info.width, reader.info.height) == (64, 48)
        chunks = list(reader)
    assert max(c.size for c in chunks) == 500
    assert np.concatenate(chunks).tobytes() == np.concatenate(written).tobytes()
    assert read_events(path)[0].tobytes() == np.concatenate(written).tobytes()


# --- damaged event packets -----------------------------------------------------------------


def _packets(data: bytes) -> list[tuple[int, int]]:
    """(offset, payload size) of each packet of an AEDAT4 file."""
    (length,) = struct.unpack_from("<I", data, len(MAGIC))
    offset, found = len(MAGIC) + 4 + length, []
    while offset < len(data):
        _, size = struct.unpack_from("<iI", data, offset)
        found.append((offset, size))
        offset += 8 + size
    return found


def _two_packet_file(tmp_path, lz4: bool = False):
    """A file of two event packets (our writer's 16,384 events, then 100), optionally
    rewritten with each payload LZ4-compressed; its bytes, events and packet offsets."""
    n = 16_384 + 100
    events = make_events(np.arange(n) * 3, np.arange(n) % 32, np.arange(n) % 24, np.arange(n) % 2)
    path = tmp_path / "two.aedat4"
    write_events(path, events, StreamInfo(32, 24, "test"))
    data = path.read_bytes()
    if lz4:
        import lz4.frame

        (length,) = struct.unpack_from("<I", data, len(MAGIC))
        _, _, xml = parse_io_header(data[len(MAGIC) + 4 : len(MAGIC) + 4 + length])
        out = bytearray(MAGIC + io_header(xml, compression=1))
        for offset, size in _packets(data):
            frame = lz4.frame.compress(data[offset + 8 : offset + 8 + size], store_size=True)
            out += struct.pack("<iI", 0, len(frame)) + frame
        data = bytes(out)
    return data, events, [offset for offset, _ in _packets(data)]


# Positions in our writer's size-prefixed EVTS flatbuffer: 0 size prefix, 4 root offset (16),
# 8 identifier, 12 vtable (size 6, table size 8, field 0 at 4), 20 table (soffset 8),
# 24 offset to the vector (4), 28 vector length, 32 the events.
DAMAGE = [
    (0, "<I", 1 << 30, "size prefix 1073741824 exceeds the"),
    (8, "4s", b"FRME", "identifier is not EVTS"),
    (4, "<I", 1 << 20, "root table offset 1048576 points outside"),
    (4, "<I", 0xFFFFFFFF, "root table offset 4294967295 points outside"),
    (20, "<i", -(1 << 20), "vtable .* outside the packet or has an impossible size"),
    (20, "<i", 1 << 30, "vtable .* outside the packet or has an impossible size"),
    (12, "<H", 0xFFFF, "vtable .* outside the packet or has an impossible size"),
    (12, "<H", 2, "vtable .* outside the packet or has an impossible size"),
    (16, "<H", 0xFFF0, "events field .* outside the packet"),
    (24, "<I", 1 << 24, "event vector offset points outside the packet"),
    (24, "<I", 0xFFFFFFFF, "event vector offset points outside the packet"),
    (28, "<I", 101, "vector of 101 events runs past the end"),
    (28, "<I", 0xFFFFFFFF, "vector of 4294967295 events runs past the end"),
]


@pytest.mark.parametrize("position, layout, value, match", DAMAGE)
def test_damaged_flatbuffer_is_our_error_at_the_packet(tmp_path, position, layout, value, match):
    data, events, (_, second) = _two_packet_file(tmp_path)
    damaged = bytearray(data)
    struct.pack_into(layout, damaged, second + 8 + position, value)
    path = tmp_path / "damaged.aedat4"
    path.write_bytes(bytes(damaged))
    chunks = []
    with (
        pytest.raises(CorruptFileError, match=f"byte offset {second}: .*{match}"),
        Aedat4Reader(path) as reader,
    ):
        chunks.extend(reader)
    # Every event before the damaged packet was delivered, and a lenient read keeps them.
    assert [c.size for c in chunks] == [16_384]
    assert np.concatenate(chunks).tobytes() == events[:16_384].tobytes()
    kept, _ = read_events(path, lenient=True)
    assert kept.tobytes() == events[:16_384].tobytes()


def test_packet_without_the_events_field_holds_no_events(tmp_path):
    data, events, (_, second) = _two_packet_file(tmp_path)
    for position, layout, value in [(16, "<H", 0), (12, "<H", 4)]:  # field 0 unset / no slot
        damaged = bytearray(data)
        struct.pack_into(layout, damaged, second + 8 + position, value)
        path = tmp_path / "empty.aedat4"
        path.write_bytes(bytes(damaged))
        assert read_events(path)[0].tobytes() == events[:16_384].tobytes()


def test_lz4_packets_equal_uncompressed_and_damaged_frames_are_our_error(tmp_path):
    data, events, (first, second) = _two_packet_file(tmp_path, lz4=True)
    path = tmp_path / "lz4.aedat4"
    path.write_bytes(data)
    with Aedat4Reader(path) as reader:
        assert reader.compression == "LZ4"
        assert np.concatenate(list(reader)).tobytes() == events.tobytes()

    frame = second + 8
    # A huge declared content size, under a header checksum that matches it.
    huge = bytearray(data[frame + 4 : frame + 14])
    huge[2:] = struct.pack("<Q", 1 << 40)
    header_sum = (xxh32(np.frombuffer(bytes(huge), np.uint8), 0, 10, 0) >> 8) & 0xFF
    damage = [
        (frame, b"\0\0\0\0", "undecodable LZ4 frame"),  # not an LZ4 frame's magic number
        (frame + 4, bytes(huge) + bytes([header_sum]), "declares 1099511627776 bytes of content"),
        (frame + 6, struct.pack("<Q", 1 << 40), "header checksum does not match"),
        # A block size past the frame's end (frame header: 4 magic, 2 flags, 8 size, 1 check).
        (frame + 15, struct.pack("<I", 0x7FFFFF), "undecodable LZ4 frame"),
    ]
    for position, patch, match in damage:
        damaged = bytearray(data)
        damaged[position : position + len(patch)] = patch
        path.write_bytes(bytes(damaged))
        with pytest.raises(CorruptFileError, match=f"byte offset {second}: .*{match}"):
            read_events(path)
        assert read_events(path, lenient=True)[0].tobytes() == events[:16_384].tobytes()
    assert first < second


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=96), st.integers(0, 95), st.integers(0, 2**32 - 1))
def test_flatbuffer_parser_never_points_outside_the_buffer(data, position, value):
    """Whatever the bytes (here: valid-looking headers with one 32-bit word overwritten), the
    vector `_evts_elements` accepts lies inside the buffer."""
    fb = bytearray(struct.pack("<II4sHHHHiII", 92, 16, b"EVTS", 6, 8, 4, 0, 8, 4, 4)) + data
    fb[position : position + 4] = struct.pack("<I", value)[: max(0, len(fb) - position)]
    buffer = np.frombuffer(bytes(fb), dtype=np.uint8)
    start, n, error, _ = _evts_elements(buffer)
    if error == 0 and n:
        assert start >= 12 and start + 16 * n <= buffer.size


def test_reader_closes_between_chunks(tmp_path):
    """A chunk decodes in one kernel call and no view of the file's map outlives it, so the
    owner can close the reader while its iteration is suspended between chunks (as a replay
    does once its worker is done); the iteration then ends with an error, not a crash."""
    data, events, _ = _two_packet_file(tmp_path, lz4=True)
    path = tmp_path / "lz4.aedat4"
    path.write_bytes(data)
    reader = Aedat4Reader(path, chunk_events=1000)
    chunks = iter(reader)
    assert next(chunks).tobytes() == events[:1000].tobytes()
    reader.close()
    with pytest.raises(ValueError, match="closed"):
        next(chunks)


def test_lz4_content_larger_than_the_scratch_grows_it(tmp_path):
    """A frame whose content does not fit the reader's scratch buffer is decoded again into a
    bigger one (here from 64 bytes): the same events."""
    data, events, _ = _two_packet_file(tmp_path, lz4=True)
    path = tmp_path / "lz4.aedat4"
    path.write_bytes(data)
    with Aedat4Reader(path) as reader:
        reader._scratch = np.empty(64, dtype=np.uint8)
        assert np.concatenate(list(reader)).tobytes() == events.tobytes()
        assert reader._scratch.size > 16_384 * 16
