"""Our frames and filters against tonic's on the real recordings, wherever the semantics overlap.

Every place where we deliberately differ (docs/binning.md) is pinned down here too: tonic drops the
last events of `n_time_bins` and of a window ending exactly on the last event; we don't.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spikecut.pipeline.binning import WindowSpec, bin_recording, frames_for_recording
from spikecut.pipeline.filters import EventFilter, hot_pixels_by_rate
from tests._real_events import RECORDINGS, load

tonic_transforms = pytest.importorskip("tonic.transforms")
tonic_functional = pytest.importorskip("tonic.functional")

# Long enough for several windows in every recording, short enough to keep tonic quick.
WINDOW_US = {
    "aedat4/davis346_aestream_example.aedat4": 10_000,
    "aedat4/dvxplorer_tonic_sample.aedat4": 50_000,
    "prophesee_raw/evt2_gen3_sparklers.raw": 10_000,
    "prophesee_dat/ncars_obj_004397_td.dat": 10_000,
    "atis_bin/nmnist_tonic_sample.bin": 30_000,
}


@pytest.fixture(scope="module", params=sorted(RECORDINGS))
def recording(request: pytest.FixtureRequest, real_data: Path):
    events, info = load(real_data / request.param)
    return request.param, events, info


def tonic_frames(events: np.ndarray, size: tuple[int, int], **kwargs) -> np.ndarray:
    to_frame = tonic_transforms.ToFrame(sensor_size=(size[0], size[1], 2), **kwargs)
    return to_frame(events.copy())


def test_time_windows_equal_tonic(recording) -> None:
    name, events, info = recording
    window = WINDOW_US[name]
    ours = frames_for_recording(
        events, info, WindowSpec(window_us=window, dtype="int32"), end="drop"
    )
    theirs = tonic_frames(events, (info.width, info.height), time_window=window)
    assert ours.shape == theirs.shape and ours.shape[0] >= 3
    np.testing.assert_array_equal(ours, theirs)


def test_trailing_window_keeps_the_events_tonic_drops(recording) -> None:
    name, events, info = recording
    window = WINDOW_US[name]
    ours = frames_for_recording(events, info, WindowSpec(window_us=window, dtype="int32"))
    theirs = tonic_frames(
        events, (info.width, info.height), time_window=window, include_incomplete=True
    )
    np.testing.assert_array_equal(ours[: len(theirs)], theirs)
    assert ours.sum() == len(events)
    # tonic's include_incomplete stops one window short when the recording ends on a boundary.
    ends_on_boundary = (int(events["t"][-1]) - int(events["t"][0])) % window == 0
    assert len(ours) == len(theirs) + ends_on_boundary


@pytest.mark.parametrize("overlap_fraction", [0.5, 0.75])
def test_overlapping_windows_equal_tonic(recording, overlap_fraction: float) -> None:
    name, events, info = recording
    window = WINDOW_US[name]
    stride = int(window * (1 - overlap_fraction))
    spec = WindowSpec(window_us=window, stride_us=stride, dtype="int32")
    ours = frames_for_recording(events, info, spec, end="drop")
    theirs = tonic_frames(
        events, (info.width, info.height), time_window=window, overlap=window - stride
    )
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("stride_fraction", [None, 0.7])
def test_event_count_windows_equal_tonic(recording, stride_fraction: float | None) -> None:
    _, events, info = recording
    count = len(events) // 12
    stride = None if stride_fraction is None else int(count * stride_fraction)
    spec = WindowSpec(event_count=count, stride_events=stride, dtype="int32")
    ours = frames_for_recording(events, info, spec, end="drop")
    theirs = tonic_frames(
        events, (info.width, info.height), event_count=count, overlap=count - (stride or count)
    )
    np.testing.assert_array_equal(ours, theirs)


def test_n_bins_equals_tonic_on_tonics_span_and_keeps_the_tail(recording) -> None:
    _, events, info = recording
    n = 7
    theirs = tonic_frames(events, (info.width, info.height), n_time_bins=n)
    duration = int(events["t"][-1]) - int(events["t"][0])
    # tonic's bins are (duration // n) wide and start at the first event: the same bins as ours
    # over a span of n * (duration // n), which leaves out the same tail events.
    span = n * (duration // n)
    ours = bin_recording(events, info, WindowSpec(n_bins=n, span_us=span, dtype="int32"))
    np.testing.assert_array_equal(ours.frames, theirs)
    assert ours.beyond_span == len(events) - theirs.sum() > 0
    # Over the recording's own span nothing is lost.
    whole = frames_for_recording(events, info, WindowSpec(n_bins=n, dtype="int32"))
    assert whole.shape == theirs.shape and whole.sum() == len(events)


@pytest.mark.parametrize("factor", [2, 4])
def test_downsample_equals_tonic_downsample_then_to_frame(recording, factor: int) -> None:
    name, events, info = recording
    window = WINDOW_US[name]
    small = (-(-info.width // factor), -(-info.height // factor))
    downsampled = tonic_transforms.Downsample(spatial_factor=1 / factor)(events)
    theirs = tonic_frames(downsampled, small, time_window=window)
    spec = WindowSpec(window_us=window, downsample=factor, dtype="int32")
    ours = frames_for_recording(events, info, spec, end="drop")
    assert ours.shape[2:] == (small[1], small[0])
    np.testing.assert_array_equal(ours, theirs)


def test_single_polarity_equals_tonic_with_one_channel(recording) -> None:
    name, events, info = recording
    window = WINDOW_US[name]
    merged = events.copy()
    merged["p"] = 0  # tonic refuses two polarities on a one-channel sensor; we merge them
    theirs = tonic_transforms.ToFrame(sensor_size=(info.width, info.height, 1), time_window=window)(
        merged
    )
    spec = WindowSpec(window_us=window, polarities=1, dtype="int32")
    np.testing.assert_array_equal(frames_for_recording(events, info, spec, end="drop"), theirs)


def _first(events: np.ndarray, n: int = 60_000) -> np.ndarray:
    """tonic's filters are per-event Python loops: keep them to a slice of the big recordings."""
    return events[:n]


