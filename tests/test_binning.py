"""The binning kernel against a plain-Python statement of the rules, plus the edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from spikecut.errors import ConfigError, EventDataError
from spikecut.pipeline.binning import (
    FrameBuilder,
    WindowSpec,
    bin_recording,
    frames_for_recording,
)
from spikecut.sources.events import StreamInfo, make_events

W, H = 9, 7


def random_events(rng: np.random.Generator, n: int, *, invalid: bool = True, dt: int = 30):
    """Sorted timestamps, some coordinates/polarities outside the sensor when `invalid`."""
    t = np.cumsum(rng.integers(0, dt, n)) + 1_000
    x = rng.integers(0, W + (2 if invalid else 0), n)
    y = rng.integers(0, H + (2 if invalid else 0), n)
    p = rng.integers(0, 2, n)
    events = make_events(t, x, y, p)
    if invalid:
        events["p"][rng.random(n) < 0.02] = 3
    return events


def reference(events: np.ndarray, spec: WindowSpec, end: str = "emit"):
    """The documented rules, event by event, for sorted streams without gaps.

    Returns (frames [T, P, H', W'] int64 after clipping, n_events [T]).
    """
    x0, y0, roi_w, roi_h = spec.roi or (0, 0, W, H)
    f = spec.downsample
    n_pol, h_out, w_out = spec.frame_shape((W, H))
    hot = set(spec.hot_pixels)
    refractory: dict[tuple[int, int], int] = {}
    recent: dict[tuple[int, int], int] = {}
    windows: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    origin = None
    accepted = 0
    t_max = None
    for e in events:
        t, x, y, p = int(e["t"]), int(e["x"]), int(e["y"]), int(e["p"])
        if x >= W or y >= H or p > 1:
            continue
        if origin is None:
            origin = t
        t_max = t
        if (x, y) in hot:
            continue
        if spec.refractory_us is not None:
            last = refractory.get((x, y))
            refractory[(x, y)] = t
            if last is not None and t - last <= spec.refractory_us:
                continue
        if spec.filter_us is not None:
            recent[(x, y)] = t
            support = [recent.get(nb) for nb in ((x - 1, y), (x + 1, y), (x, y - 1), (x, y + 1))]
            if not any(s is not None and t - s < spec.filter_us for s in support):
                continue
        if not (x0 <= x < x0 + roi_w and y0 <= y < y0 + roi_h):
            continue
        if spec.kind == "time":
            stride = spec.stride_us or spec.window_us
            rel = t - origin
            ks = [k for k in range(rel // stride + 1) if rel < k * stride + spec.window_us]
        elif spec.kind == "count":
            stride = spec.stride_events or spec.event_count
            ks = [
                k for k in range(accepted // stride + 1) if accepted < k * stride + spec.event_count
            ]
            accepted += 1
        else:
            rel = t - origin
            ks = [(rel * spec.n_bins) // spec.span_us]
        for k in ks:
            frame = windows.setdefault(k, np.zeros((n_pol, h_out, w_out), np.int64))
            frame[p if n_pol == 2 else 0, (y - y0) // f, (x - x0) // f] += 1
            counts[k] = counts.get(k, 0) + 1
    if origin is None:
        n_windows = spec.n_bins or 0
    elif spec.kind == "time":
        stride = spec.stride_us or spec.window_us
        started = (t_max - origin) // stride + 1
        complete = sum(1 for k in range(started) if k * stride + spec.window_us <= t_max - origin)
        n_windows = started if end == "emit" else complete
    elif spec.kind == "count":
        stride = spec.stride_events or spec.event_count
        started = (accepted - 1) // stride + 1 if accepted else 0
        complete = sum(1 for k in range(started) if k * stride + spec.event_count <= accepted)
        n_windows = started if end == "emit" else complete
    else:
        n_windows = spec.n_bins
    frames = np.zeros((n_windows, n_pol, h_out, w_out), np.int64)
    n_events = np.zeros(n_windows, np.int64)
    for k in range(n_windows):
        if k in windows:
            frames[k] = windows[k]
            n_events[k] = counts[k]
    if spec.clip is not None:
        frames = np.minimum(frames, spec.clip)
    return frames, n_events


def short(spec: WindowSpec) -> str:
    """The non-default options of a spec, for test ids."""
    default = WindowSpec(window_us=1).to_dict()
    options = {k: v for k, v in spec.to_dict().items() if v != default[k] or k == "window_us"}
    return ",".join(f"{k}={v}" for k, v in options.items() if v is not None)


SPECS = [
    WindowSpec(window_us=200),
    WindowSpec(window_us=200, stride_us=50),
    WindowSpec(window_us=150, stride_us=150, polarities=1, dtype="int32"),
    WindowSpec(event_count=40),
    WindowSpec(event_count=40, stride_events=15, dtype="uint16"),
    WindowSpec(n_bins=5, span_us=1_000),
    WindowSpec(window_us=300, clip=2, dtype="uint8"),
    WindowSpec(window_us=300, roi=(2, 1, 5, 5), downsample=2),
    WindowSpec(window_us=250, filter_us=120, refractory_us=10, hot_pixels=((3, 3), (0, 6))),
    WindowSpec(event_count=25, filter_us=80, stride_events=10),
    WindowSpec(window_us=250, stride_us=100, filter_us=200, roi=(1, 1, 8, 6), downsample=3),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: short(s))
@pytest.mark.parametrize("end", ["emit", "drop"])
def test_kernel_matches_the_rules(spec: WindowSpec, end: str) -> None:
    rng = np.random.default_rng(7)
    events = random_events(rng, 600)
    expected, n_events = reference(events, spec, end)
    got = bin_recording(events, (W, H), spec, end=end)
    assert got.frames.dtype == np.dtype(spec.dtype)
    assert got.frames.shape[1:] == spec.frame_shape((W, H))
    np.testing.assert_array_equal(got.frames.astype(np.int64), expected)
    np.testing.assert_array_equal(got.n_events, n_events)
    assert got.drops.outside_sensor == int(
        ((events["x"] >= W) | (events["y"] >= H) | (events["p"] > 1)).sum()
    )


def test_time_window_boundaries_and_metadata() -> None:
    events = make_events([100, 199, 200, 450, 451], [0, 1, 2, 3, 4], [0] * 5, [0, 1, 0, 1, 1])
    rec = bin_recording(events, (5, 1), WindowSpec(window_us=100, dtype="int32"))
    np.testing.assert_array_equal(rec.t_start_us, [100, 200, 300, 400])
    np.testing.assert_array_equal(rec.t_end_us, [200, 300, 400, 500])
    np.testing.assert_array_equal(rec.n_events, [2, 1, 0, 2])
    np.testing.assert_array_equal(rec.partial, [False, False, False, True])
    assert rec.frames[0, 0, 0, 0] == 1 and rec.frames[0, 1, 0, 1] == 1
    dropped = bin_recording(events, (5, 1), WindowSpec(window_us=100), end="drop")
    assert dropped.frames.shape[0] == 3


def test_n_bins_keeps_the_last_event_and_tiles_the_span() -> None:
    # tonic's n_time_bins drops events at t >= t0 + n * ((t_last - t0) // n): here the last one.
    t = np.array([0, 10, 20, 33, 40, 50, 66, 70, 99])
    events = make_events(t + 5_000, np.arange(9) % 3, np.zeros(9), np.zeros(9))
    rec = bin_recording(events, (3, 1), WindowSpec(n_bins=3, dtype="int32"))
    assert rec.frames.sum() == 9
    np.testing.assert_array_equal(rec.n_events, [4, 3, 2])  # span 100: [0,34) [34,67) [67,100)
    np.testing.assert_array_equal(rec.t_start_us - 5_000, [0, 34, 67])
    np.testing.assert_array_equal(rec.t_end_us - 5_000, [34, 67, 100])


def test_n_bins_with_a_fixed_span_pads_and_leaves_out_the_rest() -> None:
    events = make_events([1_000, 1_010, 1_500], [0, 1, 2], [0, 0, 0], [1, 1, 1])
    rec = bin_recording(events, (3, 1), WindowSpec(n_bins=4, span_us=100))
    assert rec.frames.shape[0] == 4
    np.testing.assert_array_equal(rec.n_events, [2, 0, 0, 0])
    assert rec.beyond_span == 1
    empty = frames_for_recording(events[:0], (3, 1), WindowSpec(n_bins=4))
    assert empty.shape == (4, 2, 1, 3) and not empty.any()


def test_counts_saturate_instead_of_wrapping() -> None:
    n = 300
    events = make_events(np.arange(n), np.zeros(n), np.zeros(n), np.ones(n))
    rec = bin_recording(events, (1, 1), WindowSpec(window_us=10_000, dtype="uint8"))
    assert rec.frames[0, 1, 0, 0] == 255
    assert rec.drops.clipped == n - 255
    assert rec.n_events[0] == n
    clipped = frames_for_recording(events, (1, 1), WindowSpec(window_us=10_000, clip=3))
    assert clipped[0, 1, 0, 0] == 3.0 and clipped.dtype == np.float32
    wide = frames_for_recording(events, (1, 1), WindowSpec(window_us=10_000, dtype="int16"))
    assert wide[0, 1, 0, 0] == n


def test_out_of_sensor_events_are_counted_never_binned() -> None:
    events = make_events([0, 1, 2, 3, 4], [0, 65535, 1, 2, 0], [0, 0, 60000, 1, 0], [0, 1, 1, 0, 1])
    events["p"][4] = 9
    rec = bin_recording(events, (3, 2), WindowSpec(window_us=100))
    assert rec.drops.outside_sensor == 3
    assert rec.frames.sum() == 2
    absurd = make_events([2**62, 5], [0, 0], [0, 0], [0, 0])
    assert bin_recording(absurd, (1, 1), WindowSpec(window_us=10)).drops.outside_sensor == 1


def test_late_events_are_dropped_and_counted() -> None:
    builder = FrameBuilder(WindowSpec(window_us=100, dtype="int32"), (4, 1))
    first = builder.push(make_events([0, 50, 250], [0, 1, 2], [0, 0, 0], [0, 0, 0]))
    assert [w.index for w in first] == [0, 1]
    # 120 falls in window 1 ([100, 200)), already closed by the event at 250: late.
    # 230 is out of order but its window is still open.
    more = builder.push(make_events([120, 230, 310], [3, 3, 3], [0, 0, 0], [1, 1, 1]))
    assert [w.index for w in more] == [2]
    assert more[0].n_events == 2 and more[0].drops.late == 1
    assert builder.totals.late == 1


def test_a_time_jump_resyncs_instead_of_spinning_out_empty_windows() -> None:
    spec = WindowSpec(window_us=10, max_gap_us=1_000, dtype="int32")
    events = make_events([0, 5, 12, 10**12, 10**12 + 3, 10**12 + 15], [0] * 6, [0] * 6, [0] * 6)
    rec = bin_recording(events, (1, 1), spec)
    assert rec.drops.resyncs == 1
    np.testing.assert_array_equal(rec.n_events, [2, 1, 2, 1])
    np.testing.assert_array_equal(rec.t_start_us, [0, 10, 10**12, 10**12 + 10])
    np.testing.assert_array_equal(rec.partial, [False, True, False, True])
    # A clock reset (time going far back) resyncs too rather than making everything late.
    back = make_events([10**9, 10**9 + 20, 7, 8], [0] * 4, [0] * 4, [0] * 4)
    rec = bin_recording(back, (1, 1), spec)
    assert rec.drops.resyncs == 1 and rec.drops.late == 0 and rec.n_events.sum() == 4


def test_without_max_gap_a_huge_jump_is_refused_not_allocated() -> None:
    spec = WindowSpec(window_us=1, max_gap_us=None)
    events = make_events([0, 2**40], [0, 0], [0, 0], [0, 0])
    with pytest.raises(EventDataError, match="windows"):
        frames_for_recording(events, (346, 260), spec)


def test_advance_to_closes_windows_on_an_outside_clock() -> None:
    builder = FrameBuilder(WindowSpec(window_us=100), (2, 2))
    assert builder.advance_to(10_000) == []  # no origin yet: nothing to align windows with
    builder.push(make_events([1_000], [0], [0], [1]))
    closed = builder.advance_to(1_350, wall_clock=True)
    assert [(w.index, w.n_events, w.closed_by_wall_clock) for w in closed] == [
        (0, 1, True),
        (1, 0, True),
        (2, 0, True),
    ]
    assert builder.next_close_us == 1_400
    late = builder.push(make_events([1_299, 1_420], [0, 1], [0, 1], [0, 0]))
    assert late[0].index == 3 and late[0].drops.late == 1


def test_finish_emits_or_drops_partial_windows_and_then_refuses_events() -> None:
    events = make_events([0, 10, 25], [0, 0, 0], [0, 0, 0], [0, 0, 0])
    for end, expected in (("emit", [0, 1, 2]), ("drop", [0])):
        builder = FrameBuilder(WindowSpec(window_us=20, stride_us=10), (1, 1))
        windows = builder.push(events) + builder.finish(end)
        assert [w.index for w in windows] == expected
        assert [w.partial for w in windows] == [k >= 1 for k in expected]
        with pytest.raises(ConfigError, match="reset"):
            builder.push(events)
        builder.reset()
        assert builder.push(events)[0].index == 0


def test_count_windows_close_on_their_last_event_and_report_their_times() -> None:
    builder = FrameBuilder(WindowSpec(event_count=3, dtype="int32"), (2, 2))
    windows = builder.push(make_events([5, 6, 9, 20], [0, 1, 0, 1], [0, 0, 1, 1], [0] * 4))
    assert len(windows) == 1
    assert (windows[0].t_start_us, windows[0].t_end_us, windows[0].n_events) == (5, 10, 3)
    assert builder.finish("emit")[0].n_events == 1


def test_count_window_times_skip_the_events_a_crop_leaves_out() -> None:
    # A count window spans its first to last counted event. The hot loop counts events outside
    # the ROI (x >= 2 here) or the sensor (x = 9) as drops on the way: they must not move those
    # bounds, whether they open a window's run, end it, or end the stream.
    x = [0, 1, 2, 3, 0, 9, 2, 1, 3, 0, 2]
    events = make_events(np.arange(11), x, [0] * 11, [0] * 11)
    spec = WindowSpec(event_count=2, roi=(0, 0, 2, 1), dtype="int32")
    expected = [(0, 2, 2), (4, 8, 2), (9, 10, 1)]
    rec = bin_recording(events, (4, 1), spec)
    got = zip(rec.t_start_us.tolist(), rec.t_end_us.tolist(), rec.n_events.tolist(), strict=True)
    assert list(got) == expected
    assert (rec.drops.outside_roi, rec.drops.outside_sensor) == (5, 1)
    for size in (1, 3, 11):
        builder = FrameBuilder(spec, (4, 1))
        windows = [w for i in range(0, 11, size) for w in builder.push(events[i : i + size])]
        windows += builder.finish()
        assert [(w.t_start_us, w.t_end_us, w.n_events) for w in windows] == expected


def test_frames_handed_out_are_never_reused() -> None:
    builder = FrameBuilder(WindowSpec(window_us=10, dtype="int32"), (2, 1))
    rng = np.random.default_rng(1)
    events = make_events(
        np.arange(0, 2_000, 3), rng.integers(0, 2, 667), np.zeros(667), np.zeros(667)
    )
    windows = builder.push(events)
    copies = [w.frames.copy() for w in windows]
    windows += builder.push(make_events([5_000], [0], [0], [0]))
    for w, c in zip(windows, copies, strict=False):
        np.testing.assert_array_equal(w.frames, c)
    assert len({id(w.frames) for w in windows}) == len(windows)


def test_streaming_needs_a_fixed_span_for_n_bins() -> None:
    with pytest.raises(ConfigError, match="span_us"):
        FrameBuilder(WindowSpec(n_bins=10), StreamInfo(width=4, height=4, source="x"))


def test_roi_must_fit_the_sensor_and_hot_pixels_too() -> None:
    with pytest.raises(ConfigError, match="roi"):
        FrameBuilder(WindowSpec(window_us=10, roi=(10, 0, 5, 5)), (12, 12))
    with pytest.raises(ConfigError, match="hot pixel"):
        FrameBuilder(WindowSpec(window_us=10, hot_pixels=((20, 0),)), (12, 12))
