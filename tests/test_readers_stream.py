"""The incremental Prophesee decoders, as a live byte stream feeds them: any split of the bytes
must give the same events, and all decoder state must survive between calls."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikecut.errors import CorruptFileError, EventDataError, TruncatedFileError
from spikecut.sources import make_events, open_reader, read_events
from spikecut.sources.prophesee import (
    Evt2Decoder,
    Evt2Encoder,
    Evt3Decoder,
    Evt3Encoder,
    parse_raw_header,
)
from spikecut.sources.reader import EventValidator, header_lines


def _payload(path) -> bytes:
    with open(path, "rb") as file:
        _, offset = header_lines(file, b"%", end=b"% end")
        file.seek(offset)
        return file.read()


@pytest.fixture(scope="module")
def evt3_driving(real_data) -> bytes:
    """The first 120 KB of the driving file: vector words included."""
    return _payload(real_data / "prophesee_raw/evt3_gen41_driving.raw")[:120_000]


@pytest.fixture(scope="module")
def evt2_sparklers(real_data) -> bytes:
    return _payload(real_data / "prophesee_raw/evt2_gen3_sparklers.raw")[:200_000]


def _decode_in_pieces(decoder, data: bytes, cuts: list[int]) -> np.ndarray:
    bounds = [0, *sorted(set(cuts)), len(data)]
    parts = [decoder.decode(data[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    decoder.finish()
    return np.concatenate(parts)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cuts=st.lists(st.integers(0, 120_000), max_size=40))
def test_evt3_any_split_gives_the_same_events(evt3_driving, cuts):
    whole = Evt3Decoder().decode(evt3_driving)
    assert whole.size > 10_000
    pieces = _decode_in_pieces(Evt3Decoder(), evt3_driving, [c for c in cuts if c % 2 == 0])
    np.testing.assert_array_equal(pieces, whole)
    # Odd cuts split words: the decoder must keep the half word.
    odd = _decode_in_pieces(Evt3Decoder(), evt3_driving, [c | 1 for c in cuts])
    np.testing.assert_array_equal(odd, whole)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cuts=st.lists(st.integers(0, 200_000), max_size=40))
def test_evt2_any_split_gives_the_same_events(evt2_sparklers, cuts):
    whole = Evt2Decoder().decode(evt2_sparklers)
    pieces = _decode_in_pieces(Evt2Decoder(), evt2_sparklers, cuts)
    np.testing.assert_array_equal(pieces, whole)


def test_evt3_one_byte_at_a_time(evt3_driving):
    data = evt3_driving[:6000]
    decoder = Evt3Decoder()
    parts = [decoder.decode(data[i : i + 1]) for i in range(len(data))]
    np.testing.assert_array_equal(np.concatenate(parts), Evt3Decoder().decode(data))
    assert decoder.offset == len(data)


def test_stream_decoder_equals_file_reader(real_data, evt3_driving):
    path = real_data / "prophesee_raw/evt3_gen41_driving.raw"
    events, _ = read_events(path)
    streamed = Evt3Decoder().decode(_payload(path))
    np.testing.assert_array_equal(streamed, events)  # no jitter to clamp in this file


def test_decoder_accepts_bytearray_memoryview_and_numpy(evt3_driving):
    data = evt3_driving[:4000]
    expected = Evt3Decoder().decode(data)
    for form in (bytearray(data), memoryview(data), np.frombuffer(data, np.uint8)):
        np.testing.assert_array_equal(Evt3Decoder().decode(form), expected)


def test_partial_word_at_end_is_a_truncation():
    decoder = Evt3Decoder(source="peer:1234")
    decoder.decode(b"\x00\x80\x01")  # TIME_HIGH and half a word
    assert decoder.pending_bytes == 1
    with pytest.raises(TruncatedFileError, match=r"peer:1234, byte offset 2: .*1 byte"):
        decoder.finish()


def _words3(*words: int) -> bytes:
    return struct.pack(f"<{len(words)}H", *words)


def test_evt3_words_before_the_first_time_high_are_skipped():
    # ADDR_Y 5, ADDR_X 7 (no time base yet), TIME_HIGH 1, TIME_LOW 3, ADDR_X 9 ON
    data = _words3(0x0005, 0x2007, 0x8001, 0x6003, 0x2809)
    events = Evt3Decoder().decode(data)
    assert events.tolist() == [((1 << 12) + 3, 9, 0, 1)]  # y unset before the base: 0


def test_evt2_words_before_the_first_time_high_are_skipped():
    cd_on, cd_off = 1 << 28, 0  # CD_ON / CD_OFF words: t low bits 0, x 0, y 0
    others, time_high = 0xE << 28, (0x8 << 28) | 2  # OTHERS, TIME_HIGH 2 (t = 128)
    data = struct.pack("<6I", cd_on, others, cd_off, time_high, cd_on | (5 << 22) | (3 << 11), 0)
    assert Evt2Decoder().decode(data).tolist() == [(128 + 5, 3, 0, 1), (128, 0, 0, 0)]
    with pytest.raises(CorruptFileError, match="undefined EVT 2.0 word 0x50000000"):
        Evt2Decoder().decode(struct.pack("<2I", cd_on, 0x5 << 28))  # before any TIME_HIGH


def test_evt3_vectors_and_exposure_rows():
    data = _words3(
        0x8000,  # TIME_HIGH 0
        0x6010,  # TIME_LOW 16
        0x0003,  # ADDR_Y 3 (CD row)
        0x3800 | 100,  # VECT_BASE_X 100, ON
        0x4000 | 0b100000000101,  # VECT_12: x 100, 102, 111
        0x5000 | 0b10000001,  # VECT_8: x 112, 119
        0x1004,  # EM row: following ADDR_X are exposure events, not CD
        0x2005,
        0x0002,  # back to a CD row
        0x2006,
    )
    events = Evt3Decoder().decode(data)
    assert events["x"].tolist() == [100, 102, 111, 112, 119, 6]
    assert events["y"].tolist() == [3, 3, 3, 3, 3, 2]
    assert events["p"].tolist() == [1, 1, 1, 1, 1, 0]
    assert set(events["t"].tolist()) == {16}


def test_evt3_time_low_going_down_is_not_a_loop():
    data = _words3(0x8002, 0x6100, 0x0001, 0x2001, 0x60F0, 0x2002)
    events = Evt3Decoder().decode(data)
    assert events["t"].tolist() == [(2 << 12) + 0x100, (2 << 12) + 0xF0]


@pytest.mark.parametrize(
    "encoder, decoder, loop_bits", [(Evt3Encoder, Evt3Decoder, 24), (Evt2Encoder, Evt2Decoder, 34)]
)
def test_time_high_loops_are_unrolled(encoder, decoder, loop_bits):
    period = 1 << loop_bits
    t = np.array([5, period - 3, period + 2, 3 * period + 7, 7 * period + 1], dtype=np.int64)
    events = make_events(t, [1, 2, 3, 4, 5], [0, 1, 2, 3, 4], [0, 1, 0, 1, 1])
    data = encoder().encode(events)
    np.testing.assert_array_equal(decoder().decode(data), events)
    # A stream that starts loops after 0 (found by the writers' round trip): crossed from 0.
    np.testing.assert_array_equal(decoder().decode(encoder().encode(events[3:])), events[3:])


def test_encoder_continues_across_calls_like_one_stream():
    rng = np.random.default_rng(3)
    t = np.sort(rng.integers(0, 3 << 24, 5000))
    events = make_events(
        t, rng.integers(0, 1280, 5000), rng.integers(0, 720, 5000), rng.integers(0, 2, 5000)
    )
    encoder = Evt3Encoder()
    data = b"".join(encoder.encode(events[i : i + 333]) for i in range(0, 5000, 333))
    np.testing.assert_array_equal(Evt3Decoder().decode(data), events)


def test_undefined_word_strict_raises_and_keeps_everything():
    good = _words3(0x8000, 0x6001, 0x0001, 0x2001, 0x2002)
    bad = _words3(0x9ABC)
    after = _words3(0x2003)
    decoder = Evt3Decoder(source="stream")
    with pytest.raises(CorruptFileError, match=r"byte offset 10: undefined EVT 3.0 word 0x9ABC"):
        decoder.decode(good + bad + after)
    # The events before the bad word and those after it come with the next call.
    events = decoder.decode(b"")
    assert events["x"].tolist() == [1, 2, 3]


def test_undefined_word_lenient_decoder_skips_and_counts():
    decoder = Evt2Decoder(strict=False)
    words = struct.pack("<4I", 0x80000001, 0x10000000 | (5 << 11) | 6, 0x30000000, 0x00000000)
    events = decoder.decode(words)
    assert decoder.bad_words == 1
    assert events[["x", "y", "p"]].tolist() == [(5, 6, 1), (0, 0, 0)]


def _write_raw(tmp_path, words: bytes, name="s.raw", version="3.0") -> str:
    path = tmp_path / name
    path.write_bytes(f"% evt {version}\n% geometry 64x32\n% end\n".encode() + words)
    return path


def test_reader_clamps_small_steps_back_and_counts_them(tmp_path):
    # TIME_HIGH 1: t 4096+40, then TIME_LOW steps back to 4096+30: within the jitter tolerance.
    words = _words3(0x8001, 0x6028, 0x0001, 0x2001, 0x601E, 0x2002, 0x6032, 0x2003)
    with open_reader(_write_raw(tmp_path, words)) as reader:
        events = reader.read_all()
        assert reader.stats.clamped_backwards == 1
    assert events["t"].tolist() == [4136, 4136, 4146]


def test_reader_refuses_large_steps_back_unless_lenient(tmp_path):
    # TIME_HIGH 5 then TIME_HIGH 2: 12 ms back, far beyond the jitter tolerance.
    words = _words3(0x8005, 0x0001, 0x2001, 0x8002, 0x2002, 0x8006, 0x2003)
    path = _write_raw(tmp_path, words)
    with pytest.raises(EventDataError, match=r"s\.raw: timestamps go backwards at event index 1"):
        read_events(path)
    with open_reader(path, lenient=True) as reader:
        events = reader.read_all()
        assert reader.stats.dropped_backwards == 1
    assert events["x"].tolist() == [1, 3]


def test_raw_header_parsed_incrementally_then_events(real_data):
    """How a raw+tcp source starts: buffer until the header is complete, then decode."""
    path = real_data / "prophesee_raw/evt3_gen41_driving.raw"
    data = path.read_bytes()
    expected, _ = read_events(path)
    buffered, header, decoder, parts = b"", None, Evt3Decoder(), []
    for start in range(0, len(data), 37):  # a peer sending 37-byte pieces
        piece = data[start : start + 37]
        if header is None:
            buffered += piece
            header = parse_raw_header(buffered)
            if header is None:
                continue
            piece = buffered[header.length :]
        parts.append(decoder.decode(piece))
    decoder.finish()
    assert header.version == "evt3" and header.sensor_size == (1280, 720)
    assert header.length == len(data) - len(_payload(path))
    np.testing.assert_array_equal(np.concatenate(parts), expected)


def test_raw_header_edge_cases():
    assert parse_raw_header(b"") is None
    assert parse_raw_header(b"% evt 3.0\n") is None  # the next byte may be another '%' line
    header = parse_raw_header(b"% evt 3.0\n% end\n\x00\x80")
    assert (header.length, header.version, header.sensor_size) == (16, "evt3", None)
    assert parse_raw_header(b"\x00\x80").length == 0  # no header at all
    header = parse_raw_header(b"% evt 2.0\r\n% geometry 640x480\r\n\x00")
    assert header.sensor_size == (640, 480) and header.lines[1] == "% geometry 640x480"


@pytest.mark.parametrize("header", [b"", b"% evt 3.0\n% geometry 64x32\n"], ids=["none", "no-end"])
def test_binary_starting_with_a_percent_byte_is_data_not_header(tmp_path, header):
    """TIME_HIGH 0x025 is the bytes 25 80: a '%' that begins no header line. The binary 'line'
    up to the next 0x0A (the ADDR_X 10 word, 0A 20) holds control bytes: it is data."""
    words = _words3(0x8025, 0x0003, 0x2005, 0x6001, 0x200A)
    t = 0x25 << 12
    expected = [(t, 5, 3, 0), (t + 1, 10, 3, 0)]
    assert parse_raw_header(header + words + b"\x00").length == len(header)
    path = tmp_path / "h.raw"
    path.write_bytes(header + words)
    events, info = read_events(path, format="evt3", sensor_size=None if header else (64, 32))
    assert events.tolist() == expected and (info.width, info.height) == (64, 32)
    path.write_bytes(header + words[:8])  # no 0x0A at all: still data, not a cut header line
    assert read_events(path, format="evt3", sensor_size=(64, 32))[0].tolist() == expected[:1]


def test_validator_rules_for_a_stream_that_must_go_on():
    """What live sources ask of the readers' validator: drop what is outside the sensor, clamp
    jitter, drop (or refuse) further steps back, and take a step back beyond `clock_reset_us`,
    or any step back after a reconnect, as a restarted clock that the stream continues from."""
    validator = EventValidator(
        8, 8, jitter_us=10, drop_outside=True, drop_backwards=True, clock_reset_us=1000
    )
    # 105 is outside (x=9); 95 is jitter; 50 is too far back; 10 is a clock reset (1990 back).
    t = [100, 105, 95, 50, 2000, 10, 20]
    chunk = make_events(t, [1, 9, 1, 1, 1, 1, 1], [2] * 7, [1] * 7)
    assert validator(chunk)["t"].tolist() == [100, 100, 2000, 2000, 2010]
    validator.rebase_after(500)
    assert validator(make_events([5, 6], [0, 0], [0, 0], [0, 0]))["t"].tolist() == [2510, 2511]
    stats = validator.stats
    assert (stats.dropped_out_of_sensor, stats.clamped_backwards) == (1, 1)
    assert (stats.dropped_backwards, stats.clock_rebases, stats.events) == (1, 2, 7)
    strict = EventValidator(8, 8, drop_outside=True, clock_reset_us=1000, source="cam")
    with pytest.raises(EventDataError, match=r"cam: .* at event index 2 \(100 us -> 50 us\)"):
        strict(make_events([100, 7, 50], [1, 1, 1], [1, 9, 1], [0, 0, 0]))
    assert strict.stats.dropped_out_of_sensor == 1