@pytest.mark.parametrize("filter_us", [1_000, 10_000])
def test_denoise_equals_tonic(recording, filter_us: int) -> None:
    _, events, info = recording
    events = _first(events)
    # tonic starts from "every pixel fired at t=0": shift time so that cannot matter.
    shifted = events.copy()
    shifted["t"] += filter_us
    theirs = tonic_transforms.Denoise(filter_time=filter_us)(shifted)
    ours = EventFilter(info, filter_us=filter_us)(events)
    assert 0 < len(ours) < len(events)
    np.testing.assert_array_equal(ours["t"] + filter_us, theirs["t"])
    for field in "xyp":
        np.testing.assert_array_equal(ours[field], theirs[field])


def test_denoise_inside_binning_equals_tonic_denoise_then_to_frame(recording) -> None:
    name, events, info = recording
    events = _first(events)
    filter_us = 5_000
    window = min(WINDOW_US[name], (int(events["t"][-1]) - int(events["t"][0])) // 4)
    shifted = events.copy()
    shifted["t"] += filter_us
    denoised = tonic_transforms.Denoise(filter_time=filter_us)(shifted)
    # Our windows start at the first event and run to the last one whether or not the filter
    # kept them; give tonic the same time base.
    theirs = tonic_frames(
        denoised,
        (info.width, info.height),
        time_window=window,
        start_time=int(shifted["t"][0]),
        end_time=int(shifted["t"][-1]),
    )
    spec = WindowSpec(window_us=window, filter_us=filter_us, dtype="int32")
    np.testing.assert_array_equal(frames_for_recording(events, info, spec, end="drop"), theirs)


def test_refractory_equals_tonic(recording) -> None:
    _, events, info = recording
    events = _first(events)
    refractory_us = 2_000
    shifted = events.copy()
    shifted["t"] += refractory_us + 1  # tonic drops an event at exactly t = 0
    theirs = tonic_transforms.RefractoryPeriod(delta=refractory_us)(shifted)
    ours = EventFilter(info, refractory_us=refractory_us)(events)
    assert 0 < len(ours) < len(events)
    np.testing.assert_array_equal(ours["t"] + refractory_us + 1, theirs["t"])
    np.testing.assert_array_equal(ours["x"], theirs["x"])


def test_hot_pixels_equal_tonic(recording) -> None:
    _, events, info = recording
    events = _first(events)
    duration_s = (int(events["t"][-1]) - int(events["t"][0])) * 1e-6
    # a rate that marks a handful of the busiest pixels
    counts = np.bincount(events["y"].astype(np.int64) * info.width + events["x"])
    rate = np.sort(counts)[-5] / duration_s
    ours = hot_pixels_by_rate(events, info.width, info.height, rate)
    theirs = tonic_functional.identify_hot_pixel(events, rate)
    assert sorted(ours) == sorted((int(x), int(y)) for x, y in theirs) and ours
    kept = EventFilter(info, hot_pixels=ours)(events)
    dropped = tonic_functional.drop_pixel_numpy(events, theirs)
    np.testing.assert_array_equal(kept, dropped)
