"""The fast paths of the binning kernel against the general ones.

`bin_recording` defers saturation to the moment a window is taken (no saturation
test in the hot loop) and moves completed windows into its output in one compiled call; the
streaming `FrameBuilder` saturates at every increment, and inside a window it skips the test only
while no count can reach the cap. Whatever the stream (garbage, late events, time jumps, overlap,
clipping on every pixel), both must give the same frames, the same window metadata and the same
cumulative counters.
"""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spikecut.pipeline.binning as binning
from spikecut.errors import ConfigError
from spikecut.pipeline.binning import (
    S_ORIGIN,
    FrameBuilder,
    WindowSpec,
    bin_recording,
    frames_for_recording,
)
from spikecut.sources.events import make_events
from tests.test_binning_chunks import ROIS, H, W, streams

saturation = {
    "clip": st.sampled_from([None, 1, 2, 7]),
    "dtype": st.sampled_from(["uint8", "int16", "float16", "float32"]),
    "polarities": st.sampled_from([1, 2]),
    "max_gap_us": st.sampled_from([None, 2_000]),
    "roi": ROIS,
}
specs = st.one_of(
    st.integers(1, 300).flatmap(
        lambda w: st.builds(
            WindowSpec,
            window_us=st.just(w),
            stride_us=st.one_of(st.none(), st.integers(1, w)),
            refractory_us=st.sampled_from([None, 20]),
            **saturation,
        )
    ),
    st.integers(1, 40).flatmap(
        lambda c: st.builds(
            WindowSpec,
            event_count=st.just(c),
            stride_events=st.one_of(st.none(), st.integers(1, c)),
            **saturation,
        )
    ),
    st.builds(WindowSpec, n_bins=st.integers(1, 7), span_us=st.integers(1, 500), **saturation),
)


def streamed(events: np.ndarray, spec: WindowSpec, end: str) -> tuple[dict, object, int]:
    """What the streaming builder makes of the stream, arranged like a `BinnedRecording`: the
    windows by index, the totals and (n_bins) the events beyond the span."""
    builder = FrameBuilder(spec, (W, H))
    got = builder.push(events)
    if spec.kind == "bins":
        # As bin_recording: complete the first span, then emit what is open.
        if builder.has_origin and builder.totals.resyncs == 0:
            got += builder.advance_to(int(builder._st[S_ORIGIN]) + spec.span_us)
        got += builder.finish("emit")
        beyond = sum(w.n_events for w in got if w.index >= spec.n_bins)
        return {w.index: w for w in got if w.index < spec.n_bins}, builder.totals, beyond
    got += builder.finish(end)
    return {w.index: w for w in got}, builder.totals, 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), spec=specs, end=st.sampled_from(["emit", "drop"]))
def test_whole_recording_path_equals_streaming(data: st.DataObject, spec, end: str) -> None:
    events = data.draw(streams(jumps=spec.max_gap_us is not None or spec.kind == "count"))
    windows, totals, beyond = streamed(events, spec, end)
    rec = bin_recording(events, (W, H), spec, end=end)
    assert rec.drops == totals
    assert rec.beyond_span == beyond
    assert rec.frames.dtype == np.dtype(spec.dtype)
    if spec.kind != "bins":
        assert sorted(windows) == list(range(len(rec.frames)))
    for k, frame in enumerate(rec.frames):
        window = windows.get(k)
        if window is None:  # a bin that never started
            assert spec.kind == "bins" and not frame.any() and rec.n_events[k] == 0
            continue
        assert frame.tobytes() == window.frames.tobytes()
        assert rec.n_events[k] == window.n_events
        assert rec.partial[k] == window.partial
        if spec.kind != "bins" or totals.resyncs == 0:
            assert (rec.t_start_us[k], rec.t_end_us[k]) == (window.t_start_us, window.t_end_us)


