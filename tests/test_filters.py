"""The standalone event filters: rules, counters, chunking, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikecut.errors import ConfigError
from spikecut.pipeline.filters import EventFilter, denoise, hot_pixel_mask, sensor_dims
from spikecut.sources.events import StreamInfo, make_events

W, H = 5, 4


def events_from(rows: list[tuple[int, int, int, int]]) -> np.ndarray:
    t, x, y, p = zip(*rows, strict=True) if rows else ((), (), (), ())
    return make_events(list(t), list(x), list(y), list(p))


def test_denoise_keeps_events_with_a_recent_4_neighbour_only() -> None:
    events = events_from(
        [
            (100, 2, 2, 1),  # nothing before it: dropped
            (150, 3, 2, 0),  # right neighbour of the first, 50 us later: kept
            (300, 2, 2, 1),  # neighbour (3,2) fired 150 us ago > filter: dropped
            (320, 1, 1, 1),  # diagonal of (2,2): diagonals do not count, dropped
            (330, 2, 2, 0),  # its own pixel fired 30 us ago: own pixel does not count, dropped
            (340, 2, 1, 0),  # above (2,2), which fired 10 us ago: kept
        ]
    )
    kept = EventFilter((W, H), filter_us=100)(events)
    np.testing.assert_array_equal(kept["t"], [150, 340])
    counts = EventFilter((W, H), filter_us=100)
    counts(events)
    assert counts.counts.denoise == 4


def test_refractory_silences_a_pixel_and_bursts_extend_it() -> None:
    events = events_from([(0, 1, 1, 0), (5, 1, 1, 1), (9, 1, 1, 0), (20, 1, 1, 0), (21, 0, 0, 0)])
    kept = EventFilter((W, H), refractory_us=10)(events)
    # 5 and 9 fall within 10 us of the previous event at the pixel (either polarity);
    # 20 is 11 us after 9: kept. An event at t = 0 is kept (tonic would drop it).
    np.testing.assert_array_equal(kept["t"], [0, 20, 21])


def test_hot_pixels_and_outside_events_are_dropped_and_counted() -> None:
    events = events_from([(0, 1, 1, 0), (1, 4, 3, 1), (2, 9, 0, 0), (3, 0, 17, 1), (4, 1, 1, 1)])
    events["p"][0] = 2
    f = EventFilter(StreamInfo(width=W, height=H, source="test"), hot_pixels=[(4, 3)])
    kept = f(events)
    np.testing.assert_array_equal(kept["t"], [4])
    assert (f.counts.outside_sensor, f.counts.hot_pixel, f.counts.total()) == (3, 1, 4)
    f.reset()
    assert f.counts.total() == 0


@st.composite
def noisy_streams(draw: st.DrawFn) -> np.ndarray:
    n = draw(st.integers(0, 200))
    t = np.cumsum(draw(st.lists(st.integers(-3, 40), min_size=n, max_size=n))).astype(np.int64)
    x = draw(st.lists(st.integers(0, W), min_size=n, max_size=n))
    y = draw(st.lists(st.integers(0, H), min_size=n, max_size=n))
    p = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    return make_events(t, x, y, p)


@settings(max_examples=100, deadline=None)
@given(events=noisy_streams(), cuts=st.lists(st.integers(0, 200), max_size=8))
def test_filters_carry_state_across_chunks(events: np.ndarray, cuts: list[int]) -> None:
    options = {"filter_us": 30, "refractory_us": 7, "hot_pixels": [(0, 0)]}
    whole = EventFilter((W, H), **options)
    expected = whole(events)
    chunked = EventFilter((W, H), **options)
    pieces = np.split(events, sorted(c for c in cuts if c <= len(events)))
    got = np.concatenate([chunked(piece) for piece in pieces])
    np.testing.assert_array_equal(got, expected)
    assert chunked.counts == whole.counts


def test_denoise_helper_and_empty_input() -> None:
    assert len(denoise(events_from([]), (W, H), 10)) == 0
    events = events_from([(0, 0, 0, 0), (1, 1, 0, 0)])
    np.testing.assert_array_equal(denoise(events, (W, H), 10)["t"], [1])


def test_bad_options_name_the_option() -> None:
    with pytest.raises(ConfigError, match="filter_us"):
        EventFilter((W, H), filter_us=0)
    with pytest.raises(ConfigError, match="refractory_us"):
        EventFilter((W, H), refractory_us=-1)
    with pytest.raises(ConfigError, match=r"\(9, 0\)"):
        hot_pixel_mask([(9, 0)], W, H)
    with pytest.raises(ConfigError, match="pair"):
        hot_pixel_mask([(1, 2, 3)], W, H)
    with pytest.raises(ConfigError, match="sensor"):
        sensor_dims("346x260")
    with pytest.raises(ConfigError, match="65535"):
        sensor_dims((0, 10))
    assert sensor_dims((346, 260, 2)) == (346, 260)
