"""The fast paths of the binning kernel against the general ones.

`bin_recording` defers saturation to the moment a window is taken (no saturation
test in the hot loop) and moves completed windows into its output in one compiled call; the
streaming `FrameBuilder` saturates at every increment, and inside a window it skips the test only
while no count can reach the cap. Whatever the stream (garbage, late events, time jumps, overlap,
clipping on every pixel), both must give the same frames, the same window metadata and the same
cumulative counters.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spikecut.pipeline.binning as binning
from spikecut.pipeline.binning import S_ORIGIN, FrameBuilder, WindowSpec, bin_recording
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
    # Big frames get a ring of just the open windows plus one (to stay in cache): the kernel
    # then returns at nearly every window. Same windows, in chunks or not, as with a roomy ring.
    events = data.draw(streams(jumps=spec.max_gap_us is not None or spec.kind == "count"))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=6)))
    roomy, roomy_totals, _ = streamed(events, spec, end)
    roomy_rec = bin_recording(events, (W, H), spec, end=end)
    roomy_ring, slack = FrameBuilder(spec, (W, H))._ring, binning._RING_SLACK_BYTES
    binning._RING_SLACK_BYTES = 1
    try:
        builder = FrameBuilder(spec, (W, H))
        assert builder._ring == roomy_ring - 15  # slack 16 down to 1
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