def test_saturation_inside_a_run_and_when_a_window_is_taken() -> None:
    # One pixel takes 100,000 events in one window and 40,000 in the next: past the cap of every
    # narrow dtype the streaming builder switches to its saturating loop mid-run, the whole
    # recording path saturates when it takes the window. Same frames, same clipped total.
    n = 140_000
    events = make_events(np.arange(n) // 20, np.ones(n), np.full(n, 2), np.ones(n))
    for dtype in ("uint8", "int16", "uint16", "float16"):
        for spec in (WindowSpec(window_us=5_000, dtype=dtype), WindowSpec(n_bins=1, dtype=dtype)):
            rec = bin_recording(events, (W, H), spec)
            builder = FrameBuilder(spec.with_(span_us=n // 20) if spec.n_bins else spec, (W, H))
            windows = builder.push(events) + builder.finish()
            assert rec.frames.tobytes() == np.stack([w.frames for w in windows]).tobytes()
            assert rec.drops.clipped == builder.totals.clipped > 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), spec=specs, end=st.sampled_from(["emit", "drop"]))
def test_a_ring_without_slack_changes_nothing(data: st.DataObject, spec, end: str) -> None:
    # Big frames get a ring of just the open windows (to stay in cache): the kernel then
    # returns at every window. Same windows, in chunks or not, as with a roomy ring.
    events = data.draw(streams(jumps=spec.max_gap_us is not None or spec.kind == "count"))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=6)))
    roomy, roomy_totals, _ = streamed(events, spec, end)
    roomy_rec = bin_recording(events, (W, H), spec, end=end)
    roomy_ring, slack = FrameBuilder(spec, (W, H))._ring, binning._RING_SLACK_BYTES
    binning._RING_SLACK_BYTES = 1
    try:
        builder = FrameBuilder(spec, (W, H))
        assert builder._ring == roomy_ring - 16  # slack 16 down to none
        tight = [w for chunk in np.split(events, cuts) for w in builder.push(chunk)]
        tight += builder.finish(end if spec.kind != "bins" else "emit")
        tight_rec = bin_recording(events, (W, H), spec, end=end)
    finally:
        binning._RING_SLACK_BYTES = slack
    if spec.kind != "bins":
        assert [(w.index, w.n_events, w.frames.tobytes()) for w in tight] == [
            (w.index, w.n_events, w.frames.tobytes()) for w in roomy.values()
        ]
        assert builder.totals == roomy_totals
    assert tight_rec.frames.tobytes() == roomy_rec.frames.tobytes()
    assert tight_rec.n_events.tolist() == roomy_rec.n_events.tolist()
    assert tight_rec.drops == roomy_rec.drops


# --- the direct path (non-overlapping windows and n_bins, no filters) against the engine ----------

direct_specs = st.one_of(
    st.builds(WindowSpec, window_us=st.integers(1, 300), **saturation),
    st.builds(
        WindowSpec,
        n_bins=st.integers(1, 7),
        span_us=st.one_of(st.none(), st.integers(1, 500)),
        **saturation,
    ),
)


def engine_recording(events: np.ndarray, spec: WindowSpec, end: str):
    """`bin_recording` through the streaming engine only."""
    with mock.patch.object(binning, "_direct_fits", lambda spec: False):
        return bin_recording(events, (W, H), spec, end=end)


def assert_same_recording(got, expected) -> None:
    assert got.frames.dtype == expected.frames.dtype
    assert got.frames.shape == expected.frames.shape
    assert got.frames.tobytes() == expected.frames.tobytes()
    for name in ("t_start_us", "t_end_us", "n_events", "partial"):
        assert getattr(got, name).tolist() == getattr(expected, name).tolist(), name
    assert got.drops == expected.drops
    assert got.beyond_span == expected.beyond_span


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    spec=direct_specs,
    end=st.sampled_from(["emit", "drop"]),
    threads=st.sampled_from([1, 2, 3]),
)
def test_direct_path_equals_the_engine(data: st.DataObject, spec, end: str, threads: int) -> None:
    """Hostile streams (garbage, late events, jumps, saturation) in one to three threads: the
    direct path gives what the engine gives, or declines and the engine runs."""
    events = data.draw(streams(jumps=spec.max_gap_us is not None))
    expected = engine_recording(events, spec, end)
    assert_same_recording(bin_recording(events, (W, H), spec, end=end, threads=threads), expected)


def ordered_stream(n: int, seed: int) -> np.ndarray:
    """A clean stream in time order with garbage sprinkled in: what real recordings look like."""
    rng = np.random.default_rng(seed)
    t = 10**6 + np.cumsum(rng.integers(0, 30, n))
    events = make_events(t, rng.integers(0, W, n), rng.integers(0, H, n), rng.integers(0, 2, n))
    events["x"][rng.integers(0, n, 20)] = W + 3
    return events


