"""The one event model of spikecut.

Events are a numpy structured array of `EVENT_DTYPE`: field names match tonic (`t, x, y, p`) so our
arrays go straight into tonic transforms. `t` is int64 microseconds, `x`/`y` are pixel columns/rows
(origin top-left), `p` is polarity 0 (OFF) or 1 (ON). Every reader, source, kernel and writer
speaks this dtype; nothing else defines an event layout.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from spikecut.errors import EventDataError

if TYPE_CHECKING:
    import torch

EVENT_DTYPE = np.dtype([("t", "<i8"), ("x", "<u2"), ("y", "<u2"), ("p", "u1")])

#: The layout the `aedat` package returns for AEDAT4 event packets (`on` instead of `p`).
AEDAT_DTYPE = np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("on", "u1")])

TIME_ORIGINS = ("sensor", "unix", "recording")


@dataclass(frozen=True)
class StreamInfo:
    """What a consumer must know about a stream besides its events.

    `time_origin` says what `t == 0` means: "sensor" (the device clock's arbitrary zero),
    "unix" (1970-01-01 UTC, as AEDAT4 files store it) or "recording" (start of the recording).
    """

    width: int
    height: int
    source: str
    time_origin: str = "sensor"
    format: str | None = None

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or not 0 < value <= 65535:
                raise EventDataError(
                    f"StreamInfo.{name} must be an integer in 1..65535, got {value!r}"
                )
        if self.time_origin not in TIME_ORIGINS:
            raise EventDataError(
                f"StreamInfo.time_origin must be one of {TIME_ORIGINS}, got {self.time_origin!r}"
            )

    @property
    def sensor_size(self) -> tuple[int, int, int]:
        """tonic's `sensor_size` convention: (width, height, polarities)."""
        return (int(self.width), int(self.height), 2)

    def with_(self, **changes: Any) -> StreamInfo:
        return replace(self, **changes)


def empty_events(n: int = 0) -> np.ndarray:
    return np.zeros(n, dtype=EVENT_DTYPE)


def make_events(t: Any, x: Any, y: Any, p: Any) -> np.ndarray:
    """Pack four equal-length columns into an event array, refusing values the dtype cannot hold."""
    columns = {name: np.asarray(col) for name, col in zip("txyp", (t, x, y, p), strict=True)}
    lengths = {name: col.shape for name, col in columns.items()}
    if len(set(lengths.values())) != 1 or columns["t"].ndim != 1:
        raise EventDataError(f"event columns must be 1-D and of equal length, got shapes {lengths}")
    events = np.empty(columns["t"].shape[0], dtype=EVENT_DTYPE)
    for name, col in columns.items():
        target = EVENT_DTYPE[name]
        if col.size and (name == "p" or not np.can_cast(col.dtype, target, "safe")):
            info = np.iinfo(target)
            low, high = (0, 1) if name == "p" else (info.min, info.max)
            if col.min() < low or col.max() > high:  # two quick passes; the index on failure
                i = int(np.flatnonzero((col < low) | (col > high))[0])
                raise EventDataError(
                    f"field {name!r} at event index {i} is {col[i].item()!r}, outside {low}..{high}"
                )
        events[name] = col
    return events


def as_events(array: np.ndarray) -> np.ndarray:
    """Accept any structured array with fields t, x, y and p (or `on`), return `EVENT_DTYPE`."""
    if array.dtype == EVENT_DTYPE:
        return array
    names = array.dtype.names or ()
    polarity = "p" if "p" in names else "on" if "on" in names else None
    missing = [n for n in ("t", "x", "y") if n not in names]
    if missing or polarity is None:
        raise EventDataError(
            f"structured array needs fields t, x, y and p (or on); it has {names or 'no fields'}"
        )
    return make_events(array["t"], array["x"], array["y"], array[polarity].astype(np.int64))


def out_of_bounds(events: np.ndarray, width: int, height: int) -> np.ndarray:
    """Boolean mask of events whose coordinates fall outside a width x height sensor."""
    return (events["x"] >= width) | (events["y"] >= height)


def check_events(
    events: np.ndarray,
    width: int,
    height: int,
    *,
    source: str = "events",
    t_prev: int | None = None,
) -> None:
    """Raise `EventDataError` naming the first event outside the sensor or going back in time.

    `t_prev` is the last timestamp of the previous chunk, so checks hold across chunk boundaries.
    """
    if events.dtype != EVENT_DTYPE:
        raise EventDataError(f"{source}: dtype {events.dtype} is not spikecut's EVENT_DTYPE")
    bad = np.flatnonzero(out_of_bounds(events, width, height))
    if bad.size:
        i = int(bad[0])
        raise EventDataError(
            f"{source}: event index {i} at (x={events['x'][i]}, y={events['y'][i]}) is outside "
            f"the {width}x{height} sensor ({bad.size} such events)"
        )
    bad = np.flatnonzero(events["p"] > 1)
    if bad.size:
        i = int(bad[0])
        raise EventDataError(f"{source}: event index {i} has polarity {events['p'][i]}, not 0/1")
    t = events["t"]
    if t.size:
        if t_prev is not None and t[0] < t_prev:
            raise EventDataError(
                f"{source}: event index 0 has t={t[0]} us, before the previous chunk's last "
                f"t={t_prev} us"
            )
        back = np.flatnonzero(np.diff(t) < 0)
        if back.size:
            i = int(back[0]) + 1
            raise EventDataError(
                f"{source}: timestamps go backwards at event index {i} ({t[i - 1]} us -> {t[i]} us)"
            )


# --- conversions to the layouts of the libraries users already have --------------------------


def to_aedat(events: np.ndarray) -> np.ndarray:
    """Our events in the `aedat` package's packet layout (`on` for polarity, int16 coordinates)."""
    out = np.empty(events.shape[0], dtype=AEDAT_DTYPE)
    out["t"] = events["t"]
    out["x"] = events["x"]
    out["y"] = events["y"]
    out["on"] = events["p"]
    return out


def from_aedat(packet_events: np.ndarray) -> np.ndarray:
    """Events from an `aedat` packet (fields t, x, y, on)."""
    return as_events(packet_events)


def to_tonic(events: np.ndarray) -> np.ndarray:
    """tonic's own ordering (x, y, t, p) with the same field names; values are unchanged.

    tonic transforms index by field name, so plain `events` work too; this exists for code that
    compares dtypes or concatenates with arrays tonic made.
    """
    tonic_dtype = np.dtype([("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])
    out = np.empty(events.shape[0], dtype=tonic_dtype)
    for name in "xytp":
        out[name] = events[name]
    return out


def from_tonic(array: np.ndarray) -> np.ndarray:
    """Events from a tonic structured array (any field order, any integer widths)."""
    return as_events(array)


def to_torch(events: np.ndarray) -> torch.Tensor:
    """An int64 tensor of shape [N, 4] with columns t, x, y, p."""
    import torch

    columns = np.stack([events[name].astype(np.int64) for name in "txyp"], axis=1)
    return torch.from_numpy(columns.reshape(-1, 4))


def from_torch(tensor: torch.Tensor) -> np.ndarray:
    """Inverse of `to_torch`: an [N, 4] integer tensor with columns t, x, y, p."""
    if tensor.ndim != 2 or tensor.shape[1] != 4:
        raise EventDataError(
            f"expected a tensor of shape [N, 4] (t, x, y, p), got {tuple(tensor.shape)}"
        )
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex:
        raise EventDataError(f"event tensor must hold integers, got {tensor.dtype}")
    columns = tensor.detach().cpu().numpy()
    return make_events(*columns.T)
