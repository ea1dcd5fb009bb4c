"""Property: splitting a stream into chunks anywhere never changes a single frame or counter."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikecut.pipeline.binning import FrameBuilder, WindowSpec
from spikecut.sources.events import make_events

W, H = 6, 5
#: No crop, or one that leaves out most of the stream (18 of the 30 pixels, and the garbage).
ROIS = st.sampled_from([None, (1, 1, 4, 3)])


@st.composite
def streams(draw: st.DrawFn, jumps: bool) -> np.ndarray:
    """Mostly ordered events with jitter, bursts, garbage coordinates and (when `jumps`) time
    jumps beyond max_gap_us in both directions."""
    n = draw(st.integers(0, 300))
    step = st.one_of(st.integers(0, 40), st.integers(-60, 0))  # in order, out of order / late
    if jumps:
        step = st.one_of(step, st.sampled_from([5_000, -5_000, 10**7]))
    steps = draw(st.lists(step, min_size=n, max_size=n))
    t = 10**6 + np.cumsum(np.asarray(steps, dtype=np.int64))
    xs = draw(st.lists(st.integers(0, W), min_size=n, max_size=n))
    ys = draw(st.lists(st.integers(0, H), min_size=n, max_size=n))
    ps = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    events = make_events(t, xs, ys, ps)
    if n and draw(st.booleans()):
        events["p"][draw(st.integers(0, n - 1))] = 2
    return events


specs = st.one_of(
    st.builds(
        WindowSpec,
        window_us=st.integers(1, 300),
        stride_us=st.none(),
        max_gap_us=st.sampled_from([None, 2_000]),
        filter_us=st.sampled_from([None, 50]),
        refractory_us=st.sampled_from([None, 0, 20]),
        downsample=st.integers(1, 3),
        polarities=st.sampled_from([1, 2]),
        dtype=st.sampled_from(["int32", "uint8"]),
        clip=st.sampled_from([None, 2]),
        roi=ROIS,
    ),
    st.integers(1, 300).flatmap(
        lambda w: st.builds(
            WindowSpec,
            window_us=st.just(w),
            stride_us=st.integers(1, w),
            max_gap_us=st.sampled_from([None, 2_000]),
            roi=ROIS,
            hot_pixels=st.sampled_from([(), ((2, 2),)]),
        )
    ),
    st.integers(1, 30).flatmap(
        lambda c: st.builds(
            WindowSpec,
            event_count=st.just(c),
            stride_events=st.one_of(st.none(), st.integers(1, c)),
            filter_us=st.sampled_from([None, 60]),
            roi=ROIS,
        )
    ),
    st.builds(
        WindowSpec,
        n_bins=st.integers(1, 7),
        span_us=st.integers(1, 500),
        max_gap_us=st.sampled_from([None, 2_000]),
        refractory_us=st.sampled_from([None, 15]),
        roi=ROIS,
    ),
)


def run(spec: WindowSpec, chunks: list[np.ndarray], end: str) -> tuple[list, object]:
    builder = FrameBuilder(spec, (W, H))
    windows = []
    for chunk in chunks:
        windows += builder.push(chunk)
    windows += builder.finish(end)
    return [
        (w.index, w.t_start_us, w.t_end_us, w.n_events, w.partial, w.frames.tobytes())
        for w in windows
    ], builder.totals


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    spec=specs,
    cuts=st.lists(st.integers(0, 300), max_size=12),
    end=st.sampled_from(["emit", "drop"]),
)
def test_chunking_never_changes_the_output(
    data: st.DataObject, spec: WindowSpec, cuts: list[int], end: str
) -> None:
    # Without max_gap_us a jump legitimately produces one empty window per window_us in between.
    events = data.draw(streams(jumps=spec.max_gap_us is not None or spec.kind == "count"))
    whole, whole_totals = run(spec, [events], end)
    pieces = np.split(events, sorted(c for c in cuts if c <= len(events)))
    chunked, chunked_totals = run(spec, pieces, end)
    assert chunked == whole
    assert chunked_totals == whole_totals
    one_by_one, _ = run(spec, [events[i : i + 1] for i in range(len(events))], end)
    assert one_by_one == whole


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), spec=specs, taken=st.integers(0, 3))
def test_reset_makes_a_used_builder_as_good_as_new(
    data: st.DataObject, spec: WindowSpec, taken: int
) -> None:
    # A stream abandoned anywhere (windows completed but not taken, one taken but its slot not
    # yet cleared, filter memories warm), then reset: the next stream sees a new builder.
    jumps = spec.max_gap_us is not None or spec.kind == "count"
    used = FrameBuilder(spec, (W, H))
    abandoned = used.push_iter(data.draw(streams(jumps=jumps)))
    for _ in zip(range(taken), abandoned, strict=False):
        pass
    used.reset()
    events = data.draw(streams(jumps=jumps))
    got = used.push(events) + used.finish()
    new = FrameBuilder(spec, (W, H))
    expected = new.push(events) + new.finish()
    assert [(w.index, w.t_start_us, w.n_events, w.drops, w.frames.tobytes()) for w in got] == [
        (w.index, w.t_start_us, w.n_events, w.drops, w.frames.tobytes()) for w in expected
    ]