@pytest.mark.parametrize(
    "spec",
    [
        WindowSpec(window_us=500, dtype="int16"),
        WindowSpec(window_us=700, dtype="uint8", clip=3, roi=(1, 1, 4, 3), polarities=1),
        WindowSpec(n_bins=10),
        WindowSpec(n_bins=5, span_us=600_000, dtype="float16"),  # longer than the stream
    ],
)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_ordered_recordings_take_the_direct_path_in_parallel(spec, threads) -> None:
    events = ordered_stream(30_000, seed=threads)
    cfg = np.zeros(binning.N_CFG, dtype=np.int64)
    span = spec.span_us or int(events["t"][-1] - events["t"][0] + 1)
    binning._fill_config(cfg, spec, W, H, span)
    parts = binning._plan_parts(events, 0, cfg, np.int64(events["t"][0]), threads, 10**9)
    assert len(parts) == threads  # cut where asked, at window boundaries
    with mock.patch.object(binning, "_Recording", side_effect=AssertionError("engine ran")):
        got = bin_recording(events, (W, H), spec, threads=threads)
    assert_same_recording(got, engine_recording(events, spec, "emit"))


def test_out_of_order_parts_fall_back_to_one_thread() -> None:
    """An event far out of order lands in the other thread's windows: the split is redone by one
    thread, which handles it exactly (the engine never runs)."""
    events = ordered_stream(30_000, seed=5)
    events["t"][25_000] = events["t"][1_000]  # late, from the second half
    events["t"][3_000] = events["t"][28_000]  # early, from the first half
    spec = WindowSpec(window_us=500, dtype="int16")
    with mock.patch.object(binning, "_Recording", side_effect=AssertionError("engine ran")):
        got = bin_recording(events, (W, H), spec, threads=2)
    expected = engine_recording(events, spec, "emit")
    assert_same_recording(got, expected)
    assert got.drops.late > 0


def test_threads_must_be_positive() -> None:
    for threads in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="threads"):
            bin_recording(ordered_stream(10, 0), (W, H), WindowSpec(window_us=5), threads=threads)


def test_float32_counts_saturate_where_float32_stops_counting() -> None:
    """float32 holds counts exactly up to 2**24 (lowered to 3 here); there they saturate, and
    are counted as clipped, the same in every path: streamed float32 counters, the direct path,
    the engine's int32 counters."""
    events = ordered_stream(2_000, seed=9)
    spec = WindowSpec(window_us=2_000)
    with mock.patch.object(binning, "_FLOAT32_MAX_COUNT", 3):
        builder = FrameBuilder(spec, (W, H))
        streamed_windows = builder.push(events) + builder.finish()
        direct = bin_recording(events, (W, H), spec, threads=2)
        engine = engine_recording(events, spec, "emit")
    frames = np.stack([w.frames for w in streamed_windows])
    assert frames.max() == 3 and builder.totals.clipped > 0
    assert frames.tobytes() == direct.frames.tobytes()
    assert builder.totals == direct.drops
    assert_same_recording(direct, engine)


def test_big_float32_frames_are_the_slot_itself_and_stay_the_receivers() -> None:
    """A 640x480 float32 stream has a ring of one slot, handed out as the window's frames (a
    zeroed one takes its place): the frames equal the whole-recording ones, and writing to a
    received window changes nothing that follows."""
    rng = np.random.default_rng(3)
    n = 200_000
    events = make_events(
        np.sort(rng.integers(0, 100_000, n)), rng.integers(0, 640, n), rng.integers(0, 480, n),
        rng.integers(0, 2, n),
    )  # fmt: skip
    spec = WindowSpec(window_us=10_000)
    builder = FrameBuilder(spec, (640, 480))
    assert builder._hands_out_slot
    received = []
    for chunk in np.array_split(events, 7):
        for window in builder.push(chunk):
            received.append(window.frames.copy())
            window.frames[:] = -1  # the receiver's to scribble on
    received += [w.frames for w in builder.finish()]
    assert np.stack(received).tobytes() == frames_for_recording(events, (640, 480), spec).tobytes()


def test_a_window_opened_by_cropped_events_alone_still_needs_a_frame() -> None:
    """Found by the property test: the last event (t[-1]) sizes the output, but an earlier one
    opened a later window, whose events all fell outside the ROI. That window is still emitted
    (empty), so the direct path must decline (the engine grows its output)."""
    events = make_events([1_000_000, 1_000_001, 1_000_000], [0, 0, 0], [0, 0, 0], [0, 0, 0])
    spec = WindowSpec(window_us=1, dtype="uint8", polarities=1, max_gap_us=2000, roi=(1, 1, 4, 3))
    for end in ("emit", "drop"):
        expected = engine_recording(events, spec, end)
        assert_same_recording(bin_recording(events, (W, H), spec, end=end, threads=1), expected)
