"""WindowSpec: validation with clear errors, and a lossless JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spikecut.errors import ConfigError
from spikecut.pipeline.binning import WindowSpec
from spikecut.sources.events import StreamInfo

ROUND_TRIP = [
    WindowSpec(window_us=10_000),
    WindowSpec(window_us=10_000, stride_us=2_500, polarities=1, clip=4, dtype="uint8"),
    WindowSpec(event_count=5_000, stride_events=1_000, downsample=2, roi=(10, 20, 100, 80)),
    WindowSpec(n_bins=16, span_us=1_300_000, filter_us=5_000, refractory_us=100),
    WindowSpec(n_bins=10, hot_pixels=((3, 4), (1, 2)), max_gap_us=None, dtype="float16"),
]


@pytest.mark.parametrize("spec", ROUND_TRIP)
def test_json_round_trip_is_exact(spec: WindowSpec) -> None:
    data = json.loads(json.dumps(spec.to_dict()))
    assert WindowSpec.from_dict(data) == spec
    assert hash(WindowSpec.from_dict(data)) == hash(spec)


def test_numpy_integers_become_plain_ints() -> None:
    spec = WindowSpec(window_us=np.int64(10_000), clip=np.uint8(3), roi=np.array([0, 0, 4, 4]))
    assert json.loads(json.dumps(spec.to_dict()))["window_us"] == 10_000
    assert type(spec.clip) is int and spec.roi == (0, 0, 4, 4)


def test_hot_pixels_are_normalised() -> None:
    spec = WindowSpec(window_us=1, hot_pixels=[[5, 1], (2, 2), (5, 1)])
    assert spec.hot_pixels == ((2, 2), (5, 1))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "exactly one of"),
        ({"window_us": 10, "n_bins": 3}, "exactly one of"),
        ({"window_us": 0}, "window_us"),
        ({"window_us": 2**41}, "window_us"),
        ({"window_us": 1.5}, "window_us"),
        ({"window_us": True}, "window_us"),
        ({"window_us": 10, "stride_us": 20}, "stride_us"),
        ({"event_count": 10, "stride_us": 5}, "stride_us only"),
        ({"event_count": 10, "stride_events": 11}, "stride_events"),
        ({"window_us": 10, "stride_events": 1}, "stride_events only"),
        ({"n_bins": 0}, "n_bins"),
        ({"window_us": 10, "span_us": 100}, "span_us only"),
        ({"window_us": 10, "polarities": 3}, "polarities"),
        ({"window_us": 10, "clip": 0}, "clip"),
        ({"window_us": 10, "dtype": "bfloat16"}, "dtype"),
        ({"window_us": 10, "downsample": 0}, "downsample"),
        ({"window_us": 10, "roi": (0, 0, 5)}, "roi"),
        ({"window_us": 10, "roi": (0, 0, 0, 5)}, "roi.width"),
        ({"window_us": 10, "filter_us": 0}, "filter_us"),
        ({"window_us": 10, "hot_pixels": ("ab",)}, "hot_pixels"),
        ({"window_us": 10, "hot_pixels": ((-1, 0),)}, "hot_pixels.x"),
        ({"window_us": 10, "max_gap_us": 0}, "max_gap_us"),
    ],
)
def test_bad_options_raise_config_errors_naming_them(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        WindowSpec(**options)


def test_from_dict_rejects_unknown_keys_and_non_dicts() -> None:
    with pytest.raises(ConfigError, match="window_ms"):
        WindowSpec.from_dict({"window_ms": 10})
    with pytest.raises(ConfigError, match="dict"):
        WindowSpec.from_dict([("window_us", 10)])


def test_frame_shape_accounts_for_roi_downsample_and_polarities() -> None:
    info = StreamInfo(width=346, height=260, source="test")
    assert WindowSpec(window_us=1).frame_shape(info) == (2, 260, 346)
    assert WindowSpec(window_us=1, downsample=4).frame_shape(info) == (2, 65, 87)
    spec = WindowSpec(window_us=1, roi=(10, 10, 128, 128), downsample=3, polarities=1)
    assert spec.frame_shape(info) == (1, 43, 43)
    with pytest.raises(ConfigError, match="does not fit"):
        WindowSpec(window_us=1, roi=(300, 0, 128, 128)).frame_shape(info)


def test_kind_and_streamability() -> None:
    assert WindowSpec(window_us=5).kind == "time"
    assert WindowSpec(event_count=5).kind == "count"
    assert WindowSpec(n_bins=5).kind == "bins"
    assert not WindowSpec(n_bins=5).streamable
    assert WindowSpec(n_bins=5, span_us=1_000).streamable
