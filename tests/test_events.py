import numpy as np
import pytest
import torch

from spikecut.errors import EventDataError
from spikecut.sources.events import (
    EVENT_DTYPE,
    StreamInfo,
    as_events,
    check_events,
    from_aedat,
    from_tonic,
    from_torch,
    make_events,
    to_aedat,
    to_tonic,
    to_torch,
)


def sample_events() -> np.ndarray:
    return make_events([1, 5, 5, 90], [0, 3, 127, 64], [0, 2, 127, 1], [1, 0, 1, 0])


def test_dtype_is_tonic_compatible():
    assert EVENT_DTYPE.names == ("t", "x", "y", "p")
    assert EVENT_DTYPE["t"] == np.int64
    assert EVENT_DTYPE["x"] == np.uint16 and EVENT_DTYPE["y"] == np.uint16


def test_make_events_rejects_values_the_dtype_cannot_hold():
    with pytest.raises(EventDataError, match="'x' at event index 1"):
        make_events([0, 1], [0, -1], [0, 0], [0, 1])
    with pytest.raises(EventDataError, match="'p' at event index 0 is 2"):
        make_events([0], [0], [0], [2])
    with pytest.raises(EventDataError, match="equal length"):
        make_events([0, 1], [0], [0], [0])


@pytest.mark.parametrize(
    ("to", "back"), [(to_aedat, from_aedat), (to_tonic, from_tonic), (to_torch, from_torch)]
)
def test_round_trips_through_library_layouts(to, back):
    events = sample_events()
    np.testing.assert_array_equal(back(to(events)), events)


def test_aedat_layout_uses_on_field():
    assert to_aedat(sample_events())["on"].tolist() == [1, 0, 1, 0]


def test_tonic_transform_accepts_our_events():
    tonic = pytest.importorskip("tonic")
    events = sample_events()
    halved = tonic.transforms.Downsample(spatial_factor=0.5)(events)
    np.testing.assert_array_equal(halved["x"], events["x"] // 2)
    np.testing.assert_array_equal(halved["t"], events["t"])


def test_torch_tensor_columns():
    tensor = to_torch(sample_events())
    assert tensor.dtype == torch.int64 and tuple(tensor.shape) == (4, 4)
    with pytest.raises(EventDataError, match="integers"):
        from_torch(tensor.float())


def test_as_events_names_missing_fields():
    with pytest.raises(EventDataError, match="needs fields t, x, y and p"):
        as_events(np.zeros(3, dtype=[("t", "i8"), ("x", "i2")]))


def test_check_events_names_the_offending_event():
    events = sample_events()
    check_events(events, 128, 128)
    message = r"event index 2 at \(x=127, y=127\).*outside the 100x128"
    with pytest.raises(EventDataError, match=message):
        check_events(events, 100, 128, source="cam0")
    backwards = events.copy()
    backwards["t"][3] = 0
    with pytest.raises(EventDataError, match="backwards at event index 3"):
        check_events(backwards, 128, 128)
    with pytest.raises(EventDataError, match="before the previous chunk"):
        check_events(events, 128, 128, t_prev=2)


def test_stream_info_validates_sizes():
    info = StreamInfo(width=34, height=34, source="x.bin")
    assert info.sensor_size == (34, 34, 2)
    with pytest.raises(EventDataError, match="width"):
        StreamInfo(width=0, height=34, source="x")
    with pytest.raises(EventDataError, match="time_origin"):
        StreamInfo(width=1, height=1, source="x", time_origin="gps")
